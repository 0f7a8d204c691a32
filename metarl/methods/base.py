"""The interface every meta-RL method implements, so one training/evaluation driver
(metarl.training, metarl.evaluation) runs any method on any task family.

A method owns its networks, optimisers, buffers and batched environments. The driver calls
``train_iteration()`` repeatedly, ``evaluate()`` every few iterations and at the end, and
``state_dict()``/``load_state_dict()`` to checkpoint and resume. Randomness must come from
torch's global generator (seeded by the driver, saved and restored with checkpoints) or from
generators the method stores in its own ``state_dict`` — otherwise resume != uninterrupted.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # annotations only: analysis commands import FINAL_STAGE without paying for torch
    import pandas as pd
    import torch

    from metarl.envs.base import Task, TaskFamily

#: the evaluation stage used for learning curves and tables (the headline number); methods
#: report finer stages too (episode 1/2/3, adaptation trajectory k, fast update k).
FINAL_STAGE = "final"
EVAL_COLUMNS = ["task", "stage", "return"]


class Method(ABC):
    """One meta-RL algorithm bound to one task family.

    Subclasses define ``Hyperparams`` (a dataclass whose fields are exactly the keys allowed
    under ``hparams`` in config.yaml) and set ``self.model``: the ``nn.Module`` holding every
    network needed to act and adapt, which is what evaluation loads.
    """

    Hyperparams: ClassVar[type]
    model: torch.nn.Module

    def __init__(self, family: TaskFamily, tasks: dict[str, list[Task]], hparams: Any,
                 train_split: str, device: torch.device):
        self.family = family
        self.tasks = tasks
        self.hp = hparams
        self.train_split = train_split
        self.device = device
        #: environment steps (frames) consumed by meta-training so far
        self.env_steps = 0
        #: fraction of meta-training done before the current iteration (set by the training
        #: driver), for schedules such as learning-rate annealing
        self.progress = 0.0
        #: whether hot paths run through torch.compile (config.yaml's ``compile``, see use_compile)
        self.compiled = False

    def use_compile(self, mode: str) -> None:
        """Apply config.yaml's ``compile: auto | on | off`` (metarl.compiling). Methods with
        compiled hot paths override this to swap them in; the others stay eager."""
        from metarl import compiling

        self.compiled = compiling.resolve(mode, self.device)

    @classmethod
    def make_hparams(cls, values: dict[str, Any]):
        """Build the Hyperparams dataclass, naming any key that is not a hyper-parameter."""
        allowed = {f.name for f in dataclasses.fields(cls.Hyperparams)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown hyper-parameter(s) {unknown}; "
                             f"allowed: {sorted(allowed)}")
        return cls.Hyperparams(**values)

    @abstractmethod
    def train_iteration(self) -> dict[str, float]:
        """One meta-training iteration; returns scalar metrics for the training log."""

    @abstractmethod
    def evaluate(self, tasks: list[Task]) -> pd.DataFrame:
        """Adapt to and evaluate on ``tasks``; returns rows with ``EVAL_COLUMNS``: one row per
        task and stage, including the ``FINAL_STAGE`` row per task."""

    def adaptation_returns(self, tasks: list[Task], episodes: int) -> torch.Tensor:
        """The common adaptation protocol (E5, metarl.protocol): on every task play ``episodes``
        consecutive episodes, adapting between them as the method adapts (PEARL: context
        trajectories, prior first; VATE/RL²: one meta-episode, hidden state carried across the
        episodes; TESP/MAML: one fast update after each episode). Returns ``(len(tasks),
        episodes)``: column k is the return of the episode played after the method has consumed k
        episodes of that task (k = 0: none). The return is the family's evaluation reward
        (``info["sparse_reward"]`` where the env reports one), summed over the episode; actions are
        chosen as in the method's own ``evaluate`` (greedy / deterministic / sampled)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement the common adaptation "
                                  "protocol (Method.adaptation_returns)")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training exactly (override to add buffers, optimisers)."""
        return {"model": self.model.state_dict(), "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.env_steps = state["env_steps"]
