"""TESP's reaching task families (SPEC E2), as the authors' envs (llan-ml/tesp
``tesp/envs/mujoco/*.py`` and ``assets/*.xml``; our MJCF in ``assets/`` states their physics).

A task is a 2-D target ``{"goal": [x, y]}``, never observed. Every joint is driven by a velocity
servo; the action u, clipped to [-1, 1], sets its target to u times the authors' ctrlrange bound
(their ``normalize_action``). The reward is −‖p − goal‖ − 1e-3 · ½‖u‖² for the clipped u (their
``ctrl_cost_coeff`` 1e-3 times ``calculate_ctrl_cost``), where p is the car's or the ant's base
position (xy) or the arm's fingertip; the episode ends (``terminated``) once ‖p − goal‖ <
``success_radius``, the authors' ``done`` threshold of each env, and the ant's also when its
torso leaves heights 0.15–0.45 (their ``notdead``). Every env starts from the authors' initial
state, without noise; 5 physics steps of 0.01 s per env step.

Task sets (seeded), drawn as the authors' ``ResetWrapper._sample_reset_args_near_and_far``
(tesp/envs/reset_wrapper.py): candidates uniform in the square [−1.5, 1.5]², kept if inside the
split's annulus and at least ``target_spacing`` from every target kept before in that split
(``D_prime``: also from every target of ``D``). ``D``: 100 targets with 0.2 < ρ < 1.1;
``D_prime``: 100 more from that annulus; ``D_double_prime``: 100 targets with 1.1 < ρ < 1.5.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from metarl.envs.base import Task
from metarl.envs.mujoco_batch import ASSETS, MujocoBatchedEnv, MujocoEnv, MujocoFamily, State, torso_unhealthy

IN_DISTRIBUTION = (0.2, 1.1)
OUT_OF_DISTRIBUTION = (1.1, 1.5)
SPLIT_SIZE = 100
TARGET_BOX = 1.5  # candidates are uniform in [-TARGET_BOX, TARGET_BOX]^2


def sample_targets(rng: np.random.Generator, n: int, radii: tuple[float, float], spacing: float,
                   avoid: np.ndarray | None = None) -> np.ndarray:
    """``n`` targets ``(n, 2)`` drawn one candidate at a time, uniform in the square, each kept if
    r_min < ρ < r_max and at least ``spacing`` from the targets kept before and from ``avoid``."""
    avoid = np.zeros((0, 2)) if avoid is None else avoid
    kept = np.concatenate([avoid, np.empty((n, 2))])
    count = len(avoid)
    while count < len(kept):
        candidate = rng.uniform(-TARGET_BOX, TARGET_BOX, 2)
        if radii[0] < np.linalg.norm(candidate) < radii[1] and \
                (np.linalg.norm(kept[:count] - candidate, axis=1) >= spacing).all():
            kept[count] = candidate
            count += 1
    return kept[len(avoid):]


def sample_target_splits(rng: np.random.Generator, spacing: float) -> dict[str, np.ndarray]:
    """The D, D_prime and D_double_prime targets, ``(100, 2)`` each."""
    d = sample_targets(rng, SPLIT_SIZE, IN_DISTRIBUTION, spacing)
    d_prime = sample_targets(rng, SPLIT_SIZE, IN_DISTRIBUTION, spacing, avoid=d)
    d_double_prime = sample_targets(rng, SPLIT_SIZE, OUT_OF_DISTRIBUTION, spacing)
    return {"D": d, "D_prime": d_prime, "D_double_prime": d_double_prime}


class _ReachingFamily(MujocoFamily):
    split_sizes: ClassVar[dict[str, int]] = {"D": SPLIT_SIZE, "D_prime": SPLIT_SIZE, "D_double_prime": SPLIT_SIZE}
    frame_skip = 5
    reset_noise_scale = 0.0
    success_radius: float
    target_spacing = 0.1  # the authors' sample_threshold
    distance_reward = True  # step info carries the TESP paper's metric, −‖p − goal‖

    def sample_splits(self, rng: np.random.Generator) -> dict[str, list[Task]]:
        return {
            split: [{"goal": [float(x), float(y)]} for x, y in targets]
            for split, targets in sample_target_splits(rng, self.target_spacing).items()
        }

    def task_array(self, tasks):
        return np.array([t["goal"] for t in tasks], dtype=np.float64)

    def reward(self, s, before, after, action, task):
        distance = np.linalg.norm(after - task, axis=1)
        ctrl_cost = 0.5 * np.square(np.clip(action, -1.0, 1.0)).sum(axis=1)  # of the action the servos get
        return -distance - 1e-3 * ctrl_cost, distance < self.success_radius

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
    """Two-wheeled differential-drive car (tesp/envs/mujoco/wheeled.py); obs: base position
    (xyz), sine and cosine of its heading, and the base's velocities (wheel angles and speeds are
    left out, as the authors')."""

    name, gym_id = "wheeled", "metarl/Wheeled-v0"
    model_path = ASSETS / "wheeled.xml"
    success_radius = 0.02
    camera_distance = 3.0

    def observe(self, s: State) -> np.ndarray:
        qpos, qvel = s["qpos"], s["qvel"]
        return np.concatenate([qpos[:, :3], np.sin(qpos[:, 3:4]), np.cos(qpos[:, 3:4]), qvel[:, :4]], axis=1)

    def position(self, s: State) -> np.ndarray:
        return s["qpos"][:, :2]


class SmallAntFamily(_ReachingFamily):
    """Small quadruped (tesp/envs/mujoco/ant.py); obs: qpos (torso position included) and qvel."""

    name, gym_id = "small_ant", "metarl/SmallAnt-v0"
    model_path = ASSETS / "small_ant.xml"
    success_radius = 0.03
    healthy_height = (0.15, 0.45)  # the authors' notdead: the torso's height inside this range
    camera_distance = 2.0

    def observe(self, s: State) -> np.ndarray:
        return np.concatenate([s["qpos"], s["qvel"]], axis=1)

    def position(self, s: State) -> np.ndarray:
        return s["qpos"][:, :2]

    def reward(self, s, before, after, action, task):
        reward, arrived = super().reward(s, before, after, action, task)
        return reward, arrived | torso_unhealthy(s, self.healthy_height)


class _ReacherFamily(_ReachingFamily):
    """Planar arm (tesp/envs/mujoco/reacher.py, reacher_4_link.py); obs: cos and sin of the
    joint angles, joint velocities, fingertip xy. The fingertip comes from the joint angles
    (forward kinematics of ``links``), so it is that of the current state."""

    camera_distance, camera_elevation = 5.0, -75.0  # from above: the arm moves in the floor's plane
    links: tuple[float, ...]  # from each joint to the next, the last to the fingertip, as in the MJCF

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
    links = (0.75, 0.95)
    success_radius = 0.06


class Reacher4LinkFamily(_ReacherFamily):
    name, gym_id = "reacher_4link", "metarl/Reacher4Link-v0"
    model_path = ASSETS / "reacher_4link.xml"
    links = (0.45, 0.45, 0.45, 0.65)
    success_radius = 0.11
    target_spacing = 0.11


class WheeledEnv(MujocoEnv):
    family_cls = WheeledFamily


class SmallAntEnv(MujocoEnv):
    family_cls = SmallAntFamily


class Reacher2LinkEnv(MujocoEnv):
    family_cls = Reacher2LinkFamily


class Reacher4LinkEnv(MujocoEnv):
    family_cls = Reacher4LinkFamily
