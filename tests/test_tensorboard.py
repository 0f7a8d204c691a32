"""TensorBoard mirror of training: the event files hold exactly train_log.csv's scalars and the
learning-curve evaluations (read back with TensorBoard's own reader), a resumed run shows no
step twice, and training runs on without the tensorboard package."""
import subprocess
import sys

import pandas as pd
import pytest
from conftest import copy_workflow, smoke_job

from metarl.methods.pearl import PEARL
from metarl.training import train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

RUN_COLUMNS = ["experiment", "family", "method", "seed", "iteration", "env_steps"]


class SimulatedCrash(Exception):
    pass


@pytest.fixture
def job(tmp_path, repo_config):
    spec, taskset = smoke_job(repo_config, tmp_path, "E3", "point_robot", "pearl")
    spec["iterations"], spec["eval_every"] = 6, 2

    def run(**kwargs):
        lines = []
        train(spec, taskset, tmp_path / "run", tmp_path / "run.resume.pt", checkpoint_every_s=0, log=lines.append,
              tensorboard_dir=tmp_path / "tb" / "E3" / "point_robot" / "pearl" / "seed0", **kwargs)
        return lines
    return tmp_path, run


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series as TensorBoard shows it: (step, value) in order."""
    accumulator = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def expected_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """The same series built from the CSV files, the run's source of truth."""
    log = pd.read_csv(run_dir / "train_log.csv")
    expected = {f"train/{column}": list(zip(log.env_steps, log[column], strict=True))
                for column in log.columns if column not in RUN_COLUMNS}
    curve = pd.read_csv(run_dir / "curve.csv")
    for (split, stage), rows in curve.groupby(["split", "stage"]):
        expected[f"eval_{split}/{stage}"] = list(zip(rows.env_steps, rows["return"], strict=True))
    return expected


def assert_same_series(actual, expected):
    assert sorted(actual) == sorted(expected)
    for tag, series in expected.items():
        assert [step for step, _ in actual[tag]] == [step for step, _ in series], tag
        # event files store float32
        assert [value for _, value in actual[tag]] == pytest.approx([value for _, value in series], rel=1e-6), tag


def test_event_files_hold_the_csv_scalars(job):
    tmp_path, run = job
    run()
    actual = read_scalars(tmp_path / "tb" / "E3" / "point_robot" / "pearl" / "seed0")
    expected = expected_scalars(tmp_path / "run")
    assert {"train/q_loss", "train/return", "train/iteration_s", "eval_test/final"} <= set(expected)
    assert len(expected["eval_test/final"]) == 3
    assert_same_series(actual, expected)


def test_resumed_run_shows_each_step_once(job, monkeypatch):
    tmp_path, run = job
    original, calls = PEARL.train_iteration, []

    def train_iteration(self):
        calls.append(1)
        if len(calls) == 5:
            raise SimulatedCrash
        return original(self)
    with monkeypatch.context() as patch:
        patch.setattr(PEARL, "train_iteration", train_iteration)
        with pytest.raises(SimulatedCrash):
            run()
    # iterations 1-4 are logged; the newest checkpoint is unusable, so the rerun resumes from
    # iteration 3 and logs iteration 4 again
    latest = tmp_path / "run.resume.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    lines = run()
    assert any("resumed from checkpoint at iteration 3" in line for line in lines), lines
    assert_same_series(read_scalars(tmp_path / "tb" / "E3" / "point_robot" / "pearl" / "seed0"),
                       expected_scalars(tmp_path / "run"))


def test_training_runs_without_tensorboard(job, monkeypatch):
    tmp_path, run = job
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now raises ImportError
    lines = run()
    assert any("TensorBoard logging off" in line for line in lines), lines
    assert (tmp_path / "run" / "model.pt").exists() and not (tmp_path / "tb").exists()


def test_pipeline_training_jobs_write_one_tensorboard_tree(tmp_path, repo_config):
    workdir = copy_workflow(tmp_path, repo_config)
    out = subprocess.run(["snakemake", "-n", "-p", "--cores", "1", "results/E1/runs/gridworld/vate/seed0/model.pt",
                          "--config", "scale=smoke"], cwd=workdir, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "--tensorboard results/tensorboard/E1/gridworld/vate/seed0 " in out.stdout


def test_rerun_from_scratch_replaces_only_the_old_event_files(job):
    tmp_path, run = job
    log_dir = tmp_path / "tb" / "E3" / "point_robot" / "pearl" / "seed0"
    run()
    (log_dir / "notes.txt").write_text("mine")
    run()  # the finished run left no checkpoint: this one starts from scratch
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1
    assert (log_dir / "notes.txt").read_text() == "mine"
    assert_same_series(read_scalars(log_dir), expected_scalars(tmp_path / "run"))
