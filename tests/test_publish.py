"""`metarl publish` copies a finished run's reference results into docs/results with a manifest,
replacing what was there, and refuses an unfinished run; `--experiments` replaces only the named
experiments' files and claim rows in an earlier publication."""
import pytest

from metarl import publish

BENCH = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_publish_copies_claims_tables_figures_and_cost(tmp_path):
    results = tmp_path / "results"
    for name, text in {"claims.md": "# claims", "E1/table.md": "| t |", "E1/figures/curves.png": "png",
                       "E5/matrix.md": "| m |", "E5/figures/heatmap.png": "png",
                       "E1/runs/gridworld/vate/seed0/eval.csv": "not published",
                       "benchmarks/train/E1/gridworld/vate/seed0.tsv": BENCH + "60.0\t0:01:00\t100\t1\t1\t1\t0\t0\t99\t59\n"}.items():
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_text(text)
    out = tmp_path / "docs" / "results"
    (out / "stale.md").parent.mkdir(parents=True)
    (out / "stale.md").write_text("from an older run")
    copied = {str(p) for p in publish.publish(results, out, "quick", tmp_path, note="E1 only")}
    assert copied == {"claims.md", "E1/table.md", "E1/figures/curves.png", "E5/matrix.md", "E5/figures/heatmap.png",
                      "cost.txt", "E1/cost.txt"}
    assert (out / "E5/matrix.md").read_text() == "| m |"
    assert not (out / "stale.md").exists() and not (out / "E1/runs").exists()
    assert "total job time 0.02 h (target ≤ 4 h: met)" in (out / "cost.txt").read_text()
    e1_cost = (out / "E1/cost.txt").read_text()
    assert "train/E1/gridworld/vate/seed0" in e1_cost   # each experiment's own jobs
    assert "target" not in e1_cost.replace("the targets apply to the whole DAG", "")   # no whole-DAG verdict on a part
    manifest = (out / "MANIFEST.md").read_text()
    assert "scale: `quick`" in manifest and "commit: `unknown (not a git checkout)`" in manifest
    assert "finished runs (evaluated), per experiment: E1 1 (gridworld: 1)\n" in manifest
    assert manifest.endswith("## Notes\n\nE1 only\n")


def test_publish_refuses_a_run_without_claims(tmp_path):
    (tmp_path / "results").mkdir()
    with pytest.raises(SystemExit, match="claims.md not found"):
        publish.publish(tmp_path / "results", tmp_path / "docs", "quick", tmp_path)


def _claims(results, rows):
    """results/claims.{csv,md} as `metarl claims` writes them, from (id, experiment, lhs mean, verdict) rows."""
    import pandas as pd

    from metarl.analysis import claims

    table = pd.DataFrame([{"id": claim, "paper": "P", "experiment": experiment, "family": "gridworld",
                           "claim": f"{claim} holds", "metric": "return", "split": "test", "stage": "final",
                           "lhs": "a", "lhs_mean": mean, "lhs_sd": 0.5 if mean is not None else None,
                           "lhs_n": 3 if mean is not None else None, "op": ">", "rhs": "b",
                           "rhs_mean": 0.0 if mean is not None else None, "rhs_sd": None, "rhs_n": None,
                           "test": None, "statistic": None, "p": 0.01 if mean is not None else None,
                           "verdict": verdict, "reason": "why"} for claim, experiment, mean, verdict in rows])
    results.mkdir(parents=True, exist_ok=True)
    claims.write_claims(table.astype({"lhs_n": "Int64", "rhs_n": "Int64"}), results / "claims")


def _write(root, files):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_publish_one_experiment_keeps_the_others_as_published(tmp_path):
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "docs" / "results"
    _claims(first, [("e1_a", "E1", 25.0, "reproduced"), ("e5_b", "E5", None, "missing")])
    _write(first, {"E1/table.md": "| E1 |", "E5/matrix.md": "| stale |", "E1/runs/gridworld/vate/seed0/eval.csv": "",
                   "benchmarks/train/E1/gridworld/vate/seed0.tsv": BENCH + "60.0\t0:01:00\t100\t1\t1\t1\t0\t0\t99\t59\n"})
    publish.publish(first, out, "quick", tmp_path, note="E1 run")
    # the second run has only E5: E1's claim reads missing there and must not replace the published one
    _claims(second, [("e1_a", "E1", None, "missing"), ("e5_b", "E5", 7.5, "not reproduced")])
    _write(second, {"E5/matrix.md": "| new |", "E5/figures/heatmap.png": "png", "E5/runs/cheetah_vel/pearl/seed0/eval.csv": "",
                    "benchmarks/train/E5/cheetah_vel/pearl/seed0.tsv": BENCH + "1800.0\t0:30:00\t100\t1\t1\t1\t0\t0\t99\t1790\n"})
    copied = {str(p) for p in publish.publish(second, out, "quick", tmp_path, note="E5 run", experiments=["E5"])}
    assert copied == {"claims.md", "E5/matrix.md", "E5/figures/heatmap.png", "E5/cost.txt", "cost.txt"}
    claims_md = (out / "claims.md").read_text()
    assert "1 reproduced, 1 not reproduced, 0 inconclusive, 0 missing." in claims_md
    e1_row, e5_row = [line for line in claims_md.splitlines() if line.startswith("| e")]
    assert "a: 25 ± 0.5 (n=3)" in e1_row and "| reproduced" in e1_row
    assert "a: 7.5 ± 0.5 (n=3)" in e5_row and "| not reproduced" in e5_row
    assert (out / "E1/table.md").read_text() == "| E1 |" and (out / "E5/matrix.md").read_text() == "| new |"
    whole = (out / "cost.txt").read_text()        # the kept E1 jobs and the new E5 ones together
    assert "total job time 0.52 h (target ≤ 4 h: met); longest job 30.0 min (target ≤ 30 min: met)" in whole
    assert "no cost report" not in whole
    parts = whole.split("Cost per part")[1].split("\n\n")[0]
    assert [line.split() for line in parts.splitlines()[2:]] == [["E1", "1", "0.017", "0.016", "1.0", "100.0"],
                                                                 ["E5", "1", "0.500", "0.497", "30.0", "100.0"]]
    assert "total job time 0.50 h; longest job 30.0 min (part of a run" in (out / "E5/cost.txt").read_text()
    manifest = (out / "MANIFEST.md").read_text()
    assert manifest.startswith("# Reference results\n\nExperiments E5 updated by `metarl publish --experiments`")
    assert "## Notes\n\nE5 run\n" in manifest and "### Notes\n\nE1 run" in manifest
    assert manifest.index("per experiment: E5 1 (cheetah_vel: 1)") < manifest.index("## Kept from the earlier")
    assert manifest.index("## Kept from the earlier") < manifest.index("per experiment: E1 1 (gridworld: 1)")


def test_publishing_part_after_part_keeps_every_manifest_heading_a_heading(tmp_path):
    """Each partial publication nests the earlier MANIFEST one heading level down; Markdown stops at
    level 6, so the oldest ones stay at 6 instead of becoming '#######' plain text."""
    out = tmp_path / "docs" / "results"
    for k in range(8):
        run = tmp_path / f"run{k}"
        _claims(run, [("e1_a", "E1", 20.0 + k, "reproduced")])
        _write(run, {"E1/table.md": f"| E1 {k} |"})
        publish.publish(run, out, "quick", tmp_path, note=f"run {k}", experiments=None if k == 0 else ["E1"])
    lines = (out / "MANIFEST.md").read_text().splitlines()
    assert not [line for line in lines if line.startswith("#######")]
    notes = [line for line in lines if line.lstrip("#") == " Notes"]
    assert [len(line) - len(" Notes") for line in notes] == [2, 3, 4, 5, 6, 6, 6, 6]
    assert lines.count("run 0") == 1 and lines.count("run 7") == 1


def test_publish_one_experiment_refuses_a_kept_claim_the_config_now_states_differently(tmp_path):
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "docs" / "results"
    _claims(first, [("e1_a", "E1", 25.0, "reproduced"), ("e5_b", "E5", None, "missing")])
    publish.publish(first, out, "quick", tmp_path)
    _claims(second, [("e1_a", "E1", None, "missing"), ("e1_a", "E1", None, "missing"), ("e5_b", "E5", 7.5, "reproduced")])
    _write(second, {"E5/matrix.md": "| new |"})
    before = (out / "claims.md").read_text()
    with pytest.raises(SystemExit, match=r"claim e1_a \(E1\).*--experiments E1"):
        publish.publish(second, out, "quick", tmp_path, experiments=["E5"])
    with pytest.raises(SystemExit, match="--experiments E4: not in"):
        publish.publish(second, out, "quick", tmp_path, experiments=["E4"])
    with pytest.raises(SystemExit, match="published at scale quick, not paper"):
        publish.publish(second, out, "paper", tmp_path, experiments=["E5"])
    assert (out / "claims.md").read_text() == before and not (out / "E5").exists()


def test_recompute_cost_adds_up_a_publications_experiments(tmp_path):
    """An older publication's top-level cost.txt is rewritten from its experiments' own reports,
    and the MANIFEST says so once however often it is run."""
    from metarl import bench_dag

    out = tmp_path / "docs" / "results"
    _write(out, {"MANIFEST.md": "# Reference results\n\nCopied on 2026-01-01.\n\n- scale: `quick`\n",
                 "cost.txt": "stale", "E1/table.md": "| E1 |", "E4/table.md": "| E4 |"})
    for experiment, seconds in (("E1", 600.0), ("E2", 2400.0)):
        bench = tmp_path / experiment / "train" / experiment / "f" / "m" / "seed0.tsv"
        bench.parent.mkdir(parents=True)
        bench.write_text(BENCH + f"{seconds}\t0:10:00\t100\t1\t1\t1\t0\t0\t99\t{seconds - 5}\n")
        report = bench_dag.report(bench_dag.read_benchmarks(tmp_path / experiment), 10, None, None)
        _write(out, {f"{experiment}/cost.txt": report})
    for _ in range(2):
        publish.main(["--out", str(out), "--recompute-cost"])
    whole = (out / "cost.txt").read_text()
    assert whole.startswith("The whole DAG, combined from each experiment's cost.txt")
    assert "no cost report for E4, whose jobs are not counted" in whole
    assert "total job time 0.83 h (target ≤ 4 h: met); longest job 40.0 min (target ≤ 30 min: MISSED)" in whole
    manifest = (out / "MANIFEST.md").read_text()
    assert manifest.count(publish.COST_LINE) == 1 and manifest.startswith("# Reference results\n\n" + publish.COST_LINE)
    assert manifest.endswith(").\n\nCopied on 2026-01-01.\n\n- scale: `quick`\n")
    with pytest.raises(SystemExit, match="MANIFEST.md not found"):
        publish.main(["--out", str(tmp_path / "nothing"), "--recompute-cost"])


def test_published_cost_counts_only_the_runs_published(tmp_path):
    """Benchmark files outlive config edits; the published cost counts the runs the experiment's
    results hold (evals.csv) and names a run that has no file, in its report and in the whole's."""
    results, out = tmp_path / "results", tmp_path / "docs" / "results"
    row = "\t0\t100\t1\t1\t1\t0\t0\t99\t"
    _claims(results, [("e1_a", "E1", 25.0, "reproduced")])
    _write(results, {"E1/table.md": "| E1 |",
                     "E1/evals.csv": "experiment,family,method,seed,return\nE1,gridworld,vate,0,1.0\nE1,gridworld,vate,1,2.0\n",
                     "benchmarks/train/E1/gridworld/vate/seed0.tsv": BENCH + "60.0" + row + "59\n",
                     "benchmarks/train/E1/gridworld/vate/seed5.tsv": BENCH + "3600.0" + row + "3590\n"})  # an old config's
    publish.publish(results, out, "quick", tmp_path)
    for name in ("E1/cost.txt", "cost.txt"):
        text = (out / name).read_text()
        assert "seed5" not in text and "total job time 0.02 h" in text, name
        assert "1 of the 2 runs have no benchmark file (not counted): E1/gridworld/vate/seed1" in text, name
    from metarl import bench_dag

    combined = bench_dag.combine({"E1": bench_dag.parse_report((out / "E1/cost.txt").read_text())}, 10, 4.0, 30.0)
    assert "E1: 1 of the 2 runs have no benchmark file" in combined
