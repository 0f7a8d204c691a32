"""The VATE gridworld (SPEC E1): find an unobserved goal on a 5×5 grid, 3 episodes per task.

Cells are ``(x, y)`` with ``x`` the column and ``y`` the row; the agent starts every episode in
the bottom-left cell (0, 0). A task is ``{"goal": [x, y]}`` with the goal outside the 2×2 block
around the start (21 cells). Actions 0..4 = up, right, down, left, stay; moves are clipped at
the walls. Reward: +1 when the cell after the move is the goal (so staying on it keeps earning
+1), −0.1 otherwise. An episode lasts 15 steps; a meta-episode is 3 episodes on the same task
(the method resets the env between them; the goal stays fixed).

Observation (both env forms): ``[x / 4, y / 4, t / 15]`` as float32 — the position scaled to
[0, 1] plus the fraction of the episode elapsed, so a policy can tell how much time is left
(the Bayes-optimal searcher uses that) and an encoder can see episode boundaries.
"""
from __future__ import annotations

import copy
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.base import BatchedEnv, Task, TaskFamily

SIZE = 5
HORIZON = 15
EPISODES = 3
START = (0, 0)
GOAL_REWARD, STEP_REWARD = 1.0, -0.1
#: (dx, dy) for up, right, down, left, stay
MOVES = ((0, 1), (1, 0), (0, -1), (-1, 0), (0, 0))
#: every cell outside the 2×2 block around the start, in row-major order of (x, y)
GOALS = [(x, y) for x in range(SIZE) for y in range(SIZE) if not (x < 2 and y < 2)]


def observation(x, y, t):
    """Works on Python numbers, numpy arrays and torch tensors alike."""
    return x / (SIZE - 1), y / (SIZE - 1), t / HORIZON


class GridWorldEnv(gym.Env):
    """One task, one 15-step episode per ``reset``; the goal is never observed."""

    metadata: ClassVar[dict] = {"render_modes": []}
    observation_space = gym.spaces.Box(0.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(len(MOVES))

    def __init__(self, task: Task | None = None):
        self.task = task
        self.pos = START
        self.t = 0

    def set_task(self, task: Task) -> None:
        self.task = task

    def _obs(self) -> np.ndarray:
        return np.array(observation(*self.pos, self.t), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.task = options["task"]
        if self.task is None:  # no task given: draw one from the family's prior
            self.task = {"goal": list(GOALS[self.np_random.integers(len(GOALS))])}
        self.pos, self.t = START, 0
        return self._obs(), {"task": copy.deepcopy(self.task)}

    def step(self, action):
        dx, dy = MOVES[int(action)]
        self.pos = (min(max(self.pos[0] + dx, 0), SIZE - 1), min(max(self.pos[1] + dy, 0), SIZE - 1))
        self.t += 1
        reward = GOAL_REWARD if list(self.pos) == list(self.task["goal"]) else STEP_REWARD
        return self._obs(), reward, False, self.t >= HORIZON, {"task": copy.deepcopy(self.task)}


class BatchedGridWorld(BatchedEnv):
    """B gridworlds as tensors; every env steps in lock-step (same ``t``)."""

    obs_dim, act_dim, discrete, horizon = 3, len(MOVES), True, HORIZON

    def __init__(self, num_envs: int, device: torch.device | str = "cpu"):
        self.num_envs, self.device = num_envs, torch.device(device)
        self.moves = torch.tensor(MOVES, device=self.device)
        self.goal = torch.zeros(num_envs, 2, dtype=torch.long, device=self.device)
        self.pos = torch.zeros_like(self.goal)
        self.t = 0

    def set_tasks(self, tasks: list[Task]) -> None:
        self.goal = torch.tensor([task["goal"] for task in tasks], dtype=torch.long, device=self.device)

    def set_goals(self, goal: torch.Tensor) -> None:
        """Set tasks directly as a ``(B, 2)`` long tensor of goal cells (no Python loop)."""
        self.goal = goal.to(self.device)

    def _obs(self) -> torch.Tensor:
        return torch.stack(observation(self.pos[:, 0].float(), self.pos[:, 1].float(),
                                       torch.full((self.num_envs,), float(self.t), device=self.device)), 1)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        del seed  # the start cell is fixed: nothing random to seed
        self.pos = torch.tensor(START, device=self.device).expand(self.num_envs, 2).clone()
        self.t = 0
        return self._obs()

    def step(self, actions: torch.Tensor):
        if self.t >= HORIZON:  # frozen until reset (BatchedEnv convention)
            reward = torch.zeros(self.num_envs, device=self.device)
        else:
            self.pos = (self.pos + self.moves[actions]).clamp(0, SIZE - 1)
            self.t += 1
            reward = torch.where((self.pos == self.goal).all(1), GOAL_REWARD, STEP_REWARD)
        truncated = torch.full((self.num_envs,), self.t >= HORIZON, device=self.device)
        return self._obs(), reward, torch.zeros_like(truncated), truncated, {}


class GridWorldFamily(TaskFamily):
    name, gym_id = "gridworld", "metarl/GridWorld-v0"
    horizon, obs_dim, act_dim, discrete = HORIZON, 3, len(MOVES), True
    size, episodes = SIZE, EPISODES
    #: train = every goal once; test = fresh goals drawn uniformly (with repetition)
    split_sizes: ClassVar[dict[str, int]] = {"train": len(GOALS), "test": 100}

    def sample_splits(self, rng: np.random.Generator) -> dict[str, list[Task]]:
        test = rng.integers(len(GOALS), size=self.split_sizes["test"])
        return {"train": [{"goal": list(g)} for g in GOALS],
                "test": [{"goal": list(GOALS[i])} for i in test]}

    def make_batched(self, num_envs: int, device: torch.device | str = "cpu") -> BatchedGridWorld:
        return BatchedGridWorld(num_envs, device)
