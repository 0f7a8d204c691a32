"""E1 belief-rollout figure: for a few test tasks, the grid at successive time steps of one
greedy meta-episode with the agent's path and, for VATE, the learned reward decoder's
probability of reward per cell under the current posterior (RL² shows the path only)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from metarl.tasksets import read_taskset
from metarl.training import build_method
from metarl.utils.checkpoints import load_model_file
from metarl.utils.io import atomic_path

#: time steps shown: every step of the first episode's search, then episode ends
DEFAULT_STEPS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 16, 20, 30, 45)


def plot_belief_rollout(model_path, taskset_path, out_png, split: str = "test", num_tasks: int = 3,
                        steps=DEFAULT_STEPS, dpi: int = 150) -> None:
    saved = load_model_file(model_path)
    method = build_method(saved["spec"], taskset_path, torch.device("cpu"))
    method.model.load_state_dict(saved["model"])
    tasks = read_taskset(taskset_path)[split][:num_tasks]
    horizon, size = method.family.horizon, method.grid_size

    fig, axes = plt.subplots(len(tasks), len(steps), figsize=(1.15 * len(steps), 1.3 * len(tasks) + 0.4),
                             squeeze=False)
    for row, task in zip(axes, tasks, strict=True):
        rollout = method.belief_rollout(task)
        positions, returns = rollout["positions"].numpy(), rollout["rewards"].numpy()
        for ax, t in zip(row, steps, strict=True):
            if "reward_probs" in rollout:  # cell (x, y) drawn at column x, row y from the bottom
                image = ax.imshow(rollout["reward_probs"][t].T, origin="lower", cmap="Blues", vmin=0, vmax=1)
            ax.set(xlim=(-0.5, size - 0.5), ylim=(-0.5, size - 0.5), xticks=[], yticks=[])
            ax.set_xticks(torch.arange(size + 1) - 0.5, minor=True)
            ax.set_yticks(torch.arange(size + 1) - 0.5, minor=True)
            ax.grid(which="minor", color="0.8", linewidth=0.5)
            ax.tick_params(which="minor", length=0)
            ax.scatter(*task["goal"], marker="*", s=90, color="gold", edgecolor="k", linewidth=0.5, zorder=3)
            # path of the current episode so far (positions[0] is the start, i is after step i)
            episode_start = max(t - 1, 0) // horizon * horizon
            path = [positions[0], *positions[episode_start + 1:t + 1]]
            ax.plot(*zip(*path, strict=True), color="tab:red", linewidth=1.2, zorder=4)
            ax.scatter(*path[-1], color="tab:red", s=18, zorder=5)
            ax.set_title(f"t={t}  R={returns[:t].sum():.1f}", fontsize=6, pad=2)
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        ax.set_ylabel(f"goal {tuple(task['goal'])}", fontsize=7)
    spec = saved["spec"]
    fig.suptitle(f"{spec['method']} (seed {spec['seed']}, {saved['env_steps']:,} frames): path (red), goal (star)"
                 + (", decoder's P(reward) per cell (blue)" if "reward_probs" in rollout else ""), fontsize=8)
    if "reward_probs" in rollout:
        fig.colorbar(image, ax=axes, shrink=0.6, pad=0.01).ax.tick_params(labelsize=6)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
