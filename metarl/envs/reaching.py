"""TESP's reaching task families (SPEC E2) on our own MJCF models (``assets/*.xml``).

A task is a 2-D target ``{"goal": [x, y]}``, never observed. The reward is
−‖p − goal‖ − 1e-3‖a‖², where p is the car's or the ant's torso position (xy) or the arm's
fingertip, and the episode ends (``terminated``) once ‖p − goal‖ < ``success_radius``:
0.05 for the arms' fingertips, 0.1 for the car's and the ant's body centres, which cannot
park as precisely. The car and the ant start at the origin, the arms stretched along +x,
each with U(−0.01, 0.01) noise on every qpos and qvel.

Task sets (seeded): targets are uniform in the area of an annulus (angle ~ U(0, 2π),
radius = sqrt(U(r_min², r_max²))). ``D``: 100 targets with 0.2 < ρ < 1.1; ``D_prime``: 100
more from that annulus, each at least ``MIN_SPACING`` from every target of ``D`` (rejection
sampling); ``D_double_prime``: 100 targets with 1.1 < ρ < 1.5.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from metarl.envs.base import Task
from metarl.envs.mujoco_batch import ASSETS, MujocoBatchedEnv, MujocoEnv, MujocoFamily, State

IN_DISTRIBUTION = (0.2, 1.1)
OUT_OF_DISTRIBUTION = (1.1, 1.5)
SPLIT_SIZE = 100
MIN_SPACING = 0.05  # between a D_prime target and any D target: the arms' success radius


def sample_annulus(rng: np.random.Generator, n: int, r_min: float, r_max: float) -> np.ndarray:
    """``n`` points uniform in the area of the annulus r_min < ρ < r_max, ``(n, 2)``."""
    angle = rng.uniform(0.0, 2 * np.pi, n)
    radius = np.sqrt(rng.uniform(r_min**2, r_max**2, n))
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


def sample_target_splits(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The D, D_prime and D_double_prime targets, ``(100, 2)`` each."""
    d = sample_annulus(rng, SPLIT_SIZE, *IN_DISTRIBUTION)
    d_prime = np.zeros((0, 2))
    while len(d_prime) < SPLIT_SIZE:
        candidates = sample_annulus(rng, SPLIT_SIZE, *IN_DISTRIBUTION)
        spacing = np.linalg.norm(candidates[:, None] - d[None], axis=2).min(axis=1)
        d_prime = np.concatenate([d_prime, candidates[spacing >= MIN_SPACING]])
    d_double_prime = sample_annulus(rng, SPLIT_SIZE, *OUT_OF_DISTRIBUTION)
    return {"D": d, "D_prime": d_prime[:SPLIT_SIZE], "D_double_prime": d_double_prime}


class _ReachingFamily(MujocoFamily):
    split_sizes: ClassVar[dict[str, int]] = {"D": SPLIT_SIZE, "D_prime": SPLIT_SIZE, "D_double_prime": SPLIT_SIZE}
    reset_noise_scale = 0.01
    success_radius: float
    distance_reward = True  # step info carries the TESP paper's metric, −‖p − goal‖

    def sample_splits(self, rng: np.random.Generator) -> dict[str, list[Task]]:
        return {
            split: [{"goal": [float(x), float(y)]} for x, y in targets]
            for split, targets in sample_target_splits(rng).items()
        }

    def task_array(self, tasks):
        return np.array([t["goal"] for t in tasks], dtype=np.float64)

    def reward(self, s, before, after, action, task):
        distance = np.linalg.norm(after - task, axis=1)
        return -distance - 1e-3 * np.square(action).sum(axis=1), distance < self.success_radius

    def make_batched(self, num_envs, device="cpu", num_threads=1):
        return _ReachingBatchedEnv(self, num_envs, device, num_threads)


class _ReachingBatchedEnv(MujocoBatchedEnv):
    """Adds ``info["distance_reward"]`` = −‖p − goal‖ (0 once an episode is over): the reward
    without the control cost, whose sum is the return the TESP paper reports (the authors' envs
    put it in ``info["dist_reward"]``: llan-ml/tesp tesp/envs/mujoco/reacher.py)."""

    def step(self, actions):
        active = ~self._done
        obs, reward, terminated, truncated, info = super().step(actions)
        distance = np.linalg.norm(self._position - self._task_array, axis=1)  # position after the step
        return obs, reward, terminated, truncated, {**info, "distance_reward": self._to_tensor(np.where(active, -distance, 0.0))}


class WheeledFamily(_ReachingFamily):
    """Two-wheeled differential-drive car; obs: chassis pose (xyz, quaternion), chassis and
    wheel velocities (wheel angles are left out: they only grow)."""

    name, gym_id = "wheeled", "metarl/Wheeled-v0"
    model_path = ASSETS / "wheeled.xml"
    frame_skip = 5
    success_radius = 0.1
    camera_distance = 2.0

    def observe(self, s: State) -> np.ndarray:
        return np.concatenate([s["qpos"][:, :7], s["qvel"]], axis=1)

    def position(self, s: State) -> np.ndarray:
        return s["qpos"][:, :2]


class SmallAntFamily(_ReachingFamily):
    """Small quadruped; obs: qpos (torso position included) and qvel."""

    name, gym_id = "small_ant", "metarl/SmallAnt-v0"
    model_path = ASSETS / "small_ant.xml"
    frame_skip = 5
    success_radius = 0.1
    camera_distance = 2.0

    def observe(self, s: State) -> np.ndarray:
        return np.concatenate([s["qpos"], s["qvel"]], axis=1)

    def position(self, s: State) -> np.ndarray:
        return s["qpos"][:, :2]


class _ReacherFamily(_ReachingFamily):
    """Planar arm; obs: cos and sin of the joint angles, joint velocities, fingertip xy.
    The fingertip comes from the joint angles (forward kinematics of ``links``), so it is
    that of the current state."""

    frame_skip = 2
    success_radius = 0.05
    camera_distance, camera_elevation = 3.5, -75.0  # from above: the arm moves in the floor's plane
    links: tuple[float, ...]  # link lengths, as in the MJCF

    def fingertip(self, qpos: np.ndarray) -> np.ndarray:
        heading = np.cumsum(qpos, axis=1)  # absolute angle of each link
        return np.stack([np.cos(heading) @ self.links, np.sin(heading) @ self.links], axis=1)

    def observe(self, s: State) -> np.ndarray:
        q = s["qpos"]
        return np.concatenate([np.cos(q), np.sin(q), s["qvel"], self.fingertip(q)], axis=1)

    def position(self, s: State) -> np.ndarray:
        return self.fingertip(s["qpos"])


class Reacher2LinkFamily(_ReacherFamily):
    name, gym_id = "reacher_2link", "metarl/Reacher2Link-v0"
    model_path = ASSETS / "reacher_2link.xml"
    links = (0.8, 0.75)


class Reacher4LinkFamily(_ReacherFamily):
    name, gym_id = "reacher_4link", "metarl/Reacher4Link-v0"
    model_path = ASSETS / "reacher_4link.xml"
    links = (0.4, 0.4, 0.4, 0.4)


class WheeledEnv(MujocoEnv):
    family_cls = WheeledFamily


class SmallAntEnv(MujocoEnv):
    family_cls = SmallAntFamily


class Reacher2LinkEnv(MujocoEnv):
    family_cls = Reacher2LinkFamily


class Reacher4LinkEnv(MujocoEnv):
    family_cls = Reacher4LinkFamily
