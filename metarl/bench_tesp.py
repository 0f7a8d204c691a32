"""Meta-updates per second and env steps per second of TESP (metarl.methods.tesp) on the E2
reaching families, with the hyper-parameters config.yaml gives E2 at a scale (``paper``: the
paper's meta-batch of 20 tasks x 25 episodes, K = 3, GRU 256, PPO 20 epochs...).

One meta-update samples (warm-up + K + 1 rounds) x meta_batch x episodes_per_task episodes and
runs K batched fast updates and the PPO epochs; the share of its time spent collecting (env
stepping + policy inference) and in gradient work (fast updates, meta-update) comes from the
instrumentation of metarl.profiling. Rates are per CPU second of this process
(``time.process_time``, all its threads), which stays meaningful on a machine shared with other
jobs; wall-clock seconds are reported too. For reference, ``env only`` is the batched env of the
same size stepped with random actions (no policy, no learning). ``mode`` is config.yaml's
``compile`` switch: ``eager`` (off) or ``compiled`` (on; metarl.compiling). One untimed warm-up
meta-update comes first, reported as ``first meta-update CPU s``: with ``compiled`` it includes
compilation, cold or warm depending on the inductor cache (``$TORCHINDUCTOR_CACHE_DIR``). Rates
come from plain timing in both modes; the shares from as many meta-updates again under the phase
instrumentation, in eager mode only (its timers wrap methods the compiled code calls).

Usage: ``metarl bench tesp --scale quick --threads 1 2 --out benchmarks/tesp.md``
"""
from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from metarl.bench_pearl import MODES, share, time_training
from metarl.config import run_spec
from metarl.envs import get_family
from metarl.methods.tesp import TESP
from metarl.profiling import machine_line
from metarl.utils.io import save_text
from metarl.utils.runtime import resolve_device

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


def measure(family_name: str, method: str, scale: str, mode: str, device: torch.device, threads: int,
            iterations: int, config_path: Path) -> dict:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not available; available: {MODES}")
    torch.set_num_threads(threads)
    config = yaml.safe_load(config_path.read_text())
    config["scale"] = scale
    spec = run_spec(config, "E2", family_name, method, seed=0)
    family = get_family(family_name)
    tasks = family.sample_splits(np.random.default_rng(config["taskset_seed"]))
    torch.manual_seed(0)
    agent = TESP(family, tasks, TESP.make_hparams(spec["hparams"]), spec["train_split"], device)
    hp = agent.hp
    t = time_training(agent, "tesp", mode, iterations, device)
    return {
        "family": family_name, "method": method, "scale": scale, "mode": mode, "device": str(device),
        "threads": threads, "envs": hp.meta_batch * hp.episodes_per_task,
        "env steps / meta-update": t["env_steps"], "first meta-update CPU s": t["first_cpu_s"],
        "CPU s / meta-update": t["cpu_s"], "wall s / meta-update": t["wall_s"],
        "collection share": share(t, "collection"), "gradient share": share(t, "gradient"),
        "env steps / CPU s": t["env_steps"] / t["cpu_s"],
        "env only: steps / CPU s": env_only_rate(family, hp.meta_batch * hp.episodes_per_task),
    }


def report(rows: list[dict], device: torch.device) -> str:
    columns = list(rows[0])
    lines = [
        "# TESP throughput",
        "",
        (f"Measured {datetime.date.today()}: {machine_line(device, None)}. Produced by `metarl bench tesp` "
         "(`metarl/bench_tesp.py`): hyper-parameters from config.yaml's E2 block at the given scale; rates "
         "per CPU second of the benchmark process (see the module docstring). One meta-update = warm-up + "
         "K + 1 sampling rounds, K batched fast updates and the PPO epochs; one untimed warm-up "
         "meta-update (which compiles, in `compiled` mode) comes first. Shares (eager only): exclusive time "
         "of collection (env stepping, policy inference) and gradient work (fast updates, PPO meta-update) "
         "per `metarl.profiling`."),
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
    parser.add_argument("--families", nargs="+", default=["reacher_2link"], choices=FAMILIES)
    parser.add_argument("--methods", nargs="+", default=["tesp"], help="E2 methods of config.yaml")
    parser.add_argument("--scale", "--scales", nargs="+", default=["quick"], choices=["smoke", "quick", "paper"])
    parser.add_argument("--mode", nargs="+", default=["eager"], choices=MODES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", nargs="+", type=int, default=[1])
    parser.add_argument("--iterations", type=int, default=1, help="meta-updates timed per setting")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    rows = []
    for scale in args.scale:
        for family in args.families:
            for method in args.methods:
                for mode in args.mode:
                    for threads in args.threads:
                        rows.append(measure(family, method, scale, mode, device, threads, args.iterations, args.config))
                        print(rows[-1], flush=True)
    text = report(rows, device)
    print(text)
    if args.out:
        save_text(text, args.out)


if __name__ == "__main__":
    main()
