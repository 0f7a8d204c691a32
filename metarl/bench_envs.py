"""Env steps per second of the MuJoCo task families, gymnasium form and batched form, against
the raw ``mujoco.mj_step`` rate of the same model (``metarl bench envs``).

Every form runs episodes of ``episode_steps`` steps (fewer when they end) with uniformly
random actions, so all see the same kind of physics states. The raw rate replays the states
the gymnasium form visited and times ``mj_step`` alone (``nstep = frame_skip`` per env step),
without any Python; mj_step/s ÷ frame_skip is the most env steps/s one core can give.
Rates are the best of ``REPEATS`` runs, per CPU second of this process (``time.process_time``, all its threads), i.e. per
core, which stays meaningful on a machine shared with other jobs; batched rates count the env
steps actually simulated (finished, frozen envs are not).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import mujoco
import numpy as np
import torch

from metarl.envs import get_family
from metarl.envs.mujoco_batch import MUJOCO_FAMILIES
from metarl.utils.runtime import resolve_device

BATCH_SIZES = (1, 16, 256)
REPEATS = 3  # every rate is the best of 3 runs: other jobs on the machine only ever slow a run down


def gym_rate(family, duration: float, episode_steps: int) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    """Env steps/s of the gymnasium form, and the (state, action) pairs it stepped from."""
    env = family.make_gym()
    env.action_space.seed(0)
    raw_env, spec = env.unwrapped, mujoco.mjtState.mjSTATE_INTEGRATION
    episodes, start = [], time.process_time()
    while time.process_time() - start < duration:
        env.reset(seed=len(episodes))
        episode = []
        for _ in range(episode_steps):
            state = np.empty(mujoco.mj_stateSize(raw_env.model, spec))
            mujoco.mj_getState(raw_env.model, raw_env.data, state, spec)
            episode.append((state, env.action_space.sample()))
            if env.step(episode[-1][1])[2]:
                break
        episodes.append(episode)

    def replay() -> float:  # the same episodes, timed without saving states
        start = time.process_time()
        for seed, episode in enumerate(episodes):
            env.reset(seed=seed)
            for _, action in episode:
                env.step(action)
        return time.process_time() - start

    visited = [step for episode in episodes for step in episode]
    return len(visited) / min(replay() for _ in range(REPEATS)), visited


def raw_mj_step_rate(family, visited) -> float:
    """mj_step calls per CPU second from the visited states."""
    model = family.load_model()
    data = mujoco.MjData(model)
    spec = mujoco.mjtState.mjSTATE_INTEGRATION

    def replay() -> float:
        elapsed = 0.0
        for state, action in visited:
            mujoco.mj_setState(model, data, state, spec)
            data.ctrl[:] = action
            start = time.process_time()
            mujoco.mj_step(model, data, nstep=family.frame_skip)
            elapsed += time.process_time() - start
        return elapsed

    return len(visited) * family.frame_skip / min(replay() for _ in range(REPEATS))


def batched_rate(family, num_envs: int, duration: float, episode_steps: int, num_threads: int = 1) -> float:
    return max(_batched_rate(family, num_envs, duration, episode_steps, num_threads) for _ in range(REPEATS))


def _batched_rate(family, num_envs, duration, episode_steps, num_threads) -> float:
    env = family.make_batched(num_envs, num_threads=num_threads)
    tasks = next(iter(family.sample_splits(np.random.default_rng(0)).values()))
    env.set_tasks([tasks[i % len(tasks)] for i in range(num_envs)])
    low, high = (torch.as_tensor(x, dtype=torch.float32) for x in family.model.actuator_ctrlrange.T)
    generator = torch.Generator().manual_seed(0)
    steps, seed, start = 0, 0, time.process_time()
    while time.process_time() - start < duration:
        env.reset(seed=seed)
        seed += num_envs
        done = torch.zeros(num_envs, dtype=torch.bool)
        for _ in range(episode_steps):
            steps += int((~done).sum())
            action = low + (high - low) * torch.rand(num_envs, len(low), generator=generator)
            done |= env.step(action)[2]
    return steps / (time.process_time() - start)


TORCH_FAMILIES = ("gridworld", "point_robot", "sparse_point_robot", "dirichlet_point_robot")
TORCH_BATCH_SIZES = (1, 16, 256, 4096)


def torch_family_rate(name: str, num_envs: int, duration: float, device: str) -> float:
    """Env steps/s of a pure-torch batched family (whole episodes, random actions)."""
    family = get_family(name)
    env = family.make_batched(num_envs, device=device)
    tasks = next(iter(family.sample_splits(np.random.default_rng(0)).values()))
    env.set_tasks([tasks[i % len(tasks)] for i in range(num_envs)])
    generator = torch.Generator(device=device).manual_seed(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < duration:
        env.reset()
        for _ in range(env.horizon):
            if family.discrete:
                action = torch.randint(family.act_dim, (num_envs,), generator=generator, device=device)
            else:
                action = 0.2 * torch.rand(num_envs, family.act_dim, generator=generator, device=device) - 0.1
            env.step(action)
        steps += num_envs * env.horizon
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def torch_benchmark(families, duration: float, device: str) -> list[str]:
    lines = [f"| family | {' | '.join(f'B={b}' for b in TORCH_BATCH_SIZES)} |", "|" + "---|" * (len(TORCH_BATCH_SIZES) + 1)]
    for name in families:
        rates = [torch_family_rate(name, b, duration, device) for b in TORCH_BATCH_SIZES]
        lines.append(f"| {name} | " + " | ".join(f"{r:,.0f}" for r in rates) + " |")
        print(lines[-1], flush=True)
    return lines


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def benchmark(families, duration: float, episode_steps: int) -> list[dict]:
    rows = []
    for name in families:
        family = get_family(name)
        gym, visited = gym_rate(family, duration, episode_steps)
        mj_step = raw_mj_step_rate(family, visited)
        row = {"family": name, "frame_skip": family.frame_skip, "mj_step": mj_step, "limit": mj_step / family.frame_skip, "gym": gym}
        for b in BATCH_SIZES:
            row[f"B={b}"] = batched_rate(family, b, duration, episode_steps)
        row["B=256, 2 threads"] = batched_rate(family, 256, duration, episode_steps, num_threads=2)
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


RATE_COLUMNS = ("gym", *(f"B={b}" for b in BATCH_SIZES), "B=256, 2 threads")


def format_row(row: dict) -> str:
    cells = [row["family"], str(row["frame_skip"]), f"{row['mj_step']:,.0f}", f"{row['limit']:,.0f}"]
    cells += [f"{row[c]:,.0f} ({row[c] / row['limit']:.0%})" for c in RATE_COLUMNS]
    return "| " + " | ".join(cells) + " |"


def write_report(rows: list[dict], torch_lines: list[str], device: str, path: Path, duration: float,
                 episode_steps: int) -> None:
    header = ["family", "frame skip", "raw mj_step/s", "limit: env steps/s", "gymnasium form",
              *(f"batched {c}" for c in RATE_COLUMNS[1:])]
    lines = [
        "# Environment throughput",
        "",
        (f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, {os.cpu_count()} cores shared with other"
         f" jobs (load average {os.getloadavg()[1]:.1f} over the last 5 minutes); Python {platform.python_version()}, mujoco {mujoco.__version__}, torch {torch.__version__}."
         " **CPU only: no GPU was measured** (MuJoCo steps on the CPU in any case; a GPU would only hold the"
         " returned tensors)."),
        "",
        ("Env steps per CPU second of the benchmark process, i.e. per core (percentage of the limit). The limit is"
         " the raw `mujoco.mj_step` rate on the physics states the gymnasium form visited, divided by the frame skip."
         f" Every form runs episodes of {episode_steps} steps (fewer if they end) with uniformly random actions, for"
         f" at least {duration:g} CPU s; batched forms use one thread unless stated (with 2 threads the CPU time of"
         " both counts, so the column shows the threads' overhead, not the wall-clock speed-up). Rates vary by about"
         " ±15 % between runs on an idle machine, much more on a busy one, where entries above 100 % only mean that the"
         " raw and the batched runs met different loads; each is the best of 3. Produced by `metarl bench envs` (`metarl/bench_envs.py`)."),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *(format_row(r) for r in rows),
        "",
        "## Pure-torch families (gridworld, point robots)",
        "",
        (f"Env steps per wall-clock second on `{device}`, one torch thread, whole episodes with random actions."
         " The 10M steps/s target is for a GPU; these are CPU figures where no GPU was available."),
        "",
        *torch_lines,
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="metarl bench envs", description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(MUJOCO_FAMILIES), choices=MUJOCO_FAMILIES)
    parser.add_argument("--duration", type=float, default=0.5, help="CPU seconds per measurement (at least)")
    parser.add_argument("--episode-steps", type=int, default=20, help="steps per episode")
    parser.add_argument("--torch-families", nargs="*", default=list(TORCH_FAMILIES), choices=TORCH_FAMILIES)
    parser.add_argument("--device", default="auto", help="device of the pure-torch families (auto: CUDA if present)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/envs.md"))
    args = parser.parse_args(argv)
    device = str(resolve_device(args.device))
    torch.set_num_threads(1)  # the report's pure-torch rows are per torch thread, as the pipeline's jobs run
    print("| family | frame skip | mj_step/s | limit | " + " | ".join(RATE_COLUMNS) + " |")
    rows = benchmark(args.families, args.duration, args.episode_steps)
    torch_lines = torch_benchmark(args.torch_families, args.duration, device)
    write_report(rows, torch_lines, device, args.out, args.duration, args.episode_steps)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
