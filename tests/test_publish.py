"""`metarl publish` copies a finished run's reference results into docs/results with a manifest,
replacing what was there, and refuses an unfinished run."""
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
                      "cost.txt"}
    assert (out / "E5/matrix.md").read_text() == "| m |"
    assert not (out / "stale.md").exists() and not (out / "E1/runs").exists()
    assert "total job time 0.02 h" in (out / "cost.txt").read_text()
    manifest = (out / "MANIFEST.md").read_text()
    assert "scale: `quick`" in manifest and "commit: `unknown (not a git checkout)`" in manifest
    assert "finished runs (evaluated), per experiment: E1 1 (gridworld: 1)\n" in manifest
    assert manifest.endswith("## Notes\n\nE1 only\n")


def test_publish_refuses_a_run_without_claims(tmp_path):
    (tmp_path / "results").mkdir()
    with pytest.raises(SystemExit, match="claims.md not found"):
        publish.publish(tmp_path / "results", tmp_path / "docs", "quick", tmp_path)
