"""Optional TensorBoard mirror of a training run's logs (``tensorboard --logdir results``).

The CSV files stay the source of truth; this only writes the same numbers as event files so
runs can be watched live. Without the ``tensorboard`` package training goes on unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

#: train_log.csv columns that are the x-axis or the run's identity, not scalars
_NOT_SCALARS = {"iteration", "env_steps"}


class TensorBoardLog:
    """Scalars keyed by environment steps: ``train/<metric>`` per iteration (the train_log.csv
    row) and ``eval_<split>/<stage>`` per learning-curve evaluation (the curve.csv rows)."""

    def __init__(self, writer):
        self.writer = writer

    @classmethod
    def open(cls, log_dir, resume_env_steps: int | None, log) -> TensorBoardLog | None:
        """A log in ``log_dir``, or None when ``log_dir`` is None or TensorBoard is missing.
        A fresh run (``resume_env_steps`` None) clears the events of any earlier run there; a
        resumed one hides the steps logged after its checkpoint (TensorBoard's purge_step), so
        no step appears twice."""
        if log_dir is None:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            log(f"TensorBoard logging off ({error}); train_log.csv and curve.csv are written as usual")
            return None
        if resume_env_steps is None:  # only event files: the directory may hold other things
            for stale in Path(log_dir).glob("events.out.tfevents.*"):
                stale.unlink()
        purge_step = None if resume_env_steps is None else resume_env_steps + 1
        return cls(SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=10))

    def train_row(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key not in _NOT_SCALARS:
                self.writer.add_scalar(f"train/{key}", value, row["env_steps"])

    def evaluation(self, rows: dict[str, list]) -> None:
        """One learning-curve evaluation, as ``curve_frames`` holds it (column -> values)."""
        for split, stage, value, steps in zip(rows["split"], rows["stage"], rows["return"], rows["env_steps"],
                                              strict=True):
            self.writer.add_scalar(f"eval_{split}/{stage}", value, steps)
        self.writer.flush()

    def flush(self) -> None:
        """Called before each checkpoint: every step up to it is on disk when a resumed run
        hides the later ones."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
