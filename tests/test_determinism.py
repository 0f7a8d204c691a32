"""Same config and seed -> the same numbers: batched envs take no fresh entropy (a reset without
a seed draws from torch's global generator, which the training driver seeds and checkpoints),
so a MuJoCo run repeats exactly, and so does a run killed midway and resumed."""
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import smoke_job

from metarl.envs import FAMILY_NAMES, get_family
from metarl.training import train

#: families whose start state is fixed (nothing random to repeat; TESP's envs start without noise)
FIXED_START = {"gridworld", "sparse_point_robot", "dirichlet_point_robot", "wheeled", "small_ant", "reacher_2link",
               "reacher_4link"}


def episode_start(name, torch_seed):
    """Observations of a fresh batched env's first reset and step, torch's generator seeded."""
    family = get_family(name)
    env = family.make_batched(3)
    tasks = next(iter(family.sample_splits(np.random.default_rng(0)).values()))
    env.set_tasks([tasks[i % len(tasks)] for i in range(3)])
    torch.manual_seed(torch_seed)
    obs = env.reset()
    action = torch.zeros(3, dtype=torch.long) if family.discrete else torch.zeros(3, family.act_dim)
    return torch.cat([obs, env.step(action)[0]])


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_unseeded_reset_follows_torch_generator(name):
    assert torch.equal(episode_start(name, 0), episode_start(name, 0))
    if name not in FIXED_START:
        assert not torch.equal(episode_start(name, 0), episode_start(name, 1))


# ---------------------------------------------------------------- whole runs (PEARL, HalfCheetah-Vel)


def run_in_process(spec, taskset, out_dir):
    train(spec, taskset, out_dir, out_dir.with_suffix(".resume.pt"), log=lambda line: None)
    return out_dir


@pytest.fixture(scope="module")
def pearl_job(tmp_path_factory, repo_config):
    """A tiny PEARL run on HalfCheetah-Vel: its spec, task set and the output of one run."""
    tmp_path = tmp_path_factory.mktemp("pearl")
    spec, taskset = smoke_job(repo_config, tmp_path, "E3", "cheetah_vel", "pearl")
    spec["iterations"], spec["eval_every"], spec["eval_tasks"] = 4, 2, 2
    return spec, taskset, run_in_process(spec, taskset, tmp_path / "reference")


def output_text(out_dir):
    """train_log.csv and curve.csv as text, without the (wall-clock) iteration_s column."""
    header, *rows = (out_dir / "train_log.csv").read_text().splitlines()
    timing = header.split(",").index("iteration_s")
    log = [",".join(v for j, v in enumerate(line.split(",")) if j != timing) for line in (header, *rows)]
    return "\n".join(log), (out_dir / "curve.csv").read_text()


def test_same_seed_runs_are_identical(pearl_job, tmp_path):
    spec, taskset, reference = pearl_job
    assert output_text(run_in_process(spec, taskset, tmp_path / "again")) == output_text(reference)


def test_killed_and_resumed_run_is_identical(pearl_job, tmp_path):
    spec, taskset, reference = pearl_job
    command = [sys.executable, "-m", "metarl", "train", "--spec", json.dumps(spec), "--taskset", str(taskset),
               "--out-dir", str(tmp_path / "resumed"), "--resume", str(tmp_path / "resumed.resume.pt"),
               "--checkpoint-every", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # killed once iteration 2 (and its evaluation) is done
        if "] it 2/" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.stdout.read()
    assert proc.wait(timeout=120) == -signal.SIGKILL
    rerun = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    assert "resumed from checkpoint at iteration" in rerun and "] it 1/" not in rerun, rerun
    assert output_text(tmp_path / "resumed") == output_text(reference)


# ---------------------------------------------------------------- E5: each algorithm on the new families

#: (method, family) pairs that only E5 runs: algorithms on families beyond their paper's
E5_NEW_CELLS = [("vate", "sparse_point_robot"), ("vate", "cheetah_vel"), ("vate", "reacher_2link"),
                ("pearl", "gridworld"), ("pearl", "reacher_2link"), ("tesp", "gridworld"),
                ("tesp", "sparse_point_robot"), ("maml", "cheetah_vel"), ("random", "reacher_2link")]


@pytest.mark.parametrize(("method", "family"), E5_NEW_CELLS)
def test_e5_cells_repeat_exactly(method, family, repo_config, tmp_path):
    """Two smoke runs of the same E5 spec (two iterations, protocol evaluations after each) give
    byte-identical train logs (timing aside) and learning curves."""
    spec, taskset = smoke_job(repo_config, tmp_path, "E5", family, method)
    spec["iterations"], spec["eval_every"], spec["eval_tasks"] = 2, 1, 2
    first = output_text(run_in_process(spec, taskset, tmp_path / "first"))
    assert first == output_text(run_in_process(spec, taskset, tmp_path / "second"))
    assert "consumed_0" in first[1]  # evaluated by the common protocol
