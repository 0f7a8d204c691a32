"""Task-set files: every split's task parameters for one family, drawn from a seed.

Files are JSON so people can read them; training and evaluation read tasks only from here,
so every method sees exactly the same tasks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from metarl.envs import get_family
from metarl.envs.base import Task
from metarl.utils.errors import TasksetError
from metarl.utils.io import save_json


def generate_taskset(family: str, seed: int) -> dict:
    splits = get_family(family).sample_splits(np.random.default_rng(seed))
    return {"family": family, "seed": seed, "splits": splits}


def write_taskset(family: str, seed: int, path) -> None:
    save_json(generate_taskset(family, seed), path)


def read_taskset(path, family: str | None = None) -> dict[str, list[Task]]:
    """Read and validate a task-set file: the family (``family`` if given) must be known, the
    splits exactly the family's, and every task must carry the family's parameters with the
    shapes the family draws them in, as finite numbers. Errors name the file and the field."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise TasksetError(f"{path}: cannot read task set: {error}") from None
    if not isinstance(content, dict) or not isinstance(content.get("splits"), dict):
        raise TasksetError(f"{path}: expected a JSON object with 'family' and 'splits'")
    name = content.get("family")
    if family is not None and name != family:
        raise TasksetError(f"{path}: 'family' is {name!r}, expected {family!r}")
    try:
        reference = get_family(name).sample_splits(np.random.default_rng(0))
    except KeyError as error:
        raise TasksetError(f"{path}: 'family': {error.args[0]}") from None
    splits = content["splits"]
    if sorted(splits) != sorted(reference):
        raise TasksetError(f"{path}: 'splits' are {sorted(splits)}, family {name!r} has {sorted(reference)}")
    for split, tasks in splits.items():
        if not isinstance(tasks, list) or not tasks:
            raise TasksetError(f"{path}: splits.{split}: expected a non-empty list of tasks")
        expected = reference[split][0]
        for index, task in enumerate(tasks):
            _check_task(task, expected, f"{path}: splits.{split}[{index}]")
    return splits


def _check_task(task, expected: Task, where: str) -> None:
    if not isinstance(task, dict) or sorted(task) != sorted(expected):
        keys = sorted(task) if isinstance(task, dict) else type(task).__name__
        raise TasksetError(f"{where}: task keys {keys}, expected {sorted(expected)}")
    for key, value in task.items():
        try:
            array = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise TasksetError(f"{where}.{key}: not numbers: {value!r}") from None
        if array.shape != np.shape(expected[key]):
            raise TasksetError(f"{where}.{key}: shape {array.shape}, expected {np.shape(expected[key])}")
        if not np.isfinite(array).all():
            raise TasksetError(f"{where}.{key}: not finite: {value!r}")
