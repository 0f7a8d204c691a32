"""Top-down plots of 2-D trajectories (point robots, any task whose goal is a 2-D position)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Circle


def plot_paths(ax: Axes, paths, goals=None, goal_radius: float | None = None, colors=None,
               other_goals=None, semicircle: bool = False, title: str | None = None) -> Axes:
    """Draw ``paths`` (N, L, 2) as lines from a start dot; ``goals`` (N, 2) in the matching colours
    (with their reward radius if given); ``other_goals`` (M, 2) as grey crosses for context (e.g.
    the training goals); ``semicircle`` draws the upper unit arc the sparse robots' goals lie on."""
    paths = np.asarray(paths)
    colors = colors if colors is not None else plt.cm.viridis(np.linspace(0, 1, max(len(paths), 1)))
    if semicircle:
        angle = np.linspace(0, np.pi, 100)
        ax.plot(np.cos(angle), np.sin(angle), color="0.8", lw=1, zorder=0)
        ax.set(xlim=(-1.3, 1.3), ylim=(-0.35, 1.3))
    if other_goals is not None and len(other_goals):
        other_goals = np.asarray(other_goals)
        ax.scatter(other_goals[:, 0], other_goals[:, 1], marker="x", s=12, color="0.6", lw=0.8, zorder=1)
    for i, path in enumerate(paths):
        ax.plot(path[:, 0], path[:, 1], color=colors[i], lw=1.2, alpha=0.9, zorder=2)
        ax.scatter(path[-1, 0], path[-1, 1], color=colors[i], s=10, zorder=3)
    if len(paths):
        ax.scatter(paths[:, 0, 0], paths[:, 0, 1], color="k", s=12, zorder=4)
    if goals is not None:
        for i, goal in enumerate(np.asarray(goals)):
            if goal_radius:
                ax.add_patch(Circle(goal, goal_radius, color=colors[i % len(colors)], alpha=0.15, zorder=1))
            ax.scatter(*goal, marker="*", s=60, color=colors[i % len(colors)], edgecolor="k", lw=0.4, zorder=5)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize="small")
    return ax
