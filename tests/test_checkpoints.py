"""Safe and robust checkpoints: files load with torch.load(weights_only=True) so a crafted pickle
runs no code; a NaN stops training and keeps the last good checkpoint; a corrupt resume
checkpoint falls back to the previous one (or to scratch); a failed write keeps the old file."""
import errno
import os
import pickle
import shlex
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import smoke_job

from metarl.evaluation import evaluate
from metarl.methods import get_algorithm
from metarl.methods.pearl import PEARL
from metarl.training import train
from metarl.utils import io
from metarl.utils.checkpoints import load_checkpoint, save_checkpoint
from metarl.utils.errors import CheckpointError


class SimulatedCrash(Exception):
    pass


class Payload:
    """Unpickling this runs a shell command: what a malicious model.pt would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture
def job(tmp_path, repo_config):
    """A PEARL point-robot run at smoke scale stretched to 6 iterations (about a second)."""
    spec, taskset = smoke_job(repo_config, tmp_path, "E3", "point_robot", "pearl")
    spec["iterations"], spec["eval_every"] = 6, 3
    return spec, taskset


def run(spec, taskset, tmp_path, name, **kwargs):
    lines = []
    train(spec, taskset, tmp_path / name, tmp_path / f"{name}.resume.pt", checkpoint_every_s=0,
          log=lines.append, **kwargs)
    return lines


def crash_at(monkeypatch, iteration, algorithm=PEARL):
    """Make ``algorithm``'s training raise at ``iteration`` (a killed job, seen from its checkpoints)."""
    original, calls = algorithm.train_iteration, []

    def train_iteration(self):
        calls.append(1)
        if len(calls) == iteration:
            raise SimulatedCrash
        return original(self)
    monkeypatch.setattr(algorithm, "train_iteration", train_iteration)


def assert_same_model(dir_a, dir_b):
    a, b = (torch.load(d / "model.pt", weights_only=True) for d in (dir_a, dir_b))
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    log_a, log_b = (pd.read_csv(d / "train_log.csv").drop(columns="iteration_s") for d in (dir_a, dir_b))
    pd.testing.assert_frame_equal(log_a, log_b)


# ------------------------------------------------------------------------ weights_only loading

@pytest.mark.parametrize("form", ["torch.save", "plain pickle"])
def test_malicious_model_file_is_refused_without_running_it(tmp_path, job, form):
    _, taskset = job
    marker, model = tmp_path / "pwned", tmp_path / "model.pt"
    content = {"spec": {"seed": 0}, "model": Payload(marker), "env_steps": 0}
    if form == "torch.save":
        torch.save(content, model)
    else:
        model.write_bytes(pickle.dumps(content))
    with pytest.raises(Exception) as error:
        evaluate(model, taskset, ["test"], tmp_path / "eval.csv")
    assert not marker.exists(), "unpickling ran the payload"
    assert str(model) in str(error.value)
    assert "refused" in str(error.value) or "not a readable" in str(error.value)
    if form == "plain pickle":
        return
    # the command prints the reason, not a traceback
    out = subprocess.run([sys.executable, "-m", "metarl", "evaluate", "--model", str(model), "--taskset", str(taskset),
                          "--splits", "test", "--out", str(tmp_path / "eval.csv")], capture_output=True, text=True)
    assert out.returncode != 0 and str(model) in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not marker.exists()


def test_malicious_resume_checkpoint_is_refused_and_training_starts_afresh(tmp_path, job):
    spec, taskset = job
    marker = tmp_path / "pwned"
    torch.save({"spec_hash": "x", "rng": Payload(marker)}, tmp_path / "evil.resume.pt")
    lines = run(spec, taskset, tmp_path, "evil")
    assert not marker.exists(), "unpickling ran the payload"
    assert any("refused" in line and "evil.resume.pt" in line for line in lines), lines
    assert (tmp_path / "evil" / "model.pt").exists()


@pytest.mark.parametrize("experiment, family, method", [
    ("E1", "gridworld", "vate"), ("E3", "point_robot", "pearl"), ("E2", "reacher_2link", "tesp")])
def test_resume_checkpoint_of_every_method_loads_weights_only(tmp_path, repo_config, monkeypatch,
                                                             experiment, family, method):
    """RNG states (python, numpy), optimiser state, PEARL's buffer, log rows: all plain data."""
    spec, taskset = smoke_job(repo_config, tmp_path, experiment, family, method)
    spec["iterations"], spec["eval_every"] = 3, 2
    spec["curve_splits"] = spec["curve_splits"][:1]
    crash_at(monkeypatch, 3, get_algorithm(spec["algo"]))
    with pytest.raises(SimulatedCrash):
        run(spec, taskset, tmp_path, "run")
    ckpt = torch.load(tmp_path / "run.resume.pt", weights_only=True)
    assert ckpt["iteration"] == 2 and [row["iteration"] for row in ckpt["log_rows"]] == [1, 2]
    assert [set(frame["iteration"]) for frame in ckpt["curve_frames"]] == [{2}]


# ------------------------------------------------------------------------ NaN / Inf

def corrupt_iteration(monkeypatch, iteration: int, corrupt) -> None:
    """Let PEARL train normally, but call ``corrupt(method, metrics)`` after the given iteration."""
    original, calls = PEARL.train_iteration, []

    def train_iteration(self):
        metrics = original(self)
        calls.append(1)
        if len(calls) == iteration:
            corrupt(self, metrics)
        return metrics
    monkeypatch.setattr(PEARL, "train_iteration", train_iteration)


def test_nan_loss_stops_training_naming_loss_iteration_and_run(tmp_path, job, monkeypatch):
    spec, taskset = job
    corrupt_iteration(monkeypatch, 4, lambda method, metrics: metrics.update(q_loss=float("nan")))
    with pytest.raises(RuntimeError) as error:
        run(spec, taskset, tmp_path, "nan")
    message = str(error.value)
    assert "'q_loss'" in message and "iteration 4" in message and "E3/point_robot/pearl/seed0" in message
    # the last good checkpoint (iteration 3) is kept, and no result was written
    assert torch.load(tmp_path / "nan.resume.pt", weights_only=True)["iteration"] == 3
    assert not (tmp_path / "nan" / "model.pt").exists()


def test_poisoned_parameter_stops_training(tmp_path, job, monkeypatch):
    spec, taskset = job

    def poison(method, metrics):
        with torch.no_grad():
            next(method.model.v.parameters()).view(-1)[0] = float("inf")
    corrupt_iteration(monkeypatch, 2, poison)
    with pytest.raises(RuntimeError, match=r"parameter 'v\..*' holds NaN/Inf at iteration 2"):
        run(spec, taskset, tmp_path, "inf")
    assert torch.load(tmp_path / "inf.resume.pt", weights_only=True)["iteration"] == 1


# ------------------------------------------------------------------------ corrupt checkpoints

def reference_and_crashed_runs(tmp_path, job, monkeypatch):
    """An uninterrupted run ("reference") and one that crashed at iteration 5 ("crashed"),
    leaving its resume checkpoint and the previous one behind."""
    spec, taskset = job
    run(spec, taskset, tmp_path, "reference")
    with monkeypatch.context() as patch:
        crash_at(patch, 5)
        with pytest.raises(SimulatedCrash):
            run(spec, taskset, tmp_path, "crashed")
    return spec, taskset


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, job, monkeypatch):
    spec, taskset = reference_and_crashed_runs(tmp_path, job, monkeypatch)
    latest = tmp_path / "crashed.resume.pt"
    assert torch.load(tmp_path / "crashed.resume.pt.prev", weights_only=True)["iteration"] == 3
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])

    lines = run(spec, taskset, tmp_path, "crashed")
    assert any("skipping unusable checkpoint" in line and str(latest) in line for line in lines), lines
    assert any("resumed from checkpoint at iteration 3" in line for line in lines), lines
    assert_same_model(tmp_path / "reference", tmp_path / "crashed")
    assert not latest.exists() and not (tmp_path / "crashed.resume.pt.prev").exists()


def test_corrupt_checkpoints_without_fallback_restart_from_scratch(tmp_path, job, monkeypatch):
    spec, taskset = reference_and_crashed_runs(tmp_path, job, monkeypatch)
    latest, previous = tmp_path / "crashed.resume.pt", tmp_path / "crashed.resume.pt.prev"
    latest.write_bytes(b"")
    data = bytearray(previous.read_bytes())  # one flipped bit inside a tensor: only a checksum sees it
    data[len(data) // 2] ^= 0x01
    previous.write_bytes(bytes(data))

    lines = run(spec, taskset, tmp_path, "crashed")
    assert sum("skipping unusable checkpoint" in line for line in lines) == 2, lines
    assert any("checksum mismatch" in line and str(previous) in line for line in lines), lines
    assert not any("resumed" in line for line in lines)
    assert_same_model(tmp_path / "reference", tmp_path / "crashed")


# ------------------------------------------------------------------------ failed writes

def write_part_then_fail(path):
    with open(path, "wb") as f:
        f.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("writer", ["torch", "checkpoint", "csv", "json", "text"])
def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, writer):
    target = tmp_path / "out" / "result"
    target.parent.mkdir()
    target.write_bytes(b"old result")
    monkeypatch.setattr(torch, "save", lambda obj, path: write_part_then_fail(path))
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, path, **kwargs: write_part_then_fail(path))
    monkeypatch.setattr(type(target), "write_text", lambda self, text: write_part_then_fail(self))
    write = {"torch": lambda: io.save_torch({"x": torch.zeros(3)}, target),
             "checkpoint": lambda: save_checkpoint({"x": torch.zeros(3)}, target),
             "csv": lambda: io.save_csv(pd.DataFrame({"a": [1]}), target),
             "json": lambda: io.save_json({"a": 1}, target),
             "text": lambda: io.save_text("new", target)}[writer]
    with pytest.raises(OSError, match="No space left"):
        write()
    assert target.read_bytes() == b"old result"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result"], "a temporary or .prev file was left"


def test_bit_flip_is_caught_by_the_checksum(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"weights": torch.arange(10_000, dtype=torch.float32)}, path)
    data = bytearray(path.read_bytes())
    start = data.index(torch.arange(10_000, dtype=torch.float32).numpy().tobytes()[:64])
    data[start + 1000] ^= 0x10
    path.write_bytes(bytes(data))
    assert not torch.equal(torch.load(path, weights_only=True)["weights"], torch.arange(10_000.0)), \
        "torch.load alone would return the damaged tensor"
    with pytest.raises(CheckpointError, match=f"{path}: checksum mismatch"):
        load_checkpoint(path)
