"""The DAG reruns only what changed: after a completed smoke run, dry runs list exactly the jobs
an edit of config.yaml should trigger."""
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
    """E1 alone with two methods at smoke scale: enough to exercise every rule quickly."""
    config = yaml.safe_load(yaml.safe_dump(repo_config))
    config["scale"] = "smoke"
    config["experiments"] = {"E1": config["experiments"]["E1"]}
    config["experiments"]["E1"]["methods"] = ["vate", "rl2_10"]
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
    for name in ["table.html", "table.md", "figures/curves.png", "figures/stages.png", "figures/belief_vate.png"]:
        assert (workdir / "results" / "E1" / name).stat().st_size > 0


def test_learning_rate_change_reruns_only_that_method(workdir, smoke_config):
    config = yaml.safe_load(yaml.safe_dump(smoke_config))
    config["methods"]["rl2_10"]["hparams"]["lr"] = 1.234e-3
    set_config(workdir, config)
    jobs = dry_run(workdir)
    assert {w for r, w in jobs if r == "train"} == {"experiment=E1, family=gridworld, method=rl2_10, seed=0"}
    assert {w for r, w in jobs if r == "evaluate"} == {"experiment=E1, family=gridworld, method=rl2_10, seed=0"}
    assert rules(jobs) == {"train", "evaluate", "aggregate", "table", "plot_curves", "plot_stages", "belief_figure", "all"}
    assert ("belief_figure", "method=rl2_10") in jobs and ("belief_figure", "method=vate") not in jobs


def test_plot_style_change_reruns_only_plotting(workdir, smoke_config):
    config = yaml.safe_load(yaml.safe_dump(smoke_config))
    config["plot"]["style"] = "ticks"
    set_config(workdir, config)
    assert rules(dry_run(workdir)) == {"plot_curves", "plot_stages", "all"}


def test_new_seed_adds_only_its_jobs(workdir, smoke_config):
    config = yaml.safe_load(yaml.safe_dump(smoke_config))
    config["experiments"]["E1"]["scales"]["smoke"]["seeds"] = 2
    set_config(workdir, config)
    jobs = dry_run(workdir)
    assert {w for r, w in jobs if r == "train"} == {
        f"experiment=E1, family=gridworld, method={m}, seed=1" for m in ["vate", "rl2_10"]}
    assert all("seed=1" in w for r, w in jobs if r == "evaluate")
    assert rules(jobs) == {"train", "evaluate", "aggregate", "table", "plot_curves", "plot_stages", "all"}
