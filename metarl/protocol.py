"""E5's common adaptation protocol: every method, on every test task, is scored by the return of
the episode it plays after consuming k = 0 … K episodes of that task (``Method.adaptation_returns``),
so curves and matrix cells of different methods count experience the same way.

Rows use the stages ``consumed_<k>`` and ``final`` (= ``consumed_<K>``, the matrix cell); a run
spec with ``protocol_episodes`` (K + 1, from ``experiments.<E>.protocol``) evaluates this way for
both its learning curve and its final evaluation.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from metarl.methods.base import FINAL_STAGE

if TYPE_CHECKING:
    from metarl.envs.base import Task
    from metarl.methods.base import Method


CONSUMED_PREFIX = "consumed_"


def consumed_stage(k: int) -> str:
    return f"{CONSUMED_PREFIX}{k}"


def protocol_rows(method: Method, tasks: list[Task], episodes: int) -> pd.DataFrame:
    """``EVAL_COLUMNS`` rows of the protocol: one per task and k, plus ``final`` (k = episodes - 1)."""
    if episodes < 1:
        raise ValueError(f"the adaptation protocol needs at least 1 episode per task, got {episodes}")
    returns = method.adaptation_returns(tasks, episodes)
    if tuple(returns.shape) != (len(tasks), episodes):
        raise ValueError(f"{type(method).__name__}.adaptation_returns gave shape {tuple(returns.shape)}, "
                         f"expected (tasks, episodes) = ({len(tasks)}, {episodes})")
    returns = returns.detach().double().cpu()
    if not returns.isfinite().all():
        raise ValueError(f"{type(method).__name__}.adaptation_returns gave non-finite returns")
    rows = [{"task": t, "stage": consumed_stage(k), "return": float(returns[t, k])}
            for t in range(len(tasks)) for k in range(episodes)]
    rows += [{"task": t, "stage": FINAL_STAGE, "return": float(returns[t, -1])} for t in range(len(tasks))]
    return pd.DataFrame(rows)
