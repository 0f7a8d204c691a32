"""config.yaml's ``compile: auto | on | off`` switch: hot paths through ``torch.compile``.

* ``off``: eager PyTorch, exactly the uncompiled code.
* ``on``: inductor, with random ops falling back to eager's generator
  (``fallback_random``), so a compiled step draws the same numbers as an eager one and the same
  seed gives the same run. On CUDA the graphs are also captured (``mode="reduce-overhead"``).
* ``auto``: ``on`` only where it was measured to pay (``pays``): so far nowhere (benchmarks/compile.md).

Compiled code is cached on disk (inductor's FX-graph and AOT-autograd caches) in
``$TORCHINDUCTOR_CACHE_DIR``, by default ``~/.cache/metarl/inductor``: outside every declared
output, shared by all jobs of a DAG, so only the first job on a machine pays full compilation.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

MODES = ("auto", "on", "off")
CACHE_DIR = Path.home() / ".cache" / "metarl" / "inductor"


def pays(device: torch.device) -> bool:
    """Where ``auto`` compiles: nowhere yet. On CPU (torch 2.13, 1 thread, quick settings) PEARL's
    compiled step, and whole TESP and VATE jobs, measured slower than eager, and a cold cache
    costs up to minutes of compilation per job (benchmarks/compile.md). On one H200, PEARL's
    paper-size gradient step took 3.62 ms compiled against 17.70 ms eager (benchmarks/gpu.md), but
    a compiled training run on CUDA has not been run end to end nor checked for repeatability,
    and VATE and TESP compiled on CUDA are unmeasured: until they are, ``on`` is the user's choice."""
    return False


def resolve(mode: str, device: torch.device) -> bool:
    """Whether to compile under ``mode`` on ``device``."""
    if mode not in MODES:
        raise ValueError(f"compile: {mode!r} is not one of {list(MODES)}")
    return mode == "on" or (mode == "auto" and pays(device))


def compiled(fn, device: torch.device):
    """``fn`` through ``torch.compile`` with the persistent caches on."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(CACHE_DIR))
    import torch._inductor.config as inductor

    inductor.fx_graph_cache = True
    inductor.compile_threads = 1  # compile in the job's own process and thread (CPU time stays the job's)
    inductor.fallback_random = True  # same random numbers as eager (see module docstring)
    return torch.compile(fn, mode="reduce-overhead" if device.type == "cuda" else None)
