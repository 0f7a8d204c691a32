"""E5's methods × families matrix under the common adaptation protocol (metarl.protocol).

A cell is one (family, evaluation split, method): the return of the episode played after K
consumed episodes (stage ``final``), mean ± sd over seeds of the per-seed mean over the split's
test tasks. Its normalised score is (mean − random) / (best − random), with ``random`` the
baseline method's mean (a uniformly random policy, measured on the same tasks) and ``best`` the
highest mean of the other methods on that family and split: 0 = random, 1 = best, both measured.
A cell that is not run says why (``experiments.E5.not_run`` or a missing result), never blank.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from metarl.analysis.aggregate import seed_means
from metarl.analysis.plots import ERRORBAR, MAX_COLUMNS, _save, apply_style
from metarl.methods import FINAL_STAGE
from metarl.protocol import CONSUMED_PREFIX
from metarl.utils.io import atomic_path, save_csv, save_text

CELL_COLUMNS = ["family", "split", "method", "mean", "sd", "seeds", "score", "status"]


def matrix_plan(config: dict, experiment: str, baseline: str) -> dict:
    """What the matrix needs from the config: families with their evaluation splits, methods,
    the (family, method) cells run and why the others are not; nothing else, so that editing a
    hyper-parameter reruns the matrix only through its results."""
    from metarl.config import protocol_episodes, runs, scale_families, splits

    exp, families = config["experiments"][experiment], scale_families(config, experiment)
    if baseline not in exp["methods"]:
        raise ValueError(f"matrix baseline {baseline!r} is not among {experiment}'s methods {exp['methods']}")
    return {"families": {f: splits(exp, f)["eval_splits"] for f in families}, "methods": exp["methods"],
            "runs": sorted({(f, m) for f, m, _ in runs(config, experiment)}), "not_run": exp.get("not_run", {}),
            "baseline": baseline, "episodes": {f: protocol_episodes(exp, f) for f in families}}


def build_matrix(evals: pd.DataFrame, plan: dict) -> pd.DataFrame:
    """One row per (family, split, method) of the plan with ``CELL_COLUMNS``."""
    per_seed = seed_means(evals[evals["stage"] == FINAL_STAGE])
    stats = per_seed.groupby(["family", "split", "method"])["return"].agg(["mean", "std", "count"])
    ran = {tuple(r) for r in plan["runs"]}
    rows = []
    for family, family_splits in plan["families"].items():
        for split in family_splits:
            for method in plan["methods"]:
                row = {"family": family, "split": split, "method": method, "mean": np.nan, "sd": np.nan,
                       "seeds": 0, "score": np.nan}
                if (family, method) not in ran:
                    reason = plan["not_run"].get(method, {}).get(family)
                    row["status"] = f"not run: {reason}" if reason else "not run: not configured for this family"
                elif (family, split, method) not in stats.index:
                    row["status"] = "missing: no evaluation results"
                else:
                    mean, sd, n = stats.loc[(family, split, method)]
                    row.update(mean=mean, sd=sd if n > 1 else np.nan, seeds=int(n), status="ok")
                rows.append(row)
    matrix = pd.DataFrame(rows, columns=CELL_COLUMNS)
    return _normalise(matrix, plan["baseline"])


def _normalise(matrix: pd.DataFrame, baseline: str) -> pd.DataFrame:
    for (family, split), cells in matrix.groupby(["family", "split"]):
        random = cells.loc[cells["method"] == baseline, "mean"]
        others = cells.loc[(cells["method"] != baseline) & (cells["status"] == "ok"), "mean"]
        if random.isna().all() or others.empty:
            continue  # no measured zero or one: scores stay undefined
        zero, one = float(random.iloc[0]), float(others.max())
        if one <= zero:
            continue  # no method beats the random policy: the scale is undefined
        measured = cells.index[cells["status"] == "ok"]
        matrix.loc[measured, "score"] = (matrix.loc[measured, "mean"] - zero) / (one - zero)
    return matrix


def wide_matrix(matrix: pd.DataFrame) -> pd.DataFrame:
    """Rows methods, one column per family · split, cells 'mean ± sd [score]' or the reason."""
    def cell(row) -> str:
        if row["status"] != "ok":
            return row["status"]
        spread = "" if pd.isna(row["sd"]) else f" ± {row['sd']:.3g}"
        score = "" if pd.isna(row["score"]) else f" [{row['score']:.2f}]"
        return f"{row['mean']:.3g}{spread}{score} (n={row['seeds']})"

    labelled = matrix.assign(column=matrix["family"] + " · " + matrix["split"], cell=matrix.apply(cell, axis=1))
    order = list(dict.fromkeys(labelled["column"]))
    wide = labelled.pivot(index="method", columns="column", values="cell")[order]
    wide = wide.reindex(list(dict.fromkeys(matrix["method"])))
    wide.columns.name = None
    return wide.reset_index()


def write_matrix(matrix: pd.DataFrame, prefix: str, title: str, episodes: dict[str, int]) -> None:
    """``prefix``.csv (long form), .md and .html (methods × family · split)."""
    save_csv(matrix, f"{prefix}.csv")
    protocol = ", ".join(f"{family} K = {k - 1}" for family, k in episodes.items())
    text = (f"Return of the episode played after consuming K episodes of each test task (the common "
            f"protocol; {protocol}), mean ± sd over seeds of the mean over the split's tasks; in brackets "
            f"the normalised score, 0 = the random policy, 1 = the best method on that family and split.")
    wide = wide_matrix(matrix)
    save_text(f"# {title}\n\n{text}\n\n{wide.to_markdown(index=False)}\n", f"{prefix}.md")
    save_text(f"<h3>{title}</h3>\n<p>{text}</p>\n" + wide.to_html(index=False, border=0, classes="table table-striped"),
              f"{prefix}.html")


def plot_heatmap(matrix: pd.DataFrame, out_png, style: dict, title: str = "") -> None:
    """Normalised scores, methods × (family · split); cells without a score are labelled why."""
    apply_style(style)
    labelled = matrix.assign(column=matrix["family"] + "\n" + matrix["split"])
    order = list(dict.fromkeys(labelled["column"]))
    methods = list(dict.fromkeys(matrix["method"]))
    scores = labelled.pivot(index="method", columns="column", values="score").reindex(index=methods, columns=order)
    status = labelled.pivot(index="method", columns="column", values="status").reindex(index=methods, columns=order)
    notes = np.where(scores.notna(), scores.map(lambda v: f"{v:.2f}"),
                     status.map(lambda s: "n/a" if s == "ok" else s.split(":")[0]))
    fig, ax = plt.subplots(figsize=(1.4 * len(order) + 2.5, 0.55 * len(methods) + 1.8))
    sns.heatmap(scores, annot=notes, fmt="", cmap="viridis", vmin=0.0, vmax=1.0, ax=ax,
                cbar_kws={"label": "normalised score (0 = random, 1 = best)"}, mask=scores.isna())
    ax.set_facecolor("#e6e6e6")  # cells without a score
    for (i, j), note in np.ndenumerate(notes):  # annotations of masked cells are not drawn by seaborn
        if pd.isna(scores.iat[i, j]):
            ax.text(j + 0.5, i + 0.5, note, ha="center", va="center", fontsize="small", color="#444444")
    ax.set_xlabel("")
    ax.set_ylabel("")
    if title:
        ax.set_title(title)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=style["dpi"], format="png", bbox_inches="tight")
    plt.close(fig)


def plot_adaptation(evals: pd.DataFrame, out_png, style: dict, title: str = "") -> None:
    """Return vs episodes consumed (k = 0 … K) per method, one panel per family · split (families
    name their splits differently, so a split-by-family grid would be mostly empty)."""
    apply_style(style)
    data = evals[evals["stage"].str.startswith(CONSUMED_PREFIX)].copy()
    data["episodes consumed"] = data["stage"].str.removeprefix(CONSUMED_PREFIX).astype(int)
    per_seed = data.groupby(["family", "split", "method", "seed", "episodes consumed"], as_index=False)["return"].mean()
    per_seed["panel"] = per_seed["family"] + " · " + per_seed["split"]
    grid = sns.relplot(data=per_seed, x="episodes consumed", y="return", hue="method", col="panel",
                       col_wrap=min(MAX_COLUMNS, per_seed["panel"].nunique()), kind="line", marker="o",
                       errorbar=ERRORBAR[style["spread"]], facet_kws={"sharey": False, "sharex": False},
                       height=3.2, aspect=1.3)
    grid.set_titles("{col_name}")
    for ax in grid.axes.flat:
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        grid.figure.suptitle(title, y=1.02)
    _save(grid, out_png, style["dpi"])
