"""Generic figures shared by all experiments: learning curves and return per adaptation stage."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from metarl.analysis.aggregate import require_metric, stage_order
from metarl.methods import FINAL_STAGE
from metarl.utils.io import atomic_path

ERRORBAR = {"sd": "sd", "se": "se", "ci95": ("ci", 95)}
MAX_COLUMNS = 4  # a single-split figure wraps its family panels into rows of this many


def apply_style(style: dict) -> None:
    sns.set_theme(style=style["style"], context=style["context"], palette=style["palette"])


def _one_split_per_family(data: pd.DataFrame) -> bool:
    return bool((data.groupby("family").split.nunique() == 1).all())


def _facets(data: pd.DataFrame) -> dict:
    """One panel per (split, family): a split per row where a family has several (E2's D, D′,
    D″); else one panel per family, wrapped into rows, so that families on different single
    splits (E5: test, or D for the reaching families) leave no empty panels and eight families
    do not make one very wide strip."""
    if not _one_split_per_family(data):
        return {"row": "split", "col": "family"}
    return {"col": "family", "col_wrap": min(MAX_COLUMNS, data.family.nunique())}


def _title_panels(grid, data: pd.DataFrame) -> None:
    if _one_split_per_family(data):  # wrapped panels have no split row label: name it in the title
        split_of = data.groupby("family").split.first()
        for family, ax in grid.axes_dict.items():
            ax.set_title(f"{family} ({split_of[family]})")


def _save(grid, out_png, dpi: int) -> None:
    with atomic_path(out_png) as tmp:
        grid.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(grid.figure)


def plot_curves(curves: pd.DataFrame, out_png, style: dict, reference: dict | None = None, title: str = "",
                families: list[str] | None = None, methods: list[str] | None = None,
                metric: str = "return", label: str = "return") -> None:
    """The ``metric`` column (y axis named ``label``) of the headline stage vs meta-training env
    steps; mean ± spread over seeds, one panel per (split, family); optional reference lines per
    family. ``families`` and ``methods`` restrict the figure to a subset (e.g. an ablation study)."""
    apply_style(style)
    require_metric(curves, metric)
    data = curves[curves.stage == FINAL_STAGE].copy()
    for column, keep in (("family", families), ("method", methods)):
        if keep:
            missing = sorted(set(keep) - set(data[column]))
            if missing:
                raise ValueError(f"{column} {missing} not in the curves; present: {sorted(data[column].unique())}")
            data = data[data[column].isin(keep)]
    # seeds may differ slightly in env steps (early terminations): align them on the iteration
    data["env_steps"] = data.groupby(["family", "method", "iteration"])["env_steps"].transform("mean")
    grid = sns.relplot(data=data, x="env_steps", y=metric, hue="method", hue_order=methods, **_facets(data),
                       kind="line", marker="o", errorbar=ERRORBAR[style["spread"]],  # marker: one-point curves show
                       facet_kws={"sharey": False, "sharex": False}, height=3.2, aspect=1.3)
    _title_panels(grid, data)
    if reference:
        for key, ax in grid.axes_dict.items():
            family = key[1] if isinstance(key, tuple) else key
            if family in reference["values"]:
                line = ax.axhline(reference["values"][family], ls="--", color="black", lw=1, label=reference["label"])
                ax.legend(handles=[line], loc="lower right", fontsize="small")
    grid.set_axis_labels("meta-training env steps", label)
    if title:
        grid.figure.suptitle(title, y=1.02)
    _save(grid, out_png, style["dpi"])


def stages_grid(evals: pd.DataFrame, style: dict, metric: str = "return", label: str = "return") -> sns.FacetGrid:
    """The figure of ``plot_stages``, unsaved. Each panel's x axis holds its own family's stages
    in their order: families differ in how many they have (3 trajectories vs 20)."""
    apply_style(style)
    require_metric(evals, metric)
    per_seed = evals.groupby(["family", "split", "method", "seed", "stage"], as_index=False)[metric].mean()
    per_seed = per_seed[per_seed.stage != FINAL_STAGE]
    order = [s for s in stage_order(evals) if s != FINAL_STAGE]
    methods = sorted(per_seed.method.unique())
    palette = dict(zip(methods, sns.color_palette(n_colors=len(methods)), strict=True))

    def draw(data: pd.DataFrame, **_) -> None:
        present = set(data.stage)
        sns.pointplot(data=data, x="stage", y=metric, hue="method", hue_order=methods, palette=palette,
                      order=[s for s in order if s in present], errorbar=ERRORBAR[style["spread"]],
                      dodge=0.3 if len(methods) > 1 else False, ax=plt.gca())

    grid = sns.FacetGrid(per_seed, **_facets(per_seed), sharex=False, sharey=False, height=3.2, aspect=1.3)
    grid.map_dataframe(draw)
    _title_panels(grid, per_seed)
    grid.set_axis_labels("evaluation stage", label)
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=45)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    grid.add_legend(legend_data={m: plt.Line2D([], [], color=palette[m], marker="o") for m in methods},
                    title="method")
    return grid


def plot_stages(evals: pd.DataFrame, out_png, style: dict, title: str = "", metric: str = "return",
                label: str = "return") -> None:
    """The ``metric`` column (named ``label``) at each evaluation stage (episode k, adaptation
    trajectory k, fast update k), one panel per (split, family)."""
    grid = stages_grid(evals, style, metric, label)
    if title:
        grid.figure.suptitle(title, y=1.02)
    _save(grid, out_png, style["dpi"])


def load_reference(path) -> dict | None:
    return json.loads(open(path).read()) if path else None
