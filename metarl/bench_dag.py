"""`metarl bench dag`: what a pipeline run cost, from the files Snakemake's ``benchmark:``
directive writes per job (results/benchmarks/<rule>/...tsv: wall seconds ``s``, ``cpu_time``
in seconds, ``max_rss`` in MB). Prints totals per rule and overall, the longest jobs, and
whether the quick scale's targets (total job time ≤ 4 CPU-hours, longest job ≤ 30 min) hold.
The targets are checked on wall time: Snakemake samples ``cpu_time`` every 30 s, so it misses
the CPU time after a job's last sample (most of it for jobs shorter than that). A job that
resumed from a checkpoint (its log, results/logs/<rule>/..., says so) was timed only from there;
the report names those jobs, since their earlier attempt's time is in no benchmark file.

``--combine`` adds up such reports instead, one per part of a DAG run separately (an experiment
run on its own, on another machine or at another commit): the whole DAG's cost and its targets.
A report's tables are complete sums and maxima, and the longest jobs of the whole are among each
part's longest, so the combination equals the report over every job, up to the parts' rounding."""
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


RUN = re.compile(r"(?:^|/)(E\d+)/runs/([^/]+)/([^/]+)/(seed\d+)(?:/|$)")


def run_key(path: str) -> str:
    """``.../results/E1/runs/gridworld/vate/seed0[/eval.csv]`` -> ``E1/gridworld/vate/seed0``, the
    part of a job's name after its rule."""
    found = RUN.search(str(path))
    if found is None:
        raise SystemExit(f"--runs: {path} is not a run's folder or a file in one (results/<E>/runs/<family>/<method>/seed<k>)")
    return "/".join(found.groups())


def only_runs(jobs: pd.DataFrame, keys) -> tuple[pd.DataFrame, list[str]]:
    """The jobs of the runs ``keys`` (``E1/gridworld/vate/seed0``, as `run_key` gives), and those
    of the runs that have no benchmark file."""
    keys = set(keys)
    measured = jobs["job"].str.split("/", n=1).str[1]
    return jobs[measured.isin(keys)].reset_index(drop=True), sorted(keys - set(measured))


def unmeasured_note(unmeasured: list[str], runs: int) -> str:
    return f"{len(unmeasured)} of the {runs} runs have no benchmark file (not counted): " + ", ".join(unmeasured)


def per_rule(jobs: pd.DataFrame) -> pd.DataFrame:
    table = jobs.groupby("rule").agg(jobs=("job", "count"), wall_h=("s", "sum"), cpu_h=("cpu_time", "sum"),
                                     longest_min=("s", "max"), max_rss_mb=("max_rss", "max"))
    table[["wall_h", "cpu_h"]] /= 3600
    table["longest_min"] /= 60
    total = pd.DataFrame({"jobs": [len(jobs)], "wall_h": [jobs["s"].sum() / 3600], "cpu_h": [jobs["cpu_time"].sum() / 3600],
                          "longest_min": [jobs["s"].max() / 60], "max_rss_mb": [jobs["max_rss"].max()]}, index=["total"])
    return pd.concat([table, total]).round(3)


RULES_TITLE = "Cost per rule (wall_h: sum of job wall times; cpu_h: sum of CPU time; max RSS in MB):"
PARTS_TITLE = "Cost per part (each from its own report, of a separate run):"
PART_OF_RUN = "part of a run: the targets apply to the whole DAG"
# how the columns of a per-rule table add up over rules or parts
ADD_UP = {"jobs": "sum", "wall_h": "sum", "cpu_h": "sum", "longest_min": "max", "max_rss_mb": "max"}


def _totals(total_h: float, cpu_h: float, longest_min: float, max_total_hours: float | None,
            max_job_minutes: float | None, untargeted: str = PART_OF_RUN) -> list[str]:
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    if max_total_hours is None or max_job_minutes is None:
        line = f"total job time {total_h:.2f} h; longest job {longest_min:.1f} min ({untargeted})"
    else:
        line = (f"total job time {total_h:.2f} h (target ≤ {max_total_hours:g} h: {verdict(total_h <= max_total_hours)}); "
                f"longest job {longest_min:.1f} min (target ≤ {max_job_minutes:g} min: "
                f"{verdict(longest_min <= max_job_minutes)})")
    return [line, f"CPU time {cpu_h:.2f} h in all (sampled every 30 s: a lower bound)"]


def _render(rules: pd.DataFrame, longest: pd.DataFrame, totals: list[str], resumed: list[str]) -> str:
    return "\n".join([RULES_TITLE, rules.to_string(), "",
                      f"Longest {len(longest)} jobs:", longest.to_string(index=False), "", *totals] + resumed)


def report(jobs: pd.DataFrame, top: int, max_total_hours: float | None, max_job_minutes: float | None,
           untargeted: str = PART_OF_RUN) -> str:
    """The cost tables and a totals line; the totals are judged against the targets only when
    both are given (they are the whole DAG's, so a part of it - one experiment - gets none, and
    ``untargeted`` says why)."""
    longest = jobs.nlargest(top, "s")[["job", "s", "cpu_time", "max_rss"]]
    longest = longest.assign(minutes=(longest["s"] / 60).round(2), cpu_minutes=(longest["cpu_time"] / 60).round(2))
    resumed = []
    if "resumed_from" in jobs and jobs["resumed_from"].notna().any():
        rows = jobs[jobs["resumed_from"].notna()]
        resumed = ["", f"{len(rows)} job(s) resumed from a checkpoint, timed only after it (their earlier time is "
                   "not counted): " + ", ".join(f"{job} (from iteration {int(it)})"
                                                for job, it in zip(rows["job"], rows["resumed_from"]))]
    return _render(per_rule(jobs), longest[["job", "minutes", "cpu_minutes", "max_rss"]],
                   _totals(jobs["s"].sum() / 3600, jobs["cpu_time"].sum() / 3600, jobs["s"].max() / 60,
                           max_total_hours, max_job_minutes, untargeted), resumed)


def _table(lines: list[str], start: int, index: str | None = None) -> pd.DataFrame:
    """The whitespace-separated table whose header is ``lines[start]``, down to the first blank line;
    ``index`` names the first column where the header leaves it blank (a frame's index)."""
    header = ([index] if index else []) + lines[start].split()
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        name, *values = line.split()
        rows.append([name, *(float(v) for v in values)])
    return pd.DataFrame(rows, columns=header)


def parse_report(text: str, source: str = "report") -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """A report of ``report`` read back: its per-rule table (with the total row), its longest jobs
    and its notes (the resumed jobs, the runs without a benchmark file), if any."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line == RULES_TITLE or line.startswith("Longest ")]
    if len(starts) != 2:
        raise SystemExit(f"{source}: not a `metarl bench dag` report (no '{RULES_TITLE[:13]}' and 'Longest' tables)")
    try:
        rules = _table(lines, starts[0] + 1, "rule").set_index("rule")
        longest = _table(lines, starts[1] + 1)
    except ValueError as error:
        raise SystemExit(f"{source}: a `metarl bench dag` report's table could not be read ({error})") from None
    notes = [line for line in lines if "resumed from a checkpoint" in line or "have no benchmark file" in line]
    return rules, longest, notes


def combine(parsed: dict[str, tuple], top: int, max_total_hours: float | None, max_job_minutes: float | None) -> str:
    """One report for the parts' reports ``{part: parse_report(text)}`` together: totals per part,
    per rule and overall, and the longest ``top`` jobs of them all, judged against the targets."""
    parts = pd.DataFrame({part: rules.loc["total"] for part, (rules, _, _) in parsed.items()}).T
    rules = pd.concat([rules.drop("total") for rules, _, _ in parsed.values()]).groupby(level=0).agg(ADD_UP)
    total = parts.agg(ADD_UP)
    rules.loc["total"] = total
    rules = rules.rename_axis(None)
    for table in (parts, rules):
        table["jobs"] = table["jobs"].astype(int)
    longest = pd.concat([jobs for _, jobs, _ in parsed.values()]).sort_values("minutes", ascending=False, kind="stable")
    notes = [f"{part}: {line}" for part, (_, _, lines) in parsed.items() for line in lines]
    return "\n".join([PARTS_TITLE, parts.round(3).to_string(), "",
                      _render(rules.round(3), longest.head(top),
                              _totals(total["wall_h"], total["cpu_h"], total["longest_min"], max_total_hours,
                                      max_job_minutes), [""] + notes if notes else [])])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="metarl bench dag", description=__doc__)
    parser.add_argument("--dir", default="results/benchmarks", help="the benchmark files' root folder")
    parser.add_argument("--logs", help="the rules' log folder, to find jobs resumed from a checkpoint "
                        "(default: logs/ beside --dir)")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="REPORT",
                        help="instead of benchmark files, add up these reports of parts of the DAG (e.g. "
                        "docs/results/E*/cost.txt; a part is named by its report's folder)")
    parser.add_argument("--runs", nargs="+", metavar="PATH",
                        help="count only these runs' jobs: their folders or files in them (results/<E>/runs/"
                        "<family>/<method>/seed<k>[/eval.csv]), so that files of runs no longer in the DAG are left out")
    parser.add_argument("--no-targets", action="store_true", help="judge no target (they are the quick scale's)")
    parser.add_argument("--top", type=int, default=10, help="how many of the longest jobs to list")
    parser.add_argument("--max-total-hours", type=float, default=4.0, help="target for the summed job time")
    parser.add_argument("--max-job-minutes", type=float, default=30.0, help="target for the longest job")
    parser.add_argument("--out", help="also write the per-job table as CSV here")
    args = parser.parse_args(argv)
    if args.combine:
        if args.out:
            raise SystemExit("--out writes the per-job table, which --combine's reports do not hold")
        names = [path.parent.name for path in args.combine]
        if len(set(names)) < len(names):
            raise SystemExit(f"--combine: two reports in one folder ({', '.join(map(str, args.combine))}); "
                             "a part is named by its report's folder")
        for path in args.combine:
            if not path.is_file():
                raise SystemExit(f"--combine: {path} not found")
        parsed = {path.parent.name: parse_report(path.read_text(), f"--combine: {path}") for path in args.combine}
        print(combine(parsed, args.top, args.max_total_hours, args.max_job_minutes))
        return
    jobs = read_benchmarks(args.dir)
    keys, unmeasured = set(), []
    if args.runs:
        keys = {run_key(path) for path in args.runs}
        jobs, unmeasured = only_runs(jobs, keys)
        if jobs.empty:
            raise SystemExit(f"no benchmark file under {args.dir} belongs to the {len(keys)} runs given")
    jobs["resumed_from"] = resumed_from(jobs, args.logs or Path(args.dir).parent / "logs")
    if args.no_targets:
        print(report(jobs, args.top, None, None, "no target judged: the targets are the quick scale's"))
    else:
        print(report(jobs, args.top, args.max_total_hours, args.max_job_minutes))
    if unmeasured:
        print("\n" + unmeasured_note(unmeasured, len(keys)))
    if args.out:
        from metarl.utils.io import save_csv

        save_csv(jobs, args.out)


if __name__ == "__main__":
    main()
