"""Collect per-run CSVs into one experiment-level file, and summarise over seeds."""
from __future__ import annotations

import re

import pandas as pd

from metarl.methods import FINAL_STAGE

GROUP = ["family", "split", "method"]


def concat_csvs(paths) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


def stage_order(stages) -> list[str]:
    """Natural order (episode_2 before episode_10), the headline ``final`` stage last."""
    def key(stage: str):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", stage)]
    return sorted((s for s in set(stages) if s != FINAL_STAGE), key=key) + [FINAL_STAGE] * (FINAL_STAGE in set(stages))


def seed_means(evals: pd.DataFrame) -> pd.DataFrame:
    """Mean over tasks: one number per run (seed), split and stage."""
    return evals.groupby([*GROUP, "seed", "stage"], as_index=False).agg(
        env_steps=("env_steps", "first"), **{"return": ("return", "mean")})


def summarise(evals: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds of the per-seed task means."""
    per_seed = seed_means(evals)
    summary = per_seed.groupby([*GROUP, "stage"], as_index=False).agg(
        mean=("return", "mean"), std=("return", "std"), seeds=("seed", "nunique"), env_steps=("env_steps", "mean"))
    summary["std"] = summary["std"].fillna(0.0)
    return summary
