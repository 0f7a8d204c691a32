"""VATE (metarl.methods.vate) iterations per second on the E1 gridworld with the
hyper-parameters config.yaml gives a method of E1 at a scale (quick and paper share the
network and batch sizes: 128 envs x one 45-step meta-episode per iteration, PPO 4 epochs x 4
minibatches; they differ in the number of iterations only).

Each setting builds the method, runs one untimed warm-up iteration, then times ``--iterations``
iterations, and in eager mode as many again under the phase instrumentation of metarl.profiling,
which gives the shares of collection (env stepping, policy and belief inference) and of the
PPO/ELBO update. Wall and process CPU time are
reported (CPU time stays meaningful on a shared machine; it includes inductor's C++ compiler,
which runs in child processes). ``mode`` is config.yaml's ``compile`` switch: ``eager`` (off) or
``compiled`` (on; metarl.compiling); the warm-up iteration, reported as ``first iteration``,
includes compilation, cold or warm depending on the inductor cache (``$TORCHINDUCTOR_CACHE_DIR``).

Usage: ``metarl bench vate --scale quick --threads 1 2 --out benchmarks/vate_bench.md``
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml

from metarl.bench_pearl import MODES, share, time_training
from metarl.config import run_spec
from metarl.envs import get_family
from metarl.methods.vate import VATE
from metarl.profiling import machine_line
from metarl.utils.io import save_text
from metarl.utils.runtime import resolve_device

CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"
COLUMNS = ("method", "scale", "mode", "device", "threads", "envs", "env steps / iteration", "first iteration CPU s",
           "wall ms / iteration", "CPU ms / iteration", "collection share", "update share", "env steps / wall s")


def measure(method: str, scale: str, mode: str, device: torch.device, threads: int, iterations: int,
            config: dict) -> dict:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not available; available: {MODES}")
    torch.set_num_threads(threads)
    config = {**config, "scale": scale}
    spec = run_spec(config, "E1", "gridworld", method, seed=0)
    family = get_family("gridworld")
    tasks = family.sample_splits(np.random.default_rng(config["taskset_seed"]))
    torch.manual_seed(0)
    agent = VATE(family, tasks, VATE.make_hparams(spec["hparams"]), spec["train_split"], device)
    t = time_training(agent, "vate", mode, iterations, device)
    return {"method": method, "scale": scale, "mode": mode, "device": str(device), "threads": threads,
            "envs": agent.hp.num_envs, "env steps / iteration": f"{t['env_steps']:,.0f}",
            "first iteration CPU s": f"{t['first_cpu_s']:.1f}", "wall ms / iteration": f"{t['wall_s'] * 1e3:,.0f}",
            "CPU ms / iteration": f"{t['cpu_s'] * 1e3:,.0f}", "collection share": share(t, "collection"),
            "update share": share(t, "gradient"), "env steps / wall s": f"{t['env_steps'] / t['wall_s']:,.0f}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="metarl bench vate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["vate"], help="E1 methods of config.yaml")
    parser.add_argument("--scale", nargs="+", default=["quick"], choices=["smoke", "quick", "paper"])
    parser.add_argument("--mode", nargs="+", default=["eager"], choices=MODES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", nargs="+", type=int, default=[1])
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per setting")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--out", type=Path, help="write the Markdown table here")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text())
    device = resolve_device(args.device)
    rows = []
    for scale in args.scale:
        for method in args.methods:
            for mode in args.mode:
                for threads in args.threads:
                    rows.append(measure(method, scale, mode, device, threads, args.iterations, config))
                    print(rows[-1], flush=True)
    lines = [f"VATE / RL² on the E1 gridworld, hyper-parameters from config.yaml. Machine: "
             f"{machine_line(device, None)}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        save_text(text, args.out)


if __name__ == "__main__":
    main()
