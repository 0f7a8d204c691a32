import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import metarl  # noqa: F401  (registers the gym ids)
from metarl.envs import get_family
from metarl.envs import gridworld as gw

UP, RIGHT, DOWN, LEFT, STAY = range(5)


def run_gym(goal, actions):
    env = gym.make("metarl/GridWorld-v0", task={"goal": goal}).unwrapped
    obs, info = env.reset(seed=0)
    rows = [(obs, None, False)]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        assert not terminated and info["task"] == {"goal": goal}
        rows.append((obs, reward, truncated))
    return rows


def test_reward_on_hand_computed_path():
    # (0,0) -up-> (0,1) -up-> (0,2)=goal +1, stay +1, right (1,2) -0.1, left back +1
    rows = run_gym([0, 2], [UP, UP, STAY, RIGHT, LEFT])
    assert [r for _, r, _ in rows[1:]] == pytest.approx([-0.1, 1.0, 1.0, -0.1, 1.0])
    assert rows[-1][0] == pytest.approx([0.0, 0.5, 5 / 15])


def test_moves_are_clipped_at_walls():
    rows = run_gym([4, 4], [LEFT, DOWN] + [RIGHT] * 6 + [UP] * 6)
    positions = [tuple(np.round(obs[:2] * 4).astype(int)) for obs, _, _ in rows]
    assert positions[1:3] == [(0, 0), (0, 0)]
    assert positions[7:9] == [(4, 0), (4, 0)] and positions[-1] == (4, 4)
    assert [r for _, r, _ in rows[1:]] == [-0.1] * 11 + [1.0] * 3  # reaches (4, 4), then clipped on it


def test_episode_lasts_horizon_steps():
    rows = run_gym([3, 3], [STAY] * gw.HORIZON)
    assert [t for _, _, t in rows[1:]] == [False] * (gw.HORIZON - 1) + [True]


def test_goals_and_splits():
    assert len(gw.GOALS) == 21 and not {(0, 0), (0, 1), (1, 0), (1, 1)} & set(gw.GOALS)
    splits = get_family("gridworld").sample_splits(np.random.default_rng(0))
    assert sorted(tuple(t["goal"]) for t in splits["train"]) == sorted(gw.GOALS)
    assert len(splits["test"]) == 100 and {tuple(t["goal"]) for t in splits["test"]} <= set(gw.GOALS)


def test_task_through_options_and_set_task():
    env = gym.make("metarl/GridWorld-v0").unwrapped
    _, info = env.reset(seed=1, options={"task": {"goal": [2, 0]}})
    assert info["task"] == {"goal": [2, 0]}
    env.step(RIGHT)
    assert env.step(RIGHT)[1] == 1.0
    env.set_task({"goal": [0, 2]})
    env.reset()
    assert env.step(RIGHT)[1] == -0.1


def test_check_env():
    check_env(gym.make("metarl/GridWorld-v0").unwrapped)


def test_batched_matches_gym():
    rng = np.random.default_rng(0)
    goals = [list(gw.GOALS[i]) for i in rng.integers(len(gw.GOALS), size=8)]
    actions = rng.integers(5, size=(gw.HORIZON, 8))
    env = get_family("gridworld").make_batched(8)
    env.set_tasks([{"goal": g} for g in goals])
    obs = [env.reset()]
    steps = [env.step(torch.as_tensor(a)) for a in actions]
    for i, goal in enumerate(goals):
        rows = run_gym(goal, actions[:, i])
        assert np.allclose([o for o, _, _ in rows], [o[i].numpy() for o in obs + [s[0] for s in steps]])
        assert np.allclose([r for _, r, _ in rows[1:]], [s[1][i].item() for s in steps])
        assert [t for _, _, t in rows[1:]] == [s[3][i].item() for s in steps]


def test_batched_is_frozen_after_horizon():
    env = get_family("gridworld").make_batched(2)
    env.set_tasks([{"goal": [2, 2]}, {"goal": [4, 4]}])
    env.reset()
    for _ in range(gw.HORIZON):
        last = env.step(torch.tensor([RIGHT, UP]))
    obs, reward, terminated, truncated, _ = env.step(torch.tensor([UP, RIGHT]))
    assert torch.equal(obs, last[0]) and torch.equal(reward, torch.zeros(2))
    assert truncated.all() and not terminated.any()
