"""Env steps per second of the MuJoCo task families, gymnasium form and batched form, against
the raw ``mujoco.mj_step`` rate of the same model (``metarl bench envs``).

Every form runs uniformly random actions and restarts episodes that end. The raw rate
replays the physics states the gymnasium form visited and times ``mj_step`` alone (``nstep
= frame_skip`` per env step), so it measures the same states' physics without any Python;
mj_step/s ÷ frame_skip is the most env steps/s one core can give. Batched rates count the
env steps actually simulated (frozen, finished envs are not).
"""
from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import mujoco
import numpy as np
import torch

from metarl.envs import get_family
from metarl.envs.mujoco_batch import MUJOCO_FAMILIES

BATCH_SIZES = (1, 16, 256)


def gym_rate(family, duration: float) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    """Env steps/s of the gymnasium form, and the (state, action) pairs it stepped from."""
    env = family.make_gym()
    env.reset(seed=0)
    env.action_space.seed(0)
    raw_env, spec = env.unwrapped, mujoco.mjtState.mjSTATE_INTEGRATION
    visited, steps, start = [], 0, time.perf_counter()
    while time.perf_counter() - start < duration:
        action = env.action_space.sample()
        state = np.empty(mujoco.mj_stateSize(raw_env.model, spec))
        mujoco.mj_getState(raw_env.model, raw_env.data, state, spec)
        visited.append((state, action))
        _, _, terminated, truncated, _ = env.step(action)
        steps += 1
        if terminated or truncated:
            env.reset()
    # the states were saved inside the timed loop: time it again without saving them
    env.reset(seed=0)
    start = time.perf_counter()
    for _, action in visited:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start), visited


def raw_mj_step_rate(family, visited) -> float:
    """mj_step calls per second from the visited states."""
    model = family.load_model()
    data = mujoco.MjData(model)
    spec, elapsed = mujoco.mjtState.mjSTATE_INTEGRATION, 0.0
    for state, action in visited:
        mujoco.mj_setState(model, data, state, spec)
        data.ctrl[:] = action
        start = time.perf_counter()
        mujoco.mj_step(model, data, nstep=family.frame_skip)
        elapsed += time.perf_counter() - start
    return len(visited) * family.frame_skip / elapsed


def batched_rate(family, num_envs: int, duration: float, num_threads: int = 1) -> float:
    env = family.make_batched(num_envs, num_threads=num_threads)
    tasks = next(iter(family.sample_splits(np.random.default_rng(0)).values()))
    env.set_tasks([tasks[i % len(tasks)] for i in range(num_envs)])
    low, high = (torch.as_tensor(x, dtype=torch.float32) for x in family.model.actuator_ctrlrange.T)
    generator = torch.Generator().manual_seed(0)
    env.reset(seed=0)
    done = torch.zeros(num_envs, dtype=torch.bool)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < duration:
        if done.all():
            env.reset()
            done[:] = False
        action = low + (high - low) * torch.rand(num_envs, len(low), generator=generator)
        steps += int((~done).sum())
        _, _, terminated, truncated, _ = env.step(action)
        done = terminated | truncated
    return steps / (time.perf_counter() - start)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def benchmark(families, duration: float) -> list[dict]:
    rows = []
    for name in families:
        family = get_family(name)
        gym, visited = gym_rate(family, duration)
        mj_step = raw_mj_step_rate(family, visited)
        row = {"family": name, "frame_skip": family.frame_skip, "mj_step": mj_step, "limit": mj_step / family.frame_skip, "gym": gym}
        for b in BATCH_SIZES:
            row[f"B={b}"] = batched_rate(family, b, duration)
        row["B=256, 2 threads"] = batched_rate(family, 256, duration, num_threads=2)
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


RATE_COLUMNS = ("gym", *(f"B={b}" for b in BATCH_SIZES), "B=256, 2 threads")


def format_row(row: dict) -> str:
    cells = [row["family"], str(row["frame_skip"]), f"{row['mj_step']:,.0f}", f"{row['limit']:,.0f}"]
    cells += [f"{row[c]:,.0f} ({row[c] / row['limit']:.0%})" for c in RATE_COLUMNS]
    return "| " + " | ".join(cells) + " |"


def write_report(rows: list[dict], path: Path, duration: float) -> None:
    header = ["family", "frame skip", "raw mj_step/s", "limit: env steps/s (1 core)", "gymnasium form",
              *(f"batched {c}" for c in RATE_COLUMNS[1:])]
    lines = [
        "# Environment throughput",
        "",
        (f"Measured {datetime.date.today().isoformat()} on {cpu_name()} ({torch.get_num_threads()} threads "
        f"available to torch, shared with other jobs), Python {platform.python_version()}, mujoco {mujoco.__version__}, "
        f"torch {torch.__version__}. **CPU only: no GPU was measured** (the environments run on the CPU in any case;"
        " a GPU would only hold the returned tensors)."),
        "",
        ("Env steps per second (percentage of the one-core limit). The limit is the raw `mujoco.mj_step` rate on the"
        " physics states the gymnasium form visited, divided by the frame skip. Batched forms use one thread unless"
        f" stated; each rate ran for about {duration:g} s with uniformly random actions, so numbers vary by ±10-20 %"
        " between runs. Produced by `metarl bench envs` (`metarl/bench_envs.py`)."),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *(format_row(r) for r in rows),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="metarl bench envs", description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(MUJOCO_FAMILIES), choices=MUJOCO_FAMILIES)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/envs.md"))
    args = parser.parse_args(argv)
    print("| family | frame skip | mj_step/s | limit | " + " | ".join(RATE_COLUMNS) + " |")
    rows = benchmark(args.families, args.duration)
    write_report(rows, args.out, args.duration)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
