"""`metarl publish`: copy a finished run's reference results from ``results/`` into
``docs/results/`` for the README: the claims table, every experiment's table and main figures,
E5's matrix, and the run's cost (`metarl bench dag`), with a MANIFEST naming the commit and the
scale they came from. The pipeline never reads ``docs/results/``, so a fresh clone still trains
everything; publishing is the one documented way those files change.

``--experiments E5`` publishes part of a run into an existing publication: the named experiments'
files and claim rows are replaced, every other experiment's are kept as they were published, and
the MANIFEST keeps the earlier one's provenance below the new, and the top-level cost.txt is
recomputed from every experiment's own (`metarl bench dag --combine`). That is how a quick DAG too
long for one machine session is published experiment by experiment.
"""
from __future__ import annotations

import argparse
import datetime
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd

#: per experiment, what is published (whichever of them the run produced)
EXPERIMENT_FILES = ("table.md", "matrix.md", "figures/curves.png", "figures/stages.png", "figures/heatmap.png",
                    "figures/adaptation.png", "figures/belief_vate.png", "figures/ablation.png",
                    "figures/prior_samples.png")


def _commit(repo: Path) -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def _runs(results: Path) -> str:
    """The finished runs behind the tables, e.g. ``E1 15 (gridworld: 15), E3 3 (sparse_point_robot: 3)``,
    so a run of part of the DAG says which part; claims over experiments it lacks read *missing*."""
    counts = {}
    for eval_csv in sorted(results.glob("E[0-9]*/runs/*/*/seed*/eval.csv")):
        experiment, family = eval_csv.parts[-6], eval_csv.parts[-4]
        counts.setdefault(experiment, {}).setdefault(family, 0)
        counts[experiment][family] += 1
    if not counts:
        return "none"
    return ", ".join(f"{e} {sum(f.values())} ({', '.join(f'{k}: {n}' for k, n in f.items())})"
                     for e, f in counts.items())


def _cost_reports(results: Path, experiments, whole: bool) -> dict[str, str]:
    """`metarl bench dag`'s report per experiment (no target verdict: the targets are the whole
    DAG's) and, if ``whole``, over all of them, judged against them. An experiment's jobs are those
    of the runs its results hold (``evals.csv``), so that benchmark files of runs no longer in the
    config are left out; without ``evals.csv``, every benchmark file of the experiment counts."""
    if not (results / "benchmarks").is_dir():
        return {}
    from metarl import bench_dag

    jobs = bench_dag.read_benchmarks(results / "benchmarks")
    jobs["resumed_from"] = bench_dag.resumed_from(jobs, results / "logs")
    experiment_of = jobs["job"].str.split("/").str[1]
    selected, notes = {}, {}
    for experiment in experiments:
        mine, notes[experiment] = jobs[experiment_of == experiment], ""
        evals = results / experiment / "evals.csv"
        if evals.exists():
            runs = pd.read_csv(evals, usecols=["family", "method", "seed"]).drop_duplicates()
            keys = {f"{experiment}/{family}/{method}/seed{seed}" for family, method, seed in runs.itertuples(index=False)}
            mine, unmeasured = bench_dag.only_runs(mine, keys)
            if unmeasured:
                notes[experiment] = "\n\n" + bench_dag.unmeasured_note(unmeasured, len(keys))
        if len(mine):
            selected[experiment] = mine
    reports = {}
    if whole and selected:
        reports["cost.txt"] = (bench_dag.report(pd.concat(selected.values(), ignore_index=True), 10, 4.0, 30.0)
                               + "".join(notes.values()))
    for experiment, mine in selected.items():
        reports[f"{experiment}/cost.txt"] = bench_dag.report(mine, 10, None, None) + notes[experiment]
    return reports


def _markdown_table(path: Path) -> pd.DataFrame:
    """The table of a claims.md written by `claims.claims_markdown` (pipe table, one row a line)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    cells = lambda line: [cell.strip() for cell in line.strip().strip("|").split("|")]  # noqa: E731
    if len(lines) < 2:
        raise SystemExit(f"{path}: no claims table in it; publish every experiment (without --experiments)")
    header = cells(lines[0])
    rows = [cells(line) for line in lines[2:]]
    for row in rows:
        if len(row) != len(header):
            raise SystemExit(f"{path}: a row has {len(row)} cells, the header {len(header)} ({row[0]}); "
                             "publish every experiment (without --experiments)")
    return pd.DataFrame(rows, columns=header)


def merge_claims(new: pd.DataFrame, published: pd.DataFrame, experiments) -> pd.DataFrame:
    """Display rows in the order of ``new`` (a run's claims.csv): the rows of ``experiments`` from it,
    every other claim's rows as ``published`` shows them. A kept claim must still expand to the same
    comparisons (metric, split, stage, family and operator), or its published verdict would be about
    another claim."""
    from metarl.analysis import claims

    shown = claims.display_table(new)
    earlier = {claim: rows for claim, rows in published.groupby("claim", sort=False)}
    parts = []
    for claim, index in new.groupby("id", sort=False).groups.items():
        experiment = new.loc[index[0], "experiment"]
        if experiment in experiments:
            parts.append(shown.loc[index])
            continue
        kept = earlier.get(claim)
        if kept is None or len(kept) != len(index) or \
                list(kept["metric"]) != list(shown.loc[index, "metric"]) or list(kept["op"]) != list(shown.loc[index, "op"]):
            raise SystemExit(f"claim {claim} ({experiment}) is not published as the config states it now; "
                             f"republish {experiment} too (--experiments {experiment} ...)")
        parts.append(kept)
    return pd.concat(parts, ignore_index=True)[list(shown.columns)]


def publish(results: Path, out: Path, scale: str, repo: Path, note: str = "", experiments=None) -> list[Path]:
    """Copy the files into a fresh ``out`` (replaced as a whole, so nothing stale survives); with
    ``experiments``, replace only those experiments' files and claim rows in an existing ``out``."""
    claims = results / "claims.md"
    if not claims.exists():
        raise SystemExit(f"{claims} not found: run the pipeline (`snakemake --cores N`) before publishing")
    present = sorted(path.name for path in results.glob("E[0-9]*") if path.is_dir())
    if experiments:
        missing = sorted(set(experiments) - set(present))
        if missing:
            raise SystemExit(f"--experiments {' '.join(missing)}: not in {results}")
        if not (out / "claims.md").exists() or not (out / "MANIFEST.md").exists():
            raise SystemExit(f"{out} holds no publication (claims.md, MANIFEST.md): --experiments updates an "
                             "earlier one; publish every experiment first")
        earlier_scale = re.search(r"^- scale: `(.*)`$", (out / "MANIFEST.md").read_text(), re.MULTILINE)
        if earlier_scale is None or earlier_scale.group(1) != scale:
            raise SystemExit(f"{out} was published at scale {earlier_scale.group(1) if earlier_scale else '(unknown)'}, "
                             f"not {scale}: one publication holds one scale; publish every experiment")
    published = sorted(experiments) if experiments else present
    sources = [path for experiment in published for name in EXPERIMENT_FILES
               if (path := results / experiment / name).exists()]
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    if experiments:
        shutil.copytree(out, staging)
        for experiment in published:
            shutil.rmtree(staging / experiment, ignore_errors=True)
    else:
        sources.insert(0, claims)
    copied = []
    for source in sources:
        target = staging / source.relative_to(results)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(target.relative_to(staging))
    if experiments:
        from metarl.analysis import claims as metarl_claims

        merged = merge_claims(pd.read_csv(results / "claims.csv"), _markdown_table(out / "claims.md"), published)
        (staging / "claims.md").write_text(metarl_claims.claims_markdown(merged))
        copied.insert(0, Path("claims.md"))
    for name, text in _cost_reports(results, published, whole=not experiments).items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(text + "\n")
        copied.append(Path(name))
    if experiments:  # the whole DAG's cost: every experiment's report, this run's and the kept ones
        (staging / "cost.txt").write_text(_combined_cost(staging) + "\n")
        copied.append(Path("cost.txt"))
    listing = "\n".join(f"- `{path}`" for path in copied)
    what = (f"Experiments {', '.join(published)} updated by `metarl publish --experiments` from `{results}` on "
            if experiments else f"Copied by `metarl publish` from `{results}` on ")
    manifest = (f"# Reference results\n\n{what}{datetime.date.today().isoformat()}.\n\n- commit: `{_commit(repo)}`\n"
                f"- scale: `{scale}`\n- finished runs (evaluated), per experiment: {_runs(results)}\n\n{listing}\n"
                + (f"\n## Notes\n\n{note}\n" if note else ""))
    if experiments:     # the earlier MANIFEST below, its title dropped and its headings one level down
        earlier = [_heading_down(line) for line in (out / "MANIFEST.md").read_text().splitlines()]
        body = "\n".join(earlier[1:]).lstrip()
        manifest += (f"\n## Kept from the earlier publication (every experiment but {', '.join(published)}; "
                     f"the top-level cost.txt adds up every experiment's)\n\n{body}\n")
    (staging / "MANIFEST.md").write_text(manifest)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return copied


def _combined_cost(publication: Path) -> str:
    """`metarl bench dag --combine` over the publication's per-experiment cost.txt; experiments
    without one are named, since the total then leaves their jobs out."""
    from metarl import bench_dag

    folders = sorted(path for path in publication.iterdir() if path.is_dir() and re.fullmatch(r"E\d+", path.name))
    reports = {path.name: bench_dag.parse_report((path / "cost.txt").read_text(), str(path / "cost.txt"))
               for path in folders if (path / "cost.txt").is_file()}
    unmeasured = [path.name for path in folders if path.name not in reports]
    header = ("The whole DAG, combined from each experiment's cost.txt (each from the run named in MANIFEST.md)"
              + (f"; no cost report for {', '.join(unmeasured)}, whose jobs are not counted" if unmeasured else "")
              + ".\n\n")
    return header + (bench_dag.combine(reports, 10, 4.0, 30.0) if reports else "no experiment has a cost report")


COST_LINE = "The top-level `cost.txt` adds up every experiment's own cost.txt (`metarl publish --recompute-cost`"


def recompute_cost(out: Path) -> None:
    """Rewrite an existing publication's top-level cost.txt from its experiments' cost.txt, as a
    partial publication does (for one made before publications did), and say so in the MANIFEST."""
    manifest = out / "MANIFEST.md"
    if not manifest.exists():
        raise SystemExit(f"{manifest} not found: {out} holds no publication")
    (out / "cost.txt.tmp").write_text(_combined_cost(out) + "\n")
    (out / "cost.txt.tmp").replace(out / "cost.txt")
    title, _, rest = manifest.read_text().partition("\n\n")
    rest = "\n".join(line for line in rest.splitlines() if not line.startswith(COST_LINE)).lstrip("\n")
    manifest.write_text(f"{title}\n\n{COST_LINE}, {datetime.date.today().isoformat()}).\n\n{rest}\n")


def _heading_down(line: str) -> str:
    """A Markdown line with its heading one level deeper, at most level 6: Markdown has no deeper
    heading, and a seventh '#' would turn a heading of an old publication into plain text."""
    level = len(line) - len(line.lstrip("#"))
    if level == 0 or line[level:level + 1] not in ("", " "):
        return line
    return "#" * min(level + 1, 6) + line[level:]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="metarl publish", description=__doc__)
    parser.add_argument("--results", default="results", help="the finished run's results folder")
    parser.add_argument("--out", default="docs/results", help="where the README's reference results live")
    parser.add_argument("--scale", help="the scale the run used (recorded in the MANIFEST; required to publish)")
    parser.add_argument("--note", default="", help="how the run was made, where it was not one plain `snakemake` "
                        "(recorded in the MANIFEST)")
    parser.add_argument("--experiments", nargs="+", metavar="E",
                        help="publish only these experiments into the existing --out, keeping the others as they "
                        "were published (for a quick run made experiment by experiment)")
    parser.add_argument("--recompute-cost", action="store_true",
                        help="only rewrite --out's top-level cost.txt from its experiments' cost.txt (what every "
                        "--experiments publication does) and say so in its MANIFEST")
    args = parser.parse_args(argv)
    if args.recompute_cost:
        recompute_cost(Path(args.out))
        print(f"recomputed {Path(args.out) / 'cost.txt'} from its experiments' cost.txt")
        return
    if not args.scale:
        parser.error("--scale is required to publish")
    copied = publish(Path(args.results), Path(args.out), args.scale, Path.cwd(), args.note, args.experiments)
    print(f"published {len(copied)} files to {args.out}")


if __name__ == "__main__":
    main()
