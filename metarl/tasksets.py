"""Task-set files: every split's task parameters for one family, drawn from a seed.

Files are JSON so people can read them; training and evaluation read tasks only from here,
so every method sees exactly the same tasks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from metarl.envs import get_family
from metarl.envs.base import Task
from metarl.utils.io import save_json


def generate_taskset(family: str, seed: int) -> dict:
    splits = get_family(family).sample_splits(np.random.default_rng(seed))
    return {"family": family, "seed": seed, "splits": splits}


def write_taskset(family: str, seed: int, path) -> None:
    save_json(generate_taskset(family, seed), path)


def read_taskset(path) -> dict[str, list[Task]]:
    return json.loads(Path(path).read_text())["splits"]
