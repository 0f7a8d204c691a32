"""Meta-updates per second and env steps per second of TESP (metarl.methods.tesp) on the E2
reaching families, with the hyper-parameters config.yaml gives E2 at a scale (``paper``: the
paper's meta-batch of 20 tasks x 25 episodes, K = 3, GRU 256, PPO 20 epochs...).

One meta-update samples (warm-up + K + 1 rounds) x meta_batch x episodes_per_task episodes and
runs K batched fast updates and the PPO epochs. Rates are per CPU second of this process
(``time.process_time``, all its threads), which stays meaningful on a machine shared with other
jobs; wall-clock seconds are reported too. For reference, ``env only`` is the batched env of the
same size stepped with random actions (no policy, no learning).

Usage: ``python -m metarl.bench_tesp --scale paper --out benchmarks/tesp.md``
"""
from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from metarl.config import run_spec
from metarl.envs import get_family
from metarl.methods.tesp import TESP
from metarl.utils.io import save_text

FAMILIES = ("wheeled", "small_ant", "reacher_2link", "reacher_4link")
CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"


def env_only_rate(family, num_envs: int) -> float:
    """Env steps per CPU second of one round of the batched env with random actions (frozen
    envs, whose episode ended, are not counted)."""
    env = family.make_batched(num_envs)
    env.reset(seed=0)
    done = torch.zeros(num_envs, dtype=torch.bool)
    steps, start = 0, time.process_time()
    while not done.all():
        steps += int((~done).sum())
        _, _, terminated, truncated, _ = env.step(torch.rand(num_envs, env.act_dim) * 2 - 1)
        done = terminated | truncated
    return steps / (time.process_time() - start)


def measure(family_name: str, method: str, scale: str, iterations: int, config_path: Path) -> dict:
    config = yaml.safe_load(config_path.read_text())
    config["scale"] = scale
    spec = run_spec(config, "E2", family_name, method, seed=0)
    family = get_family(family_name)
    tasks = family.sample_splits(np.random.default_rng(config["taskset_seed"]))
    torch.manual_seed(0)
    agent = TESP(family, tasks, TESP.make_hparams(spec["hparams"]), spec["train_split"], torch.device("cpu"))
    hp = agent.hp
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(iterations):
        agent.train_iteration()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "family": family_name, "method": method, "scale": scale,
        "envs": hp.meta_batch * hp.episodes_per_task,
        "env steps / meta-update": agent.env_steps / iterations,
        "CPU s / meta-update": cpu / iterations, "wall s / meta-update": wall / iterations,
        "meta-updates / CPU s": iterations / cpu, "env steps / CPU s": agent.env_steps / cpu,
        "env only: steps / CPU s": env_only_rate(family, hp.meta_batch * hp.episodes_per_task),
    }


def report(rows: list[dict], threads: int) -> str:
    columns = list(rows[0])
    lines = [
        "# TESP throughput",
        "",
        (f"Measured {datetime.date.today()} on {platform.processor() or platform.machine()} "
        f"({threads} torch thread(s); the machine's 2 cores were shared with other jobs), Python "
        f"{platform.python_version()}, torch {torch.__version__}. **CPU only: no GPU was measured.** "
        "Produced by `python -m metarl.bench_tesp` (`metarl/bench_tesp.py`): hyper-parameters from "
        "config.yaml's E2 block at the given scale; rates per CPU second of the benchmark process "
        "(see the module docstring). One meta-update = warm-up + K + 1 sampling rounds, K batched "
        "fast updates and the PPO epochs."),
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [f"{v:,.0f}" if isinstance(v, float) and v >= 100 else f"{v:.3g}" if isinstance(v, float) else str(v)
                 for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="metarl bench tesp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--methods", nargs="+", default=["tesp"], help="E2 methods of config.yaml")
    parser.add_argument("--scales", nargs="+", default=["paper"], choices=["smoke", "quick", "paper"])
    parser.add_argument("--iterations", type=int, default=1, help="meta-updates timed per setting")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for scale in args.scales:
        for family in args.families:
            for method in args.methods:
                rows.append(measure(family, method, scale, args.iterations, args.config))
                print(rows[-1], flush=True)
    text = report(rows, args.threads)
    print(text)
    if args.out:
        save_text(text, args.out)


if __name__ == "__main__":
    main()
