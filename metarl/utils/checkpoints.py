"""Checkpoint files that are safe to open and hard to lose.

* Loading uses ``torch.load(weights_only=True)``: a file may hold tensors and plain data (dicts,
  lists, numbers, strings) only, so a ``model.pt`` a colleague sent cannot run code on unpickling.
* ``torch.save`` writes a zip archive with a CRC-32 per record; every record is checked before
  loading, so a truncated or bit-flipped file is reported as corrupt instead of loading garbage.
* Writing is atomic and keeps the previous version as ``<name>.prev``: a crash at any moment
  leaves at least one complete checkpoint on disk.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from metarl.utils.errors import CheckpointError
from metarl.utils.io import atomic_path


def previous_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".prev")


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and tensors and tuples
    into lists: data that ``torch.load(weights_only=True)`` accepts."""
    import torch

    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_checkpoint(obj: Any, path, keep_previous: bool = True) -> None:
    """Write ``obj`` atomically; with ``keep_previous`` the file it replaces becomes ``<name>.prev``."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))


def load_checkpoint(path, map_location="cpu") -> Any:
    """Verify and load a file written by ``torch.save``; raise ``CheckpointError`` naming the
    file when it is corrupt, truncated or holds anything but tensors and plain data."""
    import torch

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad_record = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CheckpointError(f"{path}: not a readable torch.save archive (truncated or corrupt?): {error}") from None
    if bad_record is not None:
        raise CheckpointError(f"{path}: checksum mismatch in record {bad_record!r}: the file is corrupt")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).split("\n")
        detail = next((line.strip() for line in reason if "Unsupported" in line), reason[0])
        raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors and plain data, "
                              f"which could run arbitrary code ({detail})") from None
    except (RuntimeError, EOFError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: cannot be loaded (corrupt?): {error}") from None


def load_model_file(path, map_location="cpu") -> dict[str, Any]:
    """A trained ``model.pt`` (metarl.training): its run spec, weights and env steps."""
    saved = load_checkpoint(path, map_location)
    missing = [key for key in ("spec", "model", "env_steps") if not isinstance(saved, dict) or key not in saved]
    if missing:
        raise CheckpointError(f"{path}: not a metarl model file: missing {missing}")
    return saved
