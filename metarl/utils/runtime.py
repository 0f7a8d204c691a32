"""Device choice, seeding, RNG-state capture (for bit-exact resume) and the process's heap."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:N`` force one. On CUDA it
    also asks for repeatable kernels (``deterministic_cuda``)."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available")
        deterministic_cuda()
    return device


def deterministic_cuda() -> None:
    """Same seed, same numbers on CUDA too: cuDNN's deterministic kernels (the GRUs), no autotuning,
    a fixed cuBLAS workspace (CUDA's own requirement for repeatable matrix products; it must be set
    before cuBLAS starts, hence here, before any work reaches the device) and PyTorch's
    deterministic implementations. ``warn_only``: an op with no deterministic CUDA kernel warns,
    naming itself, instead of stopping a run. Process-wide; the CPU path is left untouched."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20   # glibc's largest on 64-bit: blocks up to 32 MiB come from the heap
TRIM_THRESHOLD = 256 << 20  # free heap the process keeps for its next allocations


def keep_freed_memory() -> bool:
    """Let the process reuse the memory PyTorch frees instead of handing it back to the OS.

    By default glibc maps large blocks afresh from the OS and trims the heap's free top, so a
    training step whose activations are megabytes each (PEARL's encoder over a 16 x 1024 context:
    4 MiB a layer) page-faults and zeroes its memory anew every step: 585-6,330 minor faults and
    about a fifth of the step's CPU time (benchmarks/allocator.md), unless glibc's dynamic thresholds
    happen to have adapted, which depends on the heap's history. Process-wide, so the command line
    calls it once at start-up, not the library. Returns whether it took effect (glibc only)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):  # no C library to load by name (e.g. Windows)
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # these parameter numbers are glibc's
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every global generator's state as tensors and plain numbers, so a checkpoint holding it
    loads with ``torch.load(weights_only=True)``."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = {"python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                       "has_gauss": has_gauss, "cached_gaussian": cached_gaussian},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    python, numpy = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(python["words"].tolist()), python["gauss"]))
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block on freshly seeded random streams and restore the caller's afterwards, so that
    e.g. evaluating during training draws nothing from training's streams: how often a run
    evaluates then cannot change what it learns."""
    state = rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        set_rng_state(state)
