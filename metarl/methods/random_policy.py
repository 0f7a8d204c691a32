"""A uniformly random policy: the zero of E5's normalised score (metarl.analysis.matrix).

It learns nothing and consumes no meta-training steps; ``adaptation_returns`` plays the protocol's
episodes with actions drawn uniformly from the family's action space (each of the discrete
actions with equal probability), from torch's global generator so that runs repeat exactly.
"""
from __future__ import annotations

import dataclasses

import pandas as pd
import torch
from torch import nn

from metarl.envs.base import Task, TaskFamily
from metarl.methods.base import FINAL_STAGE, Method


@dataclasses.dataclass
class Hyperparams:
    """No hyper-parameters: a random policy has nothing to tune."""


class RandomPolicy(Method):
    Hyperparams = Hyperparams

    def __init__(self, family: TaskFamily, tasks: dict[str, list[Task]], hparams: Hyperparams,
                 train_split: str, device: torch.device):
        super().__init__(family, tasks, hparams, train_split, device)
        self.model = nn.Module()  # nothing to save but the spec
        if not family.discrete:
            self.low, self.high = family.action_bounds(tasks[train_split][0], device)

    def train_iteration(self) -> dict[str, float]:
        return {}

    def _actions(self, n: int) -> torch.Tensor:
        if self.family.discrete:
            return torch.randint(self.family.act_dim, (n,), device=self.device)
        return self.low + torch.rand(n, len(self.low), device=self.device) * (self.high - self.low)

    @torch.no_grad()
    def adaptation_returns(self, tasks: list[Task], episodes: int) -> torch.Tensor:
        env = self.family.make_batched(len(tasks), self.device)
        env.set_tasks(tasks)
        returns = torch.zeros(len(tasks), episodes, device=self.device)
        for k in range(episodes):
            env.reset()
            alive = torch.ones(len(tasks), dtype=torch.bool, device=self.device)
            for _ in range(env.horizon):
                _, reward, terminated, truncated, info = env.step(self._actions(len(tasks)))
                returns[:, k] += info.get("sparse_reward", reward) * alive
                alive &= ~(terminated | truncated)
        return returns.cpu()

    def evaluate(self, tasks: list[Task]) -> pd.DataFrame:
        """One random episode per task."""
        returns = self.adaptation_returns(tasks, 1)[:, 0].tolist()
        return pd.DataFrame([{"task": t, "stage": FINAL_STAGE, "return": r} for t, r in enumerate(returns)])
