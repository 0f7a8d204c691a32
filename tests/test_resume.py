"""Preemption safety: a training job killed midway resumes from its checkpoint (not from
scratch) and ends with exactly the result of an uninterrupted run with the same seed."""
import json
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import smoke_job

from metarl import config as metarl_config
from metarl.tasksets import write_taskset
from metarl.training import train


@pytest.fixture
def job(tmp_path, repo_config):
    spec, taskset = smoke_job(repo_config, tmp_path, "E1", "gridworld", "vate")
    spec["iterations"], spec["eval_every"] = 12, 4

    def command(name):
        return [sys.executable, "-m", "metarl", "train", "--spec", json.dumps(spec), "--taskset", str(taskset),
                "--out-dir", str(tmp_path / name), "--resume", str(tmp_path / f"{name}.resume.pt"),
                "--checkpoint-every", "0"]
    return tmp_path, command


def wait_for_iteration(proc, iteration, log):
    """Read the job's progress lines until it reports ``iteration``."""
    for line in proc.stdout:
        log.append(line)
        if f"] it {iteration}/" in line:
            return
    raise AssertionError("training ended before reaching iteration %d:\n%s" % (iteration, "".join(log)))


def assert_same_result(dir_a, dir_b):
    a, b = torch.load(dir_a / "model.pt", weights_only=True), torch.load(dir_b / "model.pt", weights_only=True)
    assert a["env_steps"] == b["env_steps"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    pd.testing.assert_frame_equal(pd.read_csv(dir_a / "curve.csv"), pd.read_csv(dir_b / "curve.csv"))
    log_a, log_b = (pd.read_csv(d / "train_log.csv").drop(columns="iteration_s") for d in (dir_a, dir_b))
    pd.testing.assert_frame_equal(log_a, log_b)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_training_resumes_to_the_same_result(job, sig):
    tmp_path, command = job
    subprocess.run(command("reference"), check=True, capture_output=True)

    log = []
    proc = subprocess.Popen(command("interrupted"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_iteration(proc, 5, log)
    proc.send_signal(sig)
    proc.stdout.read()
    assert proc.wait(timeout=120) == (-signal.SIGKILL if sig == signal.SIGKILL else 143)
    assert (tmp_path / "interrupted.resume.pt").exists()
    assert not (tmp_path / "interrupted" / "model.pt").exists(), "outputs must only appear when training completes"

    rerun = subprocess.run(command("interrupted"), check=True, capture_output=True, text=True)
    resumed = [line for line in rerun.stdout.splitlines() if "resumed from checkpoint at iteration" in line]
    assert resumed, rerun.stdout
    # the kill may land between the progress line of iteration 5 and its checkpoint
    assert int(resumed[0].split("iteration ")[1].split()[0]) >= 4
    assert "] it 1/" not in rerun.stdout, "the rerun must not start from scratch"
    assert_same_result(tmp_path / "reference", tmp_path / "interrupted")
    assert not (tmp_path / "interrupted.resume.pt").exists(), "a finished run removes its checkpoint"


def test_checkpoint_of_another_config_is_ignored(job):
    tmp_path, command = job
    stale = tmp_path / "fresh.resume.pt"
    torch.save({"spec_hash": "0" * 16}, stale)
    out = subprocess.run(command("fresh"), check=True, capture_output=True, text=True).stdout
    assert "ignoring checkpoint" in out and "] it 1/" in out


def test_evaluation_frequency_does_not_change_training(tmp_path, repo_config):
    """Learning-curve evaluations run on their own random streams: evaluating every iteration or
    only at the end trains exactly the same model."""
    config = json.loads(json.dumps(repo_config))
    config["scale"] = "smoke"
    taskset = tmp_path / "point_robot.json"
    write_taskset("point_robot", 3, taskset)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for name, eval_every in [("often", 1), ("rarely", 4)]:
        spec = metarl_config.run_spec(config, "E3", "point_robot", "pearl", 0)
        spec["iterations"], spec["eval_every"] = 4, eval_every
        train(spec, taskset, tmp_path / name, tmp_path / f"{name}.resume.pt", log=lambda line: None)
    # as a library call, train() hands the caller's signal handlers back
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    often, rarely = (torch.load(tmp_path / d / "model.pt", weights_only=True) for d in ("often", "rarely"))
    for key in often["model"]:
        assert torch.equal(often["model"][key], rarely["model"][key]), key
    log_often, log_rarely = (pd.read_csv(tmp_path / d / "train_log.csv").drop(columns="iteration_s")
                             for d in ("often", "rarely"))
    pd.testing.assert_frame_equal(log_often, log_rarely)
    curve_often, curve_rarely = (pd.read_csv(tmp_path / d / "curve.csv") for d in ("often", "rarely"))
    assert sorted(curve_often.iteration.unique()) == [1, 2, 3, 4] and list(curve_rarely.iteration.unique()) == [4]
    # the shared final evaluation draws the same noise in both runs
    pd.testing.assert_frame_equal(curve_often[curve_often.iteration == 4].reset_index(drop=True), curve_rarely)
