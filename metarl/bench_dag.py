"""`metarl bench dag`: what a pipeline run cost, from the files Snakemake's ``benchmark:``
directive writes per job (results/benchmarks/<rule>/...tsv: wall seconds ``s``, ``cpu_time``
in seconds, ``max_rss`` in MB). Prints totals per rule and overall, the longest jobs, and
whether the quick scale's targets (total job time ≤ 4 CPU-hours, longest job ≤ 30 min) hold.
The targets are checked on wall time: Snakemake samples ``cpu_time`` every 30 s, so it misses
the CPU time after a job's last sample (most of it for jobs shorter than that). A job that
resumed from a checkpoint (its log, results/logs/<rule>/..., says so) was timed only from there;
the report names those jobs, since their earlier attempt's time is in no benchmark file."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd


def read_benchmarks(root) -> pd.DataFrame:
    """One row per job: ``rule`` (first folder under ``root``), ``job`` (path without .tsv) and
    the benchmark columns; 'NA' (a job too short to sample) becomes NaN."""
    root = Path(root)
    frames = []
    for path in sorted(root.rglob("*.tsv")):
        frame = pd.read_csv(path, sep="\t", na_values=["NA"])
        job = path.relative_to(root).with_suffix("")
        frame.insert(0, "job", str(job))
        frame.insert(0, "rule", job.parts[0])
        frames.append(frame)
    if not frames:
        raise SystemExit(f"no benchmark files (*.tsv) under {root}: run the pipeline first")
    jobs = pd.concat(frames, ignore_index=True)
    for column in ("s", "cpu_time", "max_rss"):
        jobs[column] = pd.to_numeric(jobs[column], errors="coerce")
    return jobs


RESUMED = re.compile(r"resumed from checkpoint at iteration (\d+)")


def resumed_from(jobs: pd.DataFrame, logs) -> pd.Series:
    """Per job, the iteration its run resumed from (NaN if it started afresh or has no log):
    ``metarl train`` logs the line, and a rule's log is ``<logs>/<job>.log``."""
    def iteration(job: str) -> float:
        path = Path(logs) / f"{job}.log"
        found = RESUMED.search(path.read_text(errors="replace")) if path.is_file() else None
        return float(found.group(1)) if found else float("nan")
    return jobs["job"].map(iteration)


def per_rule(jobs: pd.DataFrame) -> pd.DataFrame:
    table = jobs.groupby("rule").agg(jobs=("job", "count"), wall_h=("s", "sum"), cpu_h=("cpu_time", "sum"),
                                     longest_min=("s", "max"), max_rss_mb=("max_rss", "max"))
    table[["wall_h", "cpu_h"]] /= 3600
    table["longest_min"] /= 60
    total = pd.DataFrame({"jobs": [len(jobs)], "wall_h": [jobs["s"].sum() / 3600], "cpu_h": [jobs["cpu_time"].sum() / 3600],
                          "longest_min": [jobs["s"].max() / 60], "max_rss_mb": [jobs["max_rss"].max()]}, index=["total"])
    return pd.concat([table, total]).round(3)


def report(jobs: pd.DataFrame, top: int, max_total_hours: float | None, max_job_minutes: float | None) -> str:
    """The cost tables and a totals line; the totals are judged against the targets only when
    both are given (they are the whole DAG's, so a part of it - one experiment - gets none)."""
    longest = jobs.nlargest(top, "s")[["job", "s", "cpu_time", "max_rss"]]
    longest = longest.assign(minutes=(longest["s"] / 60).round(2), cpu_minutes=(longest["cpu_time"] / 60).round(2))
    total_h, longest_min = jobs["s"].sum() / 3600, jobs["s"].max() / 60
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    if max_total_hours is None or max_job_minutes is None:
        totals = (f"total job time {total_h:.2f} h; longest job {longest_min:.1f} min "
                  "(part of a run: the targets apply to the whole DAG)")
    else:
        totals = (f"total job time {total_h:.2f} h (target ≤ {max_total_hours:g} h: {verdict(total_h <= max_total_hours)}); "
                  f"longest job {longest_min:.1f} min (target ≤ {max_job_minutes:g} min: "
                  f"{verdict(longest_min <= max_job_minutes)})")
    lines = []
    if "resumed_from" in jobs and jobs["resumed_from"].notna().any():
        resumed = jobs[jobs["resumed_from"].notna()]
        lines = ["", f"{len(resumed)} job(s) resumed from a checkpoint, timed only after it (their earlier time is "
                 "not counted): " + ", ".join(f"{job} (from iteration {int(it)})"
                                              for job, it in zip(resumed["job"], resumed["resumed_from"]))]
    return "\n".join([
        "Cost per rule (wall_h: sum of job wall times; cpu_h: sum of CPU time; max RSS in MB):",
        per_rule(jobs).to_string(), "",
        f"Longest {len(longest)} jobs:", longest[["job", "minutes", "cpu_minutes", "max_rss"]].to_string(index=False), "",
        totals,
    ] + lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="metarl bench dag", description=__doc__)
    parser.add_argument("--dir", default="results/benchmarks", help="the benchmark files' root folder")
    parser.add_argument("--logs", help="the rules' log folder, to find jobs resumed from a checkpoint "
                        "(default: logs/ beside --dir)")
    parser.add_argument("--top", type=int, default=10, help="how many of the longest jobs to list")
    parser.add_argument("--max-total-hours", type=float, default=4.0, help="target for the summed job time")
    parser.add_argument("--max-job-minutes", type=float, default=30.0, help="target for the longest job")
    parser.add_argument("--out", help="also write the per-job table as CSV here")
    args = parser.parse_args(argv)
    jobs = read_benchmarks(args.dir)
    jobs["resumed_from"] = resumed_from(jobs, args.logs or Path(args.dir).parent / "logs")
    print(report(jobs, args.top, args.max_total_hours, args.max_job_minutes))
    if args.out:
        from metarl.utils.io import save_csv

        save_csv(jobs, args.out)


if __name__ == "__main__":
    main()
