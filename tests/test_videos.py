"""Rollout videos (metarl/videos.py, `videos: true`): a real, decodable, non-blank MP4 of the
states the method's own evaluation visited; the Snakemake jobs only when asked for."""
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import copy_workflow, smoke_job
from PIL import Image
from test_targets import scheduled

from metarl import config as metarl_config
from metarl.training import build_method
from metarl.utils.io import save_torch
from metarl.utils.runtime import seed_everything
from metarl.videos import first_and_last, record_evaluation, write_video


@pytest.fixture(scope="module")
def pearl_model(tmp_path_factory, repo_config):
    """An untrained smoke-sized PEARL on HalfCheetah-Vel, saved as metarl.training saves model.pt."""
    tmp_path = tmp_path_factory.mktemp("videos")
    spec, taskset = smoke_job(repo_config, tmp_path, "E3", "cheetah_vel", "pearl")
    spec["device"] = "cpu"
    torch.manual_seed(0)
    method = build_method(spec, taskset, torch.device("cpu"))
    save_torch({"spec": spec, "model": method.model.state_dict(), "env_steps": 0}, tmp_path / "model.pt")
    return spec, taskset, tmp_path / "model.pt"


def test_video_is_a_real_rollout(pearl_model, tmp_path):
    _, taskset, model = pearl_model
    write_video(model, taskset, tmp_path / "v.mp4", tmp_path / "v.png", "test", num_tasks=1, size=64, stride=4)
    frames = iio.imread(tmp_path / "v.mp4")
    # HalfCheetah never terminates: first and last trajectory have 200 steps, 201 states, of
    # which every 4th is drawn
    per_trajectory = math.ceil(201 / 4)
    assert frames.shape == (2 * per_trajectory, 64, 64, 3)
    assert min(frame.std() for frame in frames) > 10  # a scene, not a blank image
    # the body moves under the camera: a trajectory's first and last frames differ
    assert np.abs(frames[0].astype(int) - frames[per_trajectory - 1]).mean() > 1
    strip = np.asarray(Image.open(tmp_path / "v.png"))
    assert strip.shape == (64, 8 * 64, 3) and strip.std() > 10  # 4 frames of each trajectory


def test_recorded_trajectories_are_the_evaluations_first_and_last(pearl_model):
    spec, taskset, model = pearl_model
    _, tasks, recording = record_evaluation(model, taskset, "test", 2)
    # the same evaluation, unrecorded: PEARL's adapt returns the observations it visited (T, K, H+1, obs);
    # evaluate adapts eval_runs copies of the tasks at once, and the video shows the first run's
    method = build_method(spec, taskset, torch.device("cpu"))
    method.model.load_state_dict(torch.load(model, weights_only=True)["model"])
    seed_everything(spec["seed"] + 10_000)  # as metarl/evaluation.py
    observations = method.adapt(list(tasks) * method.hp.eval_runs)["observations"][:len(tasks)].numpy()
    assert observations.shape[1] == 3  # smoke: one trajectory with z from the prior, two from the posterior
    for t, task in enumerate(tasks):
        first, last = first_and_last(recording, task)
        assert first.task is task and last.task is task
        for trajectory, k in ((first, 0), (last, -1)):
            # PEARL's HalfCheetah observation: qpos without the x coordinate, qvel, then the torso
            # frame's position, which a recording does not keep (tests/test_envs_mujoco.py checks it)
            from_states = np.concatenate([trajectory.qpos[:, 1:], trajectory.qvel], 1)
            np.testing.assert_allclose(from_states, observations[t, k, :, :from_states.shape[1]], rtol=1e-5, atol=1e-5)
            assert observations.shape[-1] == from_states.shape[1] + 3
    # the prior's trajectory and the posterior's differ, so the video compares two behaviours
    assert not np.allclose(observations[:, 0], observations[:, -1])


def test_videos_are_opt_in(tmp_path, repo_config):
    workdir = copy_workflow(tmp_path, repo_config)
    assert "video" not in {rule for rule, _ in scheduled(workdir, "E3", "--config", "scale=smoke")}
    jobs = scheduled(workdir, "E3", "--config", "scale=smoke", "videos=True")
    locomotion = {"cheetah_vel", "cheetah_dir", "ant_fwd_back", "ant_goal", "humanoid_dir", "walker_params"}
    config = {**repo_config, "scale": "smoke"}
    expected = {f"experiment=E3, family={f}, method={m}"
                for f, m, s in metarl_config.runs(config, "E3") if s == 0 and f in locomotion}
    assert expected and {w for r, w in jobs if r == "video"} == expected
