"""Algorithms by the ``algo`` name used in config.yaml. Imported lazily (torch-heavy modules)."""
from __future__ import annotations

import importlib

from metarl.methods.base import EVAL_COLUMNS, FINAL_STAGE, Method

_ALGORITHMS = {
    "vate": ("metarl.methods.vate", "VATE"),
    "pearl": ("metarl.methods.pearl", "PEARL"),
    "tesp": ("metarl.methods.tesp", "TESP"),
    "random": ("metarl.methods.random_policy", "RandomPolicy"),
}
ALGORITHM_NAMES = tuple(_ALGORITHMS)


def get_algorithm(name: str) -> type[Method]:
    if name not in _ALGORITHMS:
        raise KeyError(f"unknown algorithm {name!r}; known algorithms: {', '.join(ALGORITHM_NAMES)}")
    module, cls = _ALGORITHMS[name]
    return getattr(importlib.import_module(module), cls)


__all__ = ["ALGORITHM_NAMES", "EVAL_COLUMNS", "FINAL_STAGE", "Method", "get_algorithm"]
