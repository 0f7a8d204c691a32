import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from metarl.envs import get_family

FAMILIES = ["point_robot", "sparse_point_robot", "dirichlet_point_robot"]


@pytest.mark.parametrize("name", FAMILIES)
def test_gym_env_passes_check_env_and_reports_task(name):
    family = get_family(name)
    task = family.sample_splits(np.random.default_rng(0))["test"][0]
    env = family.make_gym(task)
    check_env(env.unwrapped, skip_render_check=True)
    other = {"goal": [0.3, -0.2]}
    _, info = env.reset(seed=0, options={"task": other})
    assert info["task"] == other
    env.unwrapped.set_task(task)
    *_, info = env.step(env.action_space.sample())
    assert info["task"] == task


@pytest.mark.parametrize("name", FAMILIES)
def test_splits(name):
    family = get_family(name)
    splits = family.sample_splits(np.random.default_rng(1))
    assert {k: len(v) for k, v in splits.items()} == family.split_sizes
    assert splits == family.sample_splits(np.random.default_rng(1))
    goals = np.array([t["goal"] for split in splits.values() for t in split])
    assert len(np.unique(goals, axis=0)) == len(goals)
    if name == "point_robot":
        assert np.abs(goals).max() <= 1
    else:  # upper unit semicircle
        np.testing.assert_allclose(np.linalg.norm(goals, axis=1), 1)
        assert (goals[:, 1] >= -1e-12).all()
    if name == "dirichlet_point_robot":  # Beta(0.2, 0.2) angles crowd both ends of the arc
        near_ends = np.abs(goals[:, 0]) > np.cos(np.pi / 6)
        assert near_ends.mean() > 0.5


def test_rewards_by_hand():
    env = get_family("sparse_point_robot").make_gym({"goal": [0.0, 0.3]})
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0, 0])  # sparse robots start at the origin
    obs, reward, terminated, truncated, info = env.step(np.array([0.5, 0.05]))  # clipped to 0.1
    np.testing.assert_allclose(obs, [0.1, 0.05])
    assert reward == pytest.approx(-np.hypot(0.1, 0.25))        # dense: -distance
    assert info["sparse_reward"] == 0.0                         # distance 0.27 > radius 0.2
    obs, reward, *_, info = env.step(np.array([-0.1, 0.1]))
    assert reward == pytest.approx(-0.15)
    assert info["sparse_reward"] == pytest.approx(1 - 0.15)     # inside the radius: 1 - distance
    assert not terminated and not truncated


def test_horizon_and_frozen_after_truncation():
    family = get_family("sparse_point_robot")
    env = family.make_batched(2)
    env.set_tasks([{"goal": [1.0, 0.0]}, {"goal": [0.0, 1.0]}])
    env.reset()
    for t in range(family.horizon):
        obs, reward, terminated, truncated, _ = env.step(torch.full((2, 2), 0.1))
        assert truncated.all() == (t == family.horizon - 1)
    obs2, reward, terminated, truncated, info = env.step(torch.full((2, 2), 0.1))
    torch.testing.assert_close(obs2, obs)
    assert (reward == 0).all() and (info["sparse_reward"] == 0).all() and truncated.all() and not terminated.any()


@pytest.mark.parametrize("seed", [0, 1, 1234])
def test_batched_seed_starts_where_gym_env_does(seed):
    """Batched env i reset with seed s starts exactly where the gymnasium env reset with s + i
    does (the dense robot's start is random; the sparse ones start at the origin)."""
    for name in FAMILIES:
        family = get_family(name)
        batched = family.make_batched(4)
        starts = batched.reset(seed=seed).numpy()
        expected = np.stack([family.make_gym().reset(seed=seed + i)[0] for i in range(4)])
        np.testing.assert_array_equal(starts, expected)
        if name == "point_robot":
            assert len(np.unique(starts, axis=0)) == 4


@pytest.mark.parametrize("name", FAMILIES)
def test_batched_matches_gym(name):
    family = get_family(name)
    tasks = family.sample_splits(np.random.default_rng(0))["test"][:3]
    batched = family.make_batched(len(tasks))
    batched.set_tasks(tasks)
    start = batched.reset(seed=5)
    actions = torch.rand(family.horizon, len(tasks), 2, generator=torch.Generator().manual_seed(0)) * 0.3 - 0.15
    out = [batched.step(a) for a in actions]
    for i, task in enumerate(tasks):
        env = family.make_gym(task).unwrapped
        np.testing.assert_array_equal(env.reset(seed=5 + i)[0], start[i].numpy())  # seed + i, as gymnasium
        for t, a in enumerate(actions):
            obs, reward, terminated, truncated, info = env.step(a[i].numpy())
            b_obs, b_reward, b_term, b_trunc, b_info = out[t]
            np.testing.assert_allclose(obs, b_obs[i].numpy(), atol=1e-6)
            assert reward == pytest.approx(b_reward[i].item(), abs=1e-5)
            assert (terminated, truncated) == (b_term[i].item(), b_trunc[i].item())
            if family.sparse:
                assert info["sparse_reward"] == pytest.approx(b_info["sparse_reward"][i].item(), abs=1e-5)
