"""PEARL's locomotion task families (SPEC E3) on gymnasium's MJCF models.

Observations are PEARL's (katerakelly/oyster rlkit/envs/*.py ``_get_obs``), which differ from
gymnasium's v5 defaults for the cheetahs (the torso's position is observed) and the ants
(ant-dir observes no contact forces; ant-goal observes its x-y position, without which its
policy cannot tell where it is relative to the goal); features that are always zero there
(the world body's forces, the humanoid's root actuator forces) are left out. Frame skips,
reset noise and health checks are gymnasium's v5; rewards, task distributions and split sizes
follow SPEC E3 (PEARL's public code).
Velocities are displacements of ``position`` over one env step divided by ``dt``; the
ant's position is its torso's ``qpos``, the humanoid's its centre of mass (from ``xipos``,
as in gymnasium and PEARL).
"""
from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np

from metarl.envs.base import Task
from metarl.envs.mujoco_batch import GYM_ASSETS, MujocoEnv, MujocoFamily, State, torso_unhealthy


def control_cost(action: np.ndarray, weight: float) -> np.ndarray:
    return weight * np.square(action).sum(axis=1)


def no_termination(s: State) -> np.ndarray:
    return np.zeros(len(s["qpos"]), dtype=bool)


def directions(tasks, key: str = "angle") -> np.ndarray:
    angles = np.array([t[key] for t in tasks], dtype=np.float64)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


class _RandomTaskFamily(MujocoFamily):
    """A family whose splits are independent draws from one task distribution."""

    @abstractmethod
    def sample_tasks(self, rng: np.random.Generator, n: int) -> list[Task]: ...

    def sample_splits(self, rng: np.random.Generator) -> dict[str, list[Task]]:
        return {split: self.sample_tasks(rng, n) for split, n in self.split_sizes.items()}


class _HalfCheetah(MujocoFamily):
    model_path = GYM_ASSETS / "half_cheetah.xml"
    frame_skip = 5
    reset_noise_scale = 0.1
    qvel_noise = "normal"
    derived_fields = ("xpos",)

    def observe(self, s: State) -> np.ndarray:
        # oyster rlkit/envs/half_cheetah.py: gymnasium's observation plus get_body_com("torso"),
        # the torso frame's position (x, 0, z) as MjData holds it after the step
        return np.concatenate([s["qpos"][:, 1:], s["qvel"], s["xpos"][:, 1]], axis=1)

    def position(self, s: State) -> np.ndarray:
        return s["qpos"][:, :1]

    def x_velocity(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        return (after - before)[:, 0] / self.dt


class HalfCheetahVelFamily(_HalfCheetah, _RandomTaskFamily):
    """Run at a target velocity v* ~ U(0, 3): reward −|v_x − v*| − 0.05‖a‖²."""

    name, gym_id = "cheetah_vel", "metarl/HalfCheetahVel-v0"
    split_sizes: ClassVar[dict[str, int]] = {"train": 100, "test": 30}

    def sample_tasks(self, rng, n):
        return [{"velocity": float(v)} for v in rng.uniform(0.0, 3.0, n)]

    def task_array(self, tasks):
        return np.array([[t["velocity"]] for t in tasks], dtype=np.float64)

    def reward(self, s, before, after, action, task):
        reward = -np.abs(self.x_velocity(before, after) - task[:, 0]) - control_cost(action, 0.05)
        return reward, no_termination(s)


class HalfCheetahDirFamily(_HalfCheetah):
    """Run forwards (+1) or backwards (−1): reward dir·v_x − 0.05‖a‖²."""

    name, gym_id = "cheetah_dir", "metarl/HalfCheetahDir-v0"
    split_sizes: ClassVar[dict[str, int]] = {"train": 2, "test": 2}

    def sample_splits(self, rng):
        return {split: [{"direction": 1.0}, {"direction": -1.0}] for split in self.split_sizes}

    def task_array(self, tasks):
        return np.array([[t["direction"]] for t in tasks], dtype=np.float64)

    def reward(self, s, before, after, action, task):
        reward = task[:, 0] * self.x_velocity(before, after) - control_cost(action, 0.05)
        return reward, no_termination(s)


class _Ant(MujocoFamily):
    model_path = GYM_ASSETS / "ant.xml"
    frame_skip = 5
    reset_noise_scale = 0.1
    qvel_noise = "normal"
    contact_forces = True
    camera_distance = 6.0
    healthy_height = (0.2, 1.0)  # gymnasium's Ant healthy_z_range

    def observe(self, s: State) -> np.ndarray:
        # oyster rlkit/envs/ant.py (ant-dir): joint positions without x-y, and velocities; the
        # contact forces enter the reward only
        return np.concatenate([s["qpos"][:, 2:], s["qvel"]], axis=1)

    def position(self, s: State) -> np.ndarray:
        return s["qpos"][:, :2]

    def contact_cost(self, s: State) -> np.ndarray:
        return 5e-4 * np.square(np.clip(s["cfrc_ext"], -1.0, 1.0)).sum(axis=(1, 2))


class AntFwdBackFamily(_Ant):
    """Walk along direction 0 or π: reward v·dir − 0.5‖a‖² − contact cost + 1."""

    name, gym_id = "ant_fwd_back", "metarl/AntFwdBack-v0"
    split_sizes: ClassVar[dict[str, int]] = {"train": 2, "test": 2}

    def sample_splits(self, rng):
        return {split: [{"angle": 0.0}, {"angle": float(np.pi)}] for split in self.split_sizes}

    def task_array(self, tasks):
        return directions(tasks)

    def reward(self, s, before, after, action, task):
        velocity = ((after - before) * task).sum(axis=1) / self.dt
        reward = velocity - control_cost(action, 0.5) - self.contact_cost(s) + 1.0
        return reward, torso_unhealthy(s, self.healthy_height)


class AntGoalFamily(_Ant, _RandomTaskFamily):
    """Walk to a goal uniform in the disc of radius 3 (never observed):
    reward −‖xy − goal‖₁ − 0.1‖a‖² − contact cost; no termination."""

    name, gym_id = "ant_goal", "metarl/AntGoal-v0"
    split_sizes: ClassVar[dict[str, int]] = {"train": 150, "test": 30}

    def sample_tasks(self, rng, n):
        angle = rng.uniform(0.0, 2 * np.pi, n)
        radius = 3.0 * np.sqrt(rng.uniform(0.0, 1.0, n))  # uniform in area
        return [{"goal": [float(r * np.cos(a)), float(r * np.sin(a))]} for a, r in zip(angle, radius)]

    def task_array(self, tasks):
        return np.array([t["goal"] for t in tasks], dtype=np.float64)

    def observe(self, s: State) -> np.ndarray:
        # oyster rlkit/envs/ant_goal.py: the whole qpos (x-y included), qvel and the clipped
        # contact forces (less the world body's, always zero)
        forces = np.clip(s["cfrc_ext"][:, 1:], -1.0, 1.0).reshape(len(s["qpos"]), -1)
        return np.concatenate([s["qpos"], s["qvel"], forces], axis=1)

    def reward(self, s, before, after, action, task):
        reward = -np.abs(after - task).sum(axis=1) - control_cost(action, 0.1) - self.contact_cost(s)
        return reward, no_termination(s)


class HumanoidDirFamily(_RandomTaskFamily):
    """Walk along a direction θ ~ U(0, 2π): reward 0.25·(Δcom·dir)/timestep − 0.1‖a‖²
    − min(5e-7·‖cfrc_ext‖², 10) + 5, PEARL's (0.25/timestep = 1.25/dt, gymnasium's weight)."""

    name, gym_id = "humanoid_dir", "metarl/HumanoidDir-v0"
    split_sizes: ClassVar[dict[str, int]] = {"train": 100, "test": 30}
    model_path = GYM_ASSETS / "humanoid.xml"
    frame_skip = 5
    reset_noise_scale = 1e-2
    contact_forces = True
    derived_fields = ("cinert", "cvel", "qfrc_actuator", "xipos")

    def sample_tasks(self, rng, n):
        return [{"angle": float(a)} for a in rng.uniform(0.0, 2 * np.pi, n)]

    def task_array(self, tasks):
        return directions(tasks)

    def observe(self, s):
        n = len(s["qpos"])
        parts = [s["qpos"][:, 2:], s["qvel"], s["cinert"][:, 1:], s["cvel"][:, 1:], s["qfrc_actuator"][:, 6:], s["cfrc_ext"][:, 1:]]
        return np.concatenate([p.reshape(n, -1) for p in parts], axis=1)

    def position(self, s):
        mass = self.model.body_mass
        return np.einsum("b,nbj->nj", mass / mass.sum(), s["xipos"])[:, :2]

    def reward(self, s, before, after, action, task):
        forward = 0.25 * ((after - before) * task).sum(axis=1) / self.model.opt.timestep
        impact = np.minimum(5e-7 * np.square(s["cfrc_ext"]).sum(axis=(1, 2)), 10.0)
        reward = forward - control_cost(action, 0.1) - impact + 5.0
        z = s["qpos"][:, 2]
        return reward, ~((z > 1.0) & (z < 2.0))


class WalkerParamsFamily(_RandomTaskFamily):
    """Walker2d whose body masses and inertias (×1.5^u), joint damping (×1.3^u) and
    friction (×1.5^u), u ~ U(−3, 3) per element, vary per task: reward v_x + 1 − 1e-3‖a‖².

    A task stores the multipliers (``"body_mass_scale"``...); envs scale their own model's
    fields from pristine copies, so switching tasks restores the model exactly.
    """

    name, gym_id = "walker_params", "metarl/WalkerParams-v0"
    split_sizes: ClassVar[dict[str, int]] = {"train": 40, "test": 10}
    model_path = GYM_ASSETS / "walker2d_v5.xml"
    frame_skip = 4
    reset_noise_scale = 5e-3
    task_model_fields = ("body_mass", "body_inertia", "dof_damping", "geom_friction")
    _log_scale_base: ClassVar[dict[str, float]] = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}

    def sample_tasks(self, rng, n):
        return [
            {
                f"{name}_scale": (base ** rng.uniform(-3.0, 3.0, getattr(self.model, name).shape)).tolist()
                for name, base in self._log_scale_base.items()
            }
            for _ in range(n)
        ]

    def task_model_scales(self, task):
        return {name: np.asarray(task[f"{name}_scale"], dtype=np.float64) for name in self.task_model_fields}

    def task_array(self, tasks):
        return np.zeros((len(tasks), 0))

    def observe(self, s):
        return np.concatenate([s["qpos"][:, 1:], np.clip(s["qvel"], -10.0, 10.0)], axis=1)

    def position(self, s):
        return s["qpos"][:, :1]

    def reward(self, s, before, after, action, task):
        reward = (after - before)[:, 0] / self.dt + 1.0 - control_cost(action, 1e-3)
        z, angle = s["qpos"][:, 1], s["qpos"][:, 2]
        return reward, ~((z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0))


class HalfCheetahVelEnv(MujocoEnv):
    family_cls = HalfCheetahVelFamily


class HalfCheetahDirEnv(MujocoEnv):
    family_cls = HalfCheetahDirFamily


class AntFwdBackEnv(MujocoEnv):
    family_cls = AntFwdBackFamily


class AntGoalEnv(MujocoEnv):
    family_cls = AntGoalFamily


class HumanoidDirEnv(MujocoEnv):
    family_cls = HumanoidDirFamily


class WalkerParamsEnv(MujocoEnv):
    family_cls = WalkerParamsFamily
