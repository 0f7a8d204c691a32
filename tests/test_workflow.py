"""The DAG reruns only what changed: after a completed smoke run, dry runs list exactly the jobs
an edit of config.yaml should trigger."""
import json
import re
import subprocess

import pytest
import yaml
from conftest import copy_workflow

JOB = re.compile(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    wildcards: (.*)$", re.MULTILINE)
NO_WILDCARDS = re.compile(r"^(?:local)?rule (\w+):$", re.MULTILINE)


def dry_run(workdir) -> set[tuple]:
    """(rule, wildcards) of every job a plain `snakemake` would run now."""
    out = subprocess.run(["snakemake", "-n", "--cores", "2"], cwd=workdir, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = {(rule, wildcards) for rule, wildcards in JOB.findall(out.stdout)}
    ruled = {rule for rule, _ in jobs}
    return jobs | {(rule, "") for rule in NO_WILDCARDS.findall(out.stdout) if rule not in ruled}


def set_config(workdir, config):
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def smoke_config(repo_config):
    """E1 with two methods and E4 with one, at smoke scale: every rule but E2's ablation figure,
    each experiment's extra figures included, in well under a minute of training."""
    config = yaml.safe_load(yaml.safe_dump(repo_config))
    config["scale"] = "smoke"
    config["experiments"] = {name: config["experiments"][name] for name in ("E1", "E4")}
    config["experiments"]["E1"]["methods"] = ["vate", "rl2_10"]
    config["experiments"]["E4"]["methods"] = ["pearl_dir24"]
    config["claims"] = [c for c in config["claims"] if c["experiment"] in config["experiments"]]
    return config


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory, smoke_config):
    workdir = copy_workflow(tmp_path_factory.mktemp("pipeline"), smoke_config)
    out = subprocess.run(["snakemake", "--cores", "2"], cwd=workdir, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    return workdir


@pytest.fixture
def workdir(completed_run, smoke_config):
    yield completed_run
    set_config(completed_run, smoke_config)


def rules(jobs):
    return {rule for rule, _ in jobs}


def test_fresh_clone_has_work_to_do(tmp_path, repo_config):
    jobs = dry_run(copy_workflow(tmp_path, repo_config))
    trained = {w for rule, w in jobs if rule == "train"}
    for name, exp in repo_config["experiments"].items():
        if exp.get("enabled", True):
            assert any(f"experiment={name}," in w for w in trained), f"no training job for {name}"


def test_completed_run_is_up_to_date(workdir):
    assert dry_run(workdir) == set()
    for name in ["claims.md", "claims.html", "E1/table.html", "E1/table.md", "E1/figures/curves.png",
                 "E1/figures/stages.png", "E1/figures/belief_vate.png", "E4/table.html", "E4/figures/prior_samples.png",
                 "E4/figures/adaptation.png"]:
        assert (workdir / "results" / name).stat().st_size > 0
    # what the run cost: each of its 3 runs' training and evaluation job, no target judged at smoke
    cost = (workdir / "results" / "cost.txt").read_text()
    per_rule = cost.split("\n\n")[0].splitlines()[2:]
    assert [line.split()[:2] for line in per_rule] == [["evaluate", "3"], ["train", "3"], ["total", "6"]]
    assert "train/E4/dirichlet_point_robot/pearl_dir24/seed0" in cost
    assert "(no target judged: the targets are the quick scale's)" in cost and "no benchmark file" not in cost


def test_report_holds_every_table_and_figure_with_its_caption(workdir):
    out = subprocess.run(["snakemake", "--report", "report.html"], cwd=workdir, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    html = (workdir / "report.html").read_text()
    for name in ["curves.png", "stages.png", "belief_vate.png", "belief_rl2_10.png", "prior_samples.png",
                 "adaptation.png", "table.html", "claims.html", "cost.txt"]:
        assert name in html, f"{name} missing from the report"
    # the menu lists categories by name: the claims come first
    categories = json.loads(re.search(r"categories = (\{.*?\});", html).group(1))
    assert sorted(categories)[0] == "Claims"
    # the E4 caption is one Jinja template: each figure gets its own text, rendered
    assert html.count("Online adaptation on the test goals") == 1
    assert html.count("Trajectories of the seed-0 model") == 1
    assert "snakemake.wildcards" not in html


def test_learning_rate_change_reruns_only_that_method(workdir, smoke_config):
    config = yaml.safe_load(yaml.safe_dump(smoke_config))
    config["methods"]["rl2_10"]["hparams"]["lr"] = 1.234e-3
    set_config(workdir, config)
    jobs = dry_run(workdir)
    assert {w for r, w in jobs if r == "train"} == {"experiment=E1, family=gridworld, method=rl2_10, seed=0"}
    assert {w for r, w in jobs if r == "evaluate"} == {"experiment=E1, family=gridworld, method=rl2_10, seed=0"}
    assert rules(jobs) == {"train", "evaluate", "aggregate", "table", "plot_curves", "plot_stages", "belief_figure",
                           "claims", "cost", "all"}
    assert ("belief_figure", "method=rl2_10") in jobs and ("belief_figure", "method=vate") not in jobs


def test_plot_style_change_reruns_only_plotting(workdir, smoke_config):
    config = yaml.safe_load(yaml.safe_dump(smoke_config))
    config["plot"]["style"] = "ticks"
    set_config(workdir, config)
    assert rules(dry_run(workdir)) == {"plot_curves", "plot_stages", "e4_figure", "all"}


def test_new_seed_adds_only_its_jobs(workdir, smoke_config):
    config = yaml.safe_load(yaml.safe_dump(smoke_config))
    config["experiments"]["E1"]["scales"]["smoke"]["seeds"] = 2
    set_config(workdir, config)
    jobs = dry_run(workdir)
    assert {w for r, w in jobs if r == "train"} == {
        f"experiment=E1, family=gridworld, method={m}, seed=1" for m in ["vate", "rl2_10"]}
    assert all("seed=1" in w for r, w in jobs if r == "evaluate")
    assert rules(jobs) == {"train", "evaluate", "aggregate", "table", "plot_curves", "plot_stages", "claims", "cost",
                           "all"}


def test_claim_edit_reruns_only_the_claims_rule(workdir, smoke_config):
    config = yaml.safe_load(yaml.safe_dump(smoke_config))
    config["claims"][0]["text"] += " (edited)"
    set_config(workdir, config)
    assert rules(dry_run(workdir)) == {"claims", "all"}
