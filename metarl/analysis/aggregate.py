"""Collect per-run CSVs into one experiment-level file, and summarise over seeds."""
from __future__ import annotations

import pandas as pd

from metarl.methods import FINAL_STAGE

GROUP = ["family", "split", "method"]


def concat_csvs(paths) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


def stage_order(evals: pd.DataFrame) -> list[str]:
    """Stages in the order methods report them (chronological: warm-up, episode/trajectory/fast
    update 1, 2, ...), merged over methods that report different stages, ``final`` last."""
    order: list[str] = []
    for _, rows in evals.groupby("method", sort=False):
        sequence = list(dict.fromkeys(rows["stage"]))
        for i, stage in enumerate(sequence):
            if stage not in order:
                later = [order.index(s) for s in sequence[i + 1:] if s in order]
                order.insert(min(later, default=len(order)), stage)
    return [s for s in order if s != FINAL_STAGE] + [FINAL_STAGE] * (FINAL_STAGE in order)


def require_metric(frame: pd.DataFrame, metric: str) -> None:
    if metric not in frame:
        raise ValueError(f"metric column {metric!r} not in the data; columns: {list(frame.columns)}")


def seed_means(evals: pd.DataFrame, metric: str = "return") -> pd.DataFrame:
    """Mean over tasks of the ``metric`` column: one number per run (seed), split and stage."""
    require_metric(evals, metric)
    return evals.groupby([*GROUP, "seed", "stage"], as_index=False).agg(
        env_steps=("env_steps", "first"), **{metric: (metric, "mean")})


def summarise(evals: pd.DataFrame, metric: str = "return") -> pd.DataFrame:
    """Mean, standard deviation and count over seeds of the per-seed task means."""
    per_seed = seed_means(evals, metric)
    summary = per_seed.groupby([*GROUP, "stage"], as_index=False).agg(
        mean=(metric, "mean"), std=(metric, "std"), seeds=("seed", "nunique"), env_steps=("env_steps", "mean"))
    summary["std"] = summary["std"].fillna(0.0)
    return summary
