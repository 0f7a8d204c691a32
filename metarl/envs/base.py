"""The two interfaces every task family implements.

A *task family* (e.g. HalfCheetah-Vel) is a distribution over tasks plus a way to build
environments for given tasks. A task is a plain JSON-serialisable dict of parameters
(``{"goal": [x, y]}``, ``{"velocity": 1.3}``...), so task-set files stay human-readable.

Environments come in two forms:
* a gymnasium env (registered as ``metarl/<Name>-v0``) for one task, settable through
  ``reset(options={"task": task})`` or ``set_task(task)`` and reported in ``info["task"]``;
* a :class:`BatchedEnv` stepping B environments (each with its own task) at once and
  returning torch tensors, which is what the algorithms use.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: analysis commands import this package without paying for torch
    import torch

Task = dict[str, Any]


class BatchedEnv(ABC):
    """B environments stepped together, each with its own task.

    Conventions shared by all families so rollouts can be fixed-length tensor loops:
    * ``reset(seed=None)`` resets every env to its start state and returns obs ``(B, obs_dim)``;
      ``seed`` fixes the initial-state noise (env i starts where the family's gymnasium env
      reset with ``seed + i`` starts); without it the noise comes from torch's global generator
      (seeded and checkpointed by the training driver), never from fresh entropy, so that runs
      repeat exactly;
    * ``step(actions)`` returns ``(obs, reward, terminated, truncated, info)`` as tensors of
      shape ``(B, obs_dim)``, ``(B,)``, ``(B,)`` bool, ``(B,)`` bool and a dict of ``(B, ...)``
      tensors; ``truncated`` becomes True at ``horizon`` steps;
    * an env that has terminated or truncated stays frozen until ``reset()``: further steps
      return its last observation, reward 0 and ``terminated``/``truncated`` unchanged.
    Actions are ``(B, act_dim)`` float tensors for continuous families and ``(B,)`` long
    tensors for discrete ones.
    """

    num_envs: int
    obs_dim: int
    act_dim: int  # number of discrete actions for discrete families
    discrete: bool
    horizon: int
    device: torch.device

    @abstractmethod
    def set_tasks(self, tasks: list[Task]) -> None: ...

    @abstractmethod
    def reset(self, seed: int | None = None) -> torch.Tensor: ...

    @abstractmethod
    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]: ...


class TaskFamily(ABC):
    """A distribution over tasks and factories for both environment forms."""

    name: str
    gym_id: str
    horizon: int
    obs_dim: int
    act_dim: int
    discrete: bool = False
    #: split name -> number of tasks, as in SPEC (e.g. {"train": 100, "test": 30})
    split_sizes: dict[str, int]

    @abstractmethod
    def sample_splits(self, rng: np.random.Generator) -> dict[str, list[Task]]:
        """Every split's tasks, drawn deterministically from ``rng``."""

    @abstractmethod
    def make_batched(self, num_envs: int, device: torch.device | str = "cpu") -> BatchedEnv: ...

    def action_bounds(self, task: Task, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Low and high of a continuous family's action box, as float32 tensors on ``device``."""
        import torch

        space = self.make_gym(task).action_space
        return (torch.as_tensor(space.low, dtype=torch.float32, device=device),
                torch.as_tensor(space.high, dtype=torch.float32, device=device))

    def make_gym(self, task: Task | None = None, **kwargs):
        import gymnasium as gym

        return gym.make(self.gym_id, task=task, **kwargs)
