"""PEARL throughput with config.yaml's hyper-parameters at a scale: the gradient step (one
meta-batch through SAC + encoder, forward, backward and Adam) and env steps per second while
collecting, per thread count and device.

    metarl bench pearl --scale quick paper --threads 1 2 --out benchmarks/pearl_bench.md

The gradient step is timed on buffers filled with random rows whose width follows ``--obs-dim``:
for cheetah_vel it defaults to 20, the observation of oyster's HalfCheetahVel (ours has 17: it
leaves out the torso's centre of mass), so that the paper-scale row (3x300 nets, meta-batch
16 x 256, context 100, act 6) compares with oyster's cheetah-vel step. Collection is timed on the
real environments of the family. Rates are given per wall second and as process CPU time per
unit (robust to other jobs on a shared machine; it includes finished child processes, such as the
C++ compiler inductor runs); the load average is printed with them.
``mode`` is config.yaml's ``compile`` switch: ``eager`` (off) or ``compiled`` (on; metarl.compiling),
where a row "first call" gives what the first gradient step and the first trajectory cost with
compilation, cold or warm depending on the inductor cache (``$TORCHINDUCTOR_CACHE_DIR``).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from metarl.config import run_spec
from metarl.envs import get_family
from metarl.methods.pearl import PEARL
from metarl.profiling import machine_line, time_iterations
from metarl.utils.io import save_text
from metarl.utils.runtime import resolve_device

CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"
MODES = {"eager": "off", "compiled": "on"}  # bench mode -> config.yaml compile
OYSTER_OBS_DIM = {"cheetah_vel": 20}
COLUMNS = ("scale", "mode", "device", "threads", "what", "per unit (wall)", "per unit (CPU)", "rate (wall)")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (inductor compiles C++ in a subprocess)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn, repeats: int, device: torch.device, warm_up: bool = True) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call of ``fn``, after one untimed warm-up call."""
    if warm_up:
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - wall) / repeats, (cpu_seconds() - cpu) / repeats


def time_training(agent, algo: str, mode: str, iterations: int, device: torch.device) -> dict:
    """A method's training iterations under bench ``mode`` (MODES), as the TESP and VATE benches
    time them: one untimed warm-up iteration (``first_cpu_s``: with ``compiled`` it compiles), then
    ``iterations`` timed plainly (``wall_s``, ``cpu_s``, ``env_steps`` per iteration), then, in eager
    mode only, as many again under metarl.profiling's phase instrumentation for ``shares`` (its
    timers wrap methods the compiled code calls and would break and re-trace its graphs)."""
    agent.use_compile(MODES[mode])
    first = cpu_seconds()
    agent.train_iteration()  # warm-up (allocator, lazy initialisation, compilation)
    first, steps = cpu_seconds() - first, agent.env_steps
    wall, cpu = timed(agent.train_iteration, iterations, device, warm_up=False)
    steps = (agent.env_steps - steps) / iterations
    shares = time_iterations(agent, algo, iterations, device) if mode == "eager" else None
    return {"first_cpu_s": first, "wall_s": wall, "cpu_s": cpu, "env_steps": steps, "shares": shares}


def share(timing: dict, category: str) -> str:
    """A category's share of the instrumented iterations, or ``n/a`` where none were (compiled)."""
    return "n/a" if timing["shares"] is None else f"{100 * timing['shares'][f'{category}_share']:.0f} %"


class _Reshaped:
    """The family with another observation size: only for building networks and buffers."""

    def __init__(self, family, obs_dim: int):
        self._family, self.obs_dim = family, obs_dim

    def __getattr__(self, name):
        return getattr(self._family, name)


def pearl_for(config: dict, experiment: str, family_name: str, method: str, device: torch.device,
              obs_dim: int | None = None) -> PEARL:
    family = get_family(family_name)
    tasks = family.sample_splits(np.random.default_rng(config["taskset_seed"]))
    spec = run_spec(config, experiment, family_name, method, seed=0)
    if obs_dim is not None and obs_dim != family.obs_dim:
        family = _Reshaped(family, obs_dim)
    return PEARL(family, tasks, PEARL.make_hparams(spec["hparams"]), spec["train_split"], device)


def fill_with_random_rows(agent: PEARL, rows_per_task: int) -> None:
    """Every train task's buffer (and context window) holds ``rows_per_task`` random transitions."""
    n, width = len(agent.train_tasks), agent.buffer.data.shape[-1]
    rows = torch.randn(n, rows_per_task, width, device=agent.device)
    rows[..., agent.cols["term"]] = 0.0
    rows[..., agent.cols["act"]] = rows[..., agent.cols["act"]].clamp(-0.99, 0.99)
    agent.buffer.add(torch.arange(n, device=agent.device), rows,
                     torch.ones(n, rows_per_task, dtype=torch.bool, device=agent.device), context=True)


def bench(config: dict, experiment: str, family: str, method: str, scale: str, mode: str, device: torch.device,
          threads: int, grad_steps: int, obs_dim: int | None) -> list[dict]:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not available; available: {list(MODES)}")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = {**config, "scale": scale}
    base = {"scale": scale, "mode": mode, "device": str(device), "threads": threads}
    rows = []

    learner = pearl_for(config, experiment, family, method, device, obs_dim)
    learner.use_compile(MODES[mode])
    hp = learner.hp
    fill_with_random_rows(learner, max(hp.rl_batch, hp.context_batch))
    first = timed(learner.update, 1, device, warm_up=False)  # compiles when compiled
    wall, cpu = timed(learner.update, grad_steps, device)
    rows.append({**base, "what": (f"gradient step: meta-batch {hp.meta_batch} x {hp.rl_batch}, context "
                                  f"{hp.context_batch}, {hp.layers}x{hp.hidden} nets, obs {learner.obs_dim}, "
                                  f"act {learner.act_dim}"),
                 "per unit (wall)": f"{wall * 1e3:.2f} ms", "per unit (CPU)": f"{cpu * 1e3:.2f} ms",
                 "rate (wall)": f"{1 / wall:,.1f} steps/s"})

    collector = pearl_for(config, experiment, family, method, device)
    collector.use_compile(MODES[mode])
    n_train, horizon = len(collector.train_tasks), collector.family.horizon
    all_tasks = torch.arange(n_train, device=device)
    first_collect = timed(lambda: collector.collect(all_tasks, 1, posterior=False, context=False), 1, device, warm_up=False)
    rows.append({**base, "what": "first call: gradient step, then one trajectory (includes compilation)",
                 "per unit (wall)": f"{first[0]:.2f} s + {first_collect[0]:.2f} s",
                 "per unit (CPU)": f"{first[1]:.2f} s + {first_collect[1]:.2f} s", "rate (wall)": ""})
    for what, tasks, posterior in [(f"collection: all {n_train} train tasks together, z ~ prior", all_tasks, False),
                                   (f"collection: {hp.tasks_per_iteration} tasks, z ~ posterior",
                                    all_tasks[:hp.tasks_per_iteration], True)]:
        wall, cpu = timed(lambda t=tasks, p=posterior: collector.collect(t, horizon, posterior=p, context=True), 1, device)
        steps = len(tasks) * horizon
        rows.append({**base, "what": f"{what} (one {horizon}-step trajectory each)",
                     "per unit (wall)": f"{wall / steps * 1e6:.1f} us/step", "per unit (CPU)": f"{cpu / steps * 1e6:.1f} us/step",
                     "rate (wall)": f"{steps / wall:,.0f} env steps/s"})
    return rows


def report(rows: list[dict], header: str) -> str:
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="metarl bench pearl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="E3")
    parser.add_argument("--family", default="cheetah_vel")
    parser.add_argument("--method", default="pearl")
    parser.add_argument("--scale", nargs="+", default=["quick", "paper"], choices=["smoke", "quick", "paper"])
    parser.add_argument("--mode", nargs="+", default=["eager"], choices=list(MODES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", nargs="+", type=int, default=[1])
    parser.add_argument("--grad-steps", type=int, default=10, help="timed gradient steps per setting")
    parser.add_argument("--obs-dim", type=int, help="observation size of the gradient-step row "
                        "(default: oyster's for cheetah_vel, 20; the family's otherwise)")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--out", type=Path, help="write the Markdown table here")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text())
    device = resolve_device(args.device)
    obs_dim = args.obs_dim or OYSTER_OBS_DIM.get(args.family)
    rows = []
    for scale in args.scale:
        for mode in args.mode:
            for threads in args.threads:
                rows += bench(config, args.experiment, args.family, args.method, scale, mode, device, threads,
                              args.grad_steps, obs_dim)
                print(f"done: scale {scale}, {mode}, {threads} thread(s)", flush=True)
    header = (f"PEARL ({args.experiment} {args.method}) on {args.family}, hyper-parameters from config.yaml at each "
              f"scale. Machine: {machine_line(device, None)}.")
    text = report(rows, header)
    print(text)
    if args.out:
        save_text(text, args.out)


if __name__ == "__main__":
    main()
