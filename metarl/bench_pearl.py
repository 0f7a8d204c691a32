"""PEARL throughput at the paper's hyper-parameters: gradient steps/s (meta-batch 16 x 256
transitions, 3x300 actor/critic, 3x200 encoder, latent 5) and env steps/s while collecting.

    python -m metarl.bench_pearl --device cpu --threads 1 --out benchmarks/pearl.md

Reports wall-clock rates and, on CPU, the process CPU time per step (robust to other jobs on a
shared machine) together with the load average, so numbers from busy machines can be judged.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from metarl.envs import get_family
from metarl.methods.pearl import PEARL
from metarl.utils.io import save_text
from metarl.utils.runtime import resolve_device


def _timed(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call of ``fn``."""
    fn()  # warm-up (allocator, lazy init)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def bench(family: str, device: torch.device, grad_steps: int, context_batch: int) -> list[tuple[str, str]]:
    fam = get_family(family)
    tasks = fam.sample_splits(np.random.default_rng(0))
    hp = PEARL.make_hparams({"context_batch": context_batch})
    method = PEARL(fam, tasks, hp, "train", device)
    n_train = len(tasks["train"])
    # fill every train task's buffer as the initial collection does, timing it (all tasks in one batch)
    all_tasks = torch.arange(n_train, device=device)
    wall, cpu = _timed(lambda: method.collect(all_tasks, hp.initial_steps // 10, posterior=False, context=True), 3, device)
    steps = n_train * (hp.initial_steps // 10)
    rows = [(f"collection, {n_train} tasks stepped together, z ~ prior", f"{steps / wall:,.0f} env steps/s (CPU time {cpu / steps * 1e6:.1f} us/step)")]
    sampled = all_tasks[:hp.tasks_per_iteration]
    wall, cpu = _timed(lambda: method.collect(sampled, hp.extra_rl_steps, posterior=True, context=False), 2, device)
    steps = hp.tasks_per_iteration * hp.extra_rl_steps
    rows.append((f"collection, {hp.tasks_per_iteration} tasks, z ~ posterior (per-iteration setting)",
                 f"{steps / wall:,.0f} env steps/s (CPU time {cpu / steps * 1e6:.1f} us/step)"))
    wall, cpu = _timed(method.update, grad_steps, device)
    what = (f"gradient step (meta-batch {hp.meta_batch} x {hp.rl_batch}, context {context_batch}, "
            f"{hp.layers}x{hp.hidden} nets)")
    rows.append((what, f"{1 / wall:,.2f} steps/s (CPU time {cpu * 1e3:.0f} ms/step)"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="point_robot")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grad-steps", type=int, default=10)
    parser.add_argument("--context-batch", type=int, default=256)
    parser.add_argument("--out", default=None, help="write a markdown table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    rows = bench(args.family, device, args.grad_steps, args.context_batch)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    header = (f"PEARL on {args.family}, {device} ({name}), torch {torch.__version__}, {args.threads} thread(s), "
              f"{os.cpu_count()} cores, load average {load}")
    lines = [header, "", "| what | rate |", "|---|---|"]
    lines += [f"| {what} | {rate} |" for what, rate in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        save_text(text, args.out)


if __name__ == "__main__":
    main()
