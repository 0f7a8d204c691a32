"""Tables of final returns (or another metric column; mean ± std over seeds) as CSV, Markdown and HTML."""
from __future__ import annotations

import pandas as pd

from metarl.analysis.aggregate import GROUP, stage_order, summarise
from metarl.utils.io import save_csv, save_text


def wide_table(summary: pd.DataFrame, stages: list[str]) -> pd.DataFrame:
    """Rows (family, split, method), one column per stage (in ``stages`` order), cells 'mean ± std'."""
    cells = summary.assign(cell=["—" if pd.isna(m) else f"{m:.3f} ± {s:.3f}" for m, s in zip(summary["mean"], summary["std"])])
    wide = cells.pivot(index=GROUP, columns="stage", values="cell")[stages].fillna("—")  # a stage some methods do not have
    seeds = summary.groupby(GROUP)["seeds"].max()
    wide.insert(0, "seeds", seeds)
    wide.columns.name = None
    return wide.reset_index()


def write_tables(evals: pd.DataFrame, prefix: str, title: str, metric: str = "return", label: str = "return") -> None:
    """The ``metric`` column per evaluation stage, named ``label`` in the Markdown and HTML."""
    summary = summarise(evals, metric)
    save_csv(summary, f"{prefix}.csv")
    wide = wide_table(summary, stage_order(evals))
    heading = label[:1].upper() + label[1:]
    save_text(f"# {title}\n\n{heading} per evaluation stage, mean ± std over seeds (each seed: mean over "
              f"the split's tasks).\n\n{wide.to_markdown(index=False)}\n", f"{prefix}.md")
    save_text(f"<h3>{title}</h3>\n<p>{heading} per evaluation stage, mean ± std over seeds.</p>\n"
              + wide.to_html(index=False, border=0, classes="table table-striped"), f"{prefix}.html")
