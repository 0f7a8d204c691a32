"""Per-experiment targets: `snakemake E1` schedules E1's jobs and nothing of other experiments."""
import re
import subprocess

import pytest
from conftest import copy_workflow

from metarl import config as metarl_config

JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", re.MULTILINE)


def scheduled(workdir, *args) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run of ``snakemake *args`` lists."""
    out = subprocess.run(["snakemake", "-n", "--cores", "1", *args], cwd=workdir, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return [(rule, next(iter(re.findall(r"    wildcards: (.*)", body)), "")) for rule, body in JOB.findall(out.stdout)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, repo_config):
    return copy_workflow(tmp_path_factory.mktemp("targets"), repo_config)


@pytest.mark.parametrize("experiment", ["E1", "E4"])
def test_experiment_target_schedules_only_that_experiment(workdir, repo_config, experiment):
    jobs = scheduled(workdir, experiment, "--config", "scale=smoke")
    config = {**repo_config, "scale": "smoke"}
    expected_runs = {f"experiment={experiment}, family={f}, method={m}, seed={s}"
                     for f, m, s in metarl_config.runs(config, experiment)}
    assert {w for r, w in jobs if r == "train"} == expected_runs
    assert {w for r, w in jobs if r == "evaluate"} == expected_runs
    families = {f for f, _, _ in metarl_config.runs(config, experiment)}
    assert {w for r, w in jobs if r == "taskset"} == {f"family={f}" for f in families}
    for rule, wildcards in jobs:  # aggregation and plots: this experiment's only
        assert "experiment=" not in wildcards or f"experiment={experiment}" in wildcards, (rule, wildcards)
    others = {"E1": {"e4_figure"}, "E4": {"bayes_optimal", "belief_figure"}}[experiment]
    assert not others & {rule for rule, _ in jobs}
    assert (experiment, "") in jobs and ("all", "") not in jobs


def test_report_target_builds_what_all_builds(tmp_path, repo_config):
    config = {**repo_config, "scale": "smoke",
              "experiments": {name: {**repo_config["experiments"][name], "methods": methods}
                              for name, methods in [("E1", ["vate"]), ("E4", ["pearl_dir24"])]},
              "claims": [c for c in repo_config["claims"] if c["experiment"] in ("E1", "E4")]}
    workdir = copy_workflow(tmp_path, config)
    everything, report = scheduled(workdir), scheduled(workdir, "report")
    assert {job for job in report if job[0] != "report"} == {job for job in everything if job[0] != "all"}
    assert {rule for rule, _ in report} >= {"train", "table", "belief_figure", "e4_figure"}
