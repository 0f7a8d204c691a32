"""`metarl publish`: copy a finished run's reference results from ``results/`` into
``docs/results/`` for the README: the claims table, every experiment's table and main figures,
E5's matrix, and the run's cost (`metarl bench dag`), with a MANIFEST naming the commit and the
scale they came from. The pipeline never reads ``docs/results/``, so a fresh clone still trains
everything; publishing is the one documented way those files change.
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
from pathlib import Path

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


def publish(results: Path, out: Path, scale: str, repo: Path, note: str = "") -> list[Path]:
    """Copy the files into a fresh ``out`` (replaced as a whole, so nothing stale survives)."""
    claims = results / "claims.md"
    if not claims.exists():
        raise SystemExit(f"{claims} not found: run the pipeline (`snakemake --cores N`) before publishing")
    sources = [claims] + [path for experiment in sorted(results.glob("E[0-9]*")) if experiment.is_dir()
                          for name in EXPERIMENT_FILES if (path := experiment / name).exists()]
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    copied = []
    for source in sources:
        target = staging / source.relative_to(results)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(target.relative_to(staging))
    cost = ""
    if (results / "benchmarks").is_dir():
        from metarl import bench_dag

        cost = bench_dag.report(bench_dag.read_benchmarks(results / "benchmarks"), 10, 4.0, 30.0)
        (staging / "cost.txt").write_text(cost + "\n")
        copied.append(Path("cost.txt"))
    listing = "\n".join(f"- `{path}`" for path in copied)
    (staging / "MANIFEST.md").write_text(
        f"# Reference results\n\nCopied by `metarl publish` from `{results}` on "
        f"{datetime.date.today().isoformat()}.\n\n- commit: `{_commit(repo)}`\n- scale: `{scale}`\n"
        f"- finished runs (evaluated), per experiment: {_runs(results)}\n\n{listing}\n"
        + (f"\n## Notes\n\n{note}\n" if note else ""))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return copied


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="metarl publish", description=__doc__)
    parser.add_argument("--results", default="results", help="the finished run's results folder")
    parser.add_argument("--out", default="docs/results", help="where the README's reference results live")
    parser.add_argument("--scale", required=True, help="the scale the run used (recorded in the MANIFEST)")
    parser.add_argument("--note", default="", help="how the run was made, where it was not one plain `snakemake` "
                        "(recorded in the MANIFEST)")
    args = parser.parse_args(argv)
    copied = publish(Path(args.results), Path(args.out), args.scale, Path.cwd(), args.note)
    print(f"published {len(copied)} files to {args.out}")


if __name__ == "__main__":
    main()
