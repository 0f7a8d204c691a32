"""E4 figures for PEARL-style models on 2-D point robots, rebuilt from saved ``model.pt`` files
({"spec", "model", "env_steps"}) and the task-set file, so Snakemake rules can call them directly.

* ``prior_samples_figure``: trajectories driven by latents drawn from each model's prior
  (how the prior spreads exploration over the goal arc);
* ``adaptation_figure``: the test goals' trajectories as context accumulates (prior trajectories,
  then posterior ones), one row per model.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

from metarl.analysis.trajectories import plot_paths
from metarl.envs.point_robot import GOAL_RADIUS
from metarl.tasksets import read_taskset
from metarl.training import build_method
from metarl.utils.checkpoints import load_model_file
from metarl.utils.io import atomic_path
from metarl.utils.runtime import seed_everything

DEFAULT_PLOT = {"style": "whitegrid", "context": "paper", "palette": "colorblind", "dpi": 150}


def load_model(model_path, taskset_path, seed_offset: int = 20_000):
    """Rebuild the method on CPU with the saved weights; figure noise seeded apart from training."""
    saved = load_model_file(model_path)
    seed_everything(saved["spec"]["seed"] + seed_offset)
    method = build_method(saved["spec"], taskset_path, torch.device("cpu"))
    method.model.load_state_dict(saved["model"])
    method.env_steps = saved["env_steps"]
    return method, saved["spec"]


def _goals(tasks) -> np.ndarray:
    return np.array([task["goal"] for task in tasks])


def _save(fig, out_path, plot: dict) -> None:
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format=Path(out_path).suffix.lstrip(".") or "png", dpi=plot["dpi"], bbox_inches="tight")
    plt.close(fig)


def prior_samples_figure(model_paths: list, taskset_path, out_path, samples: int = 16,
                         plot: dict | None = None) -> None:
    """One panel per model: ``samples`` deterministic trajectories, each with z from the prior."""
    plot = {**DEFAULT_PLOT, **(plot or {})}
    sns.set_theme(style=plot["style"], context=plot["context"])
    splits = read_taskset(taskset_path)
    fig, axes = plt.subplots(1, len(model_paths), figsize=(3.2 * len(model_paths), 2.2), squeeze=False)
    for ax, path in zip(axes[0], model_paths):
        method, spec = load_model(path, taskset_path)
        task = splits[spec["train_split"]][0]  # the goal only changes rewards, not the paths
        paths = method.adapt([task] * samples, trajectories=1, prior_trajectories=1)["observations"][:, 0]
        all_goals = np.concatenate([_goals(tasks) for tasks in splits.values()])
        plot_paths(ax, paths.numpy(), other_goals=all_goals, semicircle=True,
                   colors=sns.color_palette(plot["palette"], samples),
                   title=f"{spec['method']} ({method.hp.latent})")
    fig.suptitle("Trajectories from prior samples of z (crosses: all goals)")
    fig.tight_layout()
    _save(fig, out_path, plot)


def adaptation_figure(model_paths: list, taskset_path, out_path, split: str = "test",
                      plot: dict | None = None) -> None:
    """Rows: models; columns: adaptation trajectories (first, last prior one, first posterior one,
    last); each panel shows the trajectories on all ``split`` goals, coloured by goal."""
    plot = {**DEFAULT_PLOT, **(plot or {})}
    sns.set_theme(style=plot["style"], context=plot["context"])
    tasks = read_taskset(taskset_path)[split]
    goals = _goals(tasks)
    colors = sns.color_palette(plot["palette"], len(tasks))
    rows = []
    for path in model_paths:
        method, spec = load_model(path, taskset_path)
        out = method.adapt(tasks)
        n_prior, n_traj = method.hp.eval_prior_trajectories, out["returns"].shape[1]
        columns = sorted({0, max(n_prior - 1, 0), min(n_prior, n_traj - 1), n_traj - 1})
        rows.append((spec, out, n_prior, columns, getattr(method.family, "sparse", False)))
    n_cols = max(len(row[3]) for row in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.6 * n_cols, 2.2 * len(rows)), squeeze=False)
    for r, (spec, out, n_prior, columns, on_arc) in enumerate(rows):
        for c, k in enumerate(columns):
            z_from = "prior" if k < n_prior else "posterior"
            mean_return = out["returns"][:, k].mean().item()
            plot_paths(axes[r, c], out["observations"][:, k].numpy(), goals=goals, goal_radius=GOAL_RADIUS,
                       colors=colors, semicircle=on_arc,  # sparse robots' goals lie on the unit arc
                       title=f"traj {k + 1}, z ~ {z_from}\nmean return {mean_return:.2f}")
        for c in range(len(columns), n_cols):
            axes[r, c].axis("off")
        axes[r, 0].set_ylabel(spec["method"])
    fig.suptitle(f"Online adaptation on the {split} goals")
    fig.tight_layout()  # room for the suptitle whatever the number of rows
    _save(fig, out_path, plot)
