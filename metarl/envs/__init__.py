"""Task families. ``FAMILIES`` maps the name used in config.yaml to the implementing class;
modules are imported on first use so that ``import metarl`` stays cheap (no MuJoCo load)."""
from __future__ import annotations

import importlib

import gymnasium as gym

from metarl.envs.base import BatchedEnv, Task, TaskFamily

# config name -> (module, family class, gymnasium env class, gymnasium id)
_REGISTRY: dict[str, tuple[str, str, str, str]] = {
    "gridworld": ("metarl.envs.gridworld", "GridWorldFamily", "GridWorldEnv", "metarl/GridWorld-v0"),
    "point_robot": ("metarl.envs.point_robot", "PointRobotFamily", "PointRobotEnv", "metarl/PointRobot-v0"),
    "sparse_point_robot": ("metarl.envs.point_robot", "SparsePointRobotFamily", "SparsePointRobotEnv", "metarl/SparsePointRobot-v0"),
    "dirichlet_point_robot": ("metarl.envs.point_robot", "DirichletPointRobotFamily", "DirichletPointRobotEnv", "metarl/DirichletPointRobot-v0"),
    "cheetah_vel": ("metarl.envs.locomotion", "HalfCheetahVelFamily", "HalfCheetahVelEnv", "metarl/HalfCheetahVel-v0"),
    "cheetah_dir": ("metarl.envs.locomotion", "HalfCheetahDirFamily", "HalfCheetahDirEnv", "metarl/HalfCheetahDir-v0"),
    "ant_fwd_back": ("metarl.envs.locomotion", "AntFwdBackFamily", "AntFwdBackEnv", "metarl/AntFwdBack-v0"),
    "ant_goal": ("metarl.envs.locomotion", "AntGoalFamily", "AntGoalEnv", "metarl/AntGoal-v0"),
    "humanoid_dir": ("metarl.envs.locomotion", "HumanoidDirFamily", "HumanoidDirEnv", "metarl/HumanoidDir-v0"),
    "walker_params": ("metarl.envs.locomotion", "WalkerParamsFamily", "WalkerParamsEnv", "metarl/WalkerParams-v0"),
    "wheeled": ("metarl.envs.reaching", "WheeledFamily", "WheeledEnv", "metarl/Wheeled-v0"),
    "small_ant": ("metarl.envs.reaching", "SmallAntFamily", "SmallAntEnv", "metarl/SmallAnt-v0"),
    "reacher_2link": ("metarl.envs.reaching", "Reacher2LinkFamily", "Reacher2LinkEnv", "metarl/Reacher2Link-v0"),
    "reacher_4link": ("metarl.envs.reaching", "Reacher4LinkFamily", "Reacher4LinkEnv", "metarl/Reacher4Link-v0"),
}

FAMILY_NAMES = tuple(_REGISTRY)

for _module, _family, _env, _gym_id in _REGISTRY.values():
    if _gym_id not in gym.registry:
        gym.register(id=_gym_id, entry_point=f"{_module}:{_env}")


def get_family(name: str) -> TaskFamily:
    """Instantiate the task family called ``name`` in config.yaml."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown task family {name!r}; known families: {', '.join(FAMILY_NAMES)}")
    module, family_cls, _, _ = _REGISTRY[name]
    return getattr(importlib.import_module(module), family_cls)()


__all__ = ["FAMILY_NAMES", "BatchedEnv", "Task", "TaskFamily", "get_family"]
