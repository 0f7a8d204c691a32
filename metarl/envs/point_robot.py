"""PEARL's 2-D point robots (dense, sparse) and the structured-latent paper's Dirichlet-goal variant.

The robot's observation is its position; an action is a displacement clipped to [-0.1, 0.1]^2;
episodes last 20 steps and never terminate. Conventions follow PEARL's public code
(``rlkit/envs/point_robot.py``):
* dense: goals uniform in [-1, 1]^2 (split 80/20, oyster's ``configs/point-robot.json``
  ``n_train_tasks`` / ``n_eval_tasks``), start uniform in [-1, 1]^2, reward -||pos - goal||;
* sparse: goals evenly spaced on the upper unit semicircle (shuffled, split 80/20), start at the
  origin; the env reward stays dense (it trains the critic) and the sparse reward
  ``1 - ||pos - goal||`` inside the goal radius 0.2, else 0, is reported as
  ``info["sparse_reward"]`` (it feeds the context and evaluation);
* Dirichlet: as sparse, but 40 goals at angle (1 - w) * pi with w ~ Beta(0.2, 0.2), split 30/10.
"""
from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.base import BatchedEnv, Task, TaskFamily

HORIZON = 20
MAX_STEP = 0.1
GOAL_RADIUS = 0.2


def random_start(rng: np.random.Generator) -> np.ndarray:
    """The dense robot's start, uniform in [-1, 1]^2."""
    return rng.uniform(-1.0, 1.0, size=2).astype(np.float32)


def _split(tasks: list[Task], sizes: dict[str, int]) -> dict[str, list[Task]]:
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = tasks[start:start + size]
        start += size
    return out


def _goal_tasks(goals: np.ndarray) -> list[Task]:
    return [{"goal": [float(x), float(y)]} for x, y in goals]


class PointRobotFamily(TaskFamily):
    name = "point_robot"
    gym_id = "metarl/PointRobot-v0"
    horizon = HORIZON
    obs_dim = 2
    act_dim = 2
    split_sizes: ClassVar[dict[str, int]] = {"train": 80, "test": 20}
    sparse = False  # whether info["sparse_reward"] is reported
    random_start = True  # dense robot starts uniformly in [-1, 1]^2, the others at the origin

    def sample_splits(self, rng: np.random.Generator) -> dict[str, list[Task]]:
        goals = rng.uniform(-1.0, 1.0, size=(sum(self.split_sizes.values()), 2))
        return _split(_goal_tasks(goals), self.split_sizes)

    def make_batched(self, num_envs: int, device: torch.device | str = "cpu") -> BatchedPointRobot:
        return BatchedPointRobot(num_envs, torch.device(device), self.sparse, self.random_start)


class SparsePointRobotFamily(PointRobotFamily):
    name = "sparse_point_robot"
    gym_id = "metarl/SparsePointRobot-v0"
    split_sizes: ClassVar[dict[str, int]] = {"train": 80, "test": 20}
    sparse = True
    random_start = False

    def sample_splits(self, rng: np.random.Generator) -> dict[str, list[Task]]:
        angles = rng.permutation(np.linspace(0.0, np.pi, sum(self.split_sizes.values())))
        return _split(_goal_tasks(np.stack([np.cos(angles), np.sin(angles)], 1)), self.split_sizes)


class DirichletPointRobotFamily(SparsePointRobotFamily):
    name = "dirichlet_point_robot"
    gym_id = "metarl/DirichletPointRobot-v0"
    split_sizes: ClassVar[dict[str, int]] = {"train": 30, "test": 10}
    concentration = 0.2  # w ~ Beta(0.2, 0.2) = Dir(0.2, 0.2): goals cluster near both ends

    def sample_splits(self, rng: np.random.Generator) -> dict[str, list[Task]]:
        w = rng.beta(self.concentration, self.concentration, size=sum(self.split_sizes.values()))
        angles = rng.permutation((1.0 - w) * np.pi)  # drawn once, then randomly split
        return _split(_goal_tasks(np.stack([np.cos(angles), np.sin(angles)], 1)), self.split_sizes)


class BatchedPointRobot(BatchedEnv):
    """``num_envs`` point robots as tensors; frozen (reward 0) once truncated at the horizon."""

    obs_dim = 2
    act_dim = 2
    discrete = False
    horizon = HORIZON

    def __init__(self, num_envs: int, device: torch.device, sparse: bool, random_start: bool):
        self.num_envs, self.device, self.sparse, self.random_start = num_envs, device, sparse, random_start
        self.goal = torch.zeros(num_envs, 2, device=device)
        self.pos = torch.zeros(num_envs, 2, device=device)
        self.t = torch.zeros(num_envs, dtype=torch.long, device=device)

    def set_tasks(self, tasks: list[Task]) -> None:
        assert len(tasks) == self.num_envs, f"expected {self.num_envs} tasks, got {len(tasks)}"
        self.goal = torch.tensor([task["goal"] for task in tasks], dtype=torch.float32, device=self.device)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Without ``seed``, random starts come from torch's global generator (seeded and
        checkpointed by the training driver); with it, env i starts where
        ``PointRobotEnv.reset(seed=seed + i)`` does."""
        if not self.random_start:
            self.pos = torch.zeros(self.num_envs, 2, device=self.device)
        elif seed is None:
            self.pos = torch.rand(self.num_envs, 2, device=self.device) * 2 - 1
        else:
            starts = [random_start(np.random.default_rng(seed + i)) for i in range(self.num_envs)]
            self.pos = torch.from_numpy(np.stack(starts)).to(self.device)
        self.t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        return self.pos.clone()

    def step(self, actions: torch.Tensor):
        active = self.t < self.horizon
        move = actions.to(self.device, torch.float32).clamp(-MAX_STEP, MAX_STEP)
        self.pos = torch.where(active[:, None], self.pos + move, self.pos)
        self.t = self.t + active.long()
        dist = torch.linalg.vector_norm(self.pos - self.goal, dim=-1)
        reward = torch.where(active, -dist, 0.0)
        info = {}
        if self.sparse:
            info["sparse_reward"] = torch.where(active & (dist <= GOAL_RADIUS), 1.0 - dist, 0.0)
        truncated = self.t >= self.horizon
        return self.pos.clone(), reward, torch.zeros_like(truncated), truncated, info


class PointRobotEnv(gym.Env):
    """Gymnasium form of one point robot; the task is ``{"goal": [x, y]}``."""

    metadata: ClassVar[dict] = {"render_modes": []}
    sparse = False
    random_start = True
    default_task: ClassVar[Task] = {"goal": [0.5, 0.5]}

    def __init__(self, task: Task | None = None):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-MAX_STEP, MAX_STEP, shape=(2,), dtype=np.float32)
        self.set_task(task or self.default_task)
        self.pos = np.zeros(2, dtype=np.float32)
        self.t = 0

    def set_task(self, task: Task) -> None:
        self.task = {"goal": [float(g) for g in task["goal"]]}
        self.goal = np.asarray(self.task["goal"], dtype=np.float32)

    def _info(self) -> dict:
        return {"task": {"goal": list(self.task["goal"])}}  # a fresh object each call, as gymnasium asks

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        self.pos = random_start(self.np_random) if self.random_start else np.zeros(2, dtype=np.float32)
        self.t = 0
        return self.pos.copy(), self._info()

    def step(self, action):
        self.pos = self.pos + np.clip(np.asarray(action, dtype=np.float32), -MAX_STEP, MAX_STEP)
        self.t += 1
        dist = float(np.linalg.norm(self.pos - self.goal))
        info = self._info()
        if self.sparse:
            info["sparse_reward"] = 1.0 - dist if dist <= GOAL_RADIUS else 0.0
        return self.pos.copy(), -dist, False, self.t >= HORIZON, info


class SparsePointRobotEnv(PointRobotEnv):
    sparse = True
    random_start = False
    default_task: ClassVar[Task] = {"goal": [0.0, 1.0]}


class DirichletPointRobotEnv(SparsePointRobotEnv):
    pass
