"""Machinery shared by every MuJoCo task family: model loading, the gymnasium env and the
batched env.

A family (:class:`MujocoFamily`) states its physics once, as numpy functions of a batch of
simulation states (``observe``, ``position``, ``reward``). Both env forms call the same
functions: the gymnasium env with a batch of one built from its ``MjData``, the batched env
with arrays bound to a :class:`mujoco.batch.Batch`, which steps all simulations in C on a
thread pool, without the GIL, bit-identically to a loop over one ``MjData`` per simulation.
So both forms give the same observations, rewards and terminations for the same tasks,
seeds and actions (up to the batched env's float32 tensors).

Seeding: ``gym_env.reset(seed=s)`` and ``batched.reset(seed=s)`` draw env ``i``'s initial
state from ``np.random.default_rng(s + i)`` (gymnasium's vector-env convention; ``i = 0``
for the gymnasium env); ``batched.reset(seed=[s0, s1, ...])`` gives each env its seed.
``batched.reset()`` draws ``s`` from torch's global generator, which the training driver
seeds and checkpoints: no fresh entropy, so runs repeat exactly, after a resume too.

State fields other than ``qpos``/``qvel`` (``cinert``, ``xipos``...) are, as everywhere
after ``mj_step``, those of the last substep's last forward pass, one substep behind
``qpos``. ``cfrc_ext`` (contact forces) is what gymnasium's MuJoCo envs compute: zero
after a reset, and after a step ``mj_rnePostConstraint`` on that same last forward pass.
"""
from __future__ import annotations

import copy
import functools
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
import torch
from mujoco import batch as mjbatch

from metarl.envs.base import BatchedEnv, Task, TaskFamily

GYM_ASSETS = Path(gym.__file__).parent / "envs" / "mujoco" / "assets"
ASSETS = Path(__file__).parent / "assets"

State = dict[str, np.ndarray]  # MjData field name -> (B, ...) array

#: the families built on this module (config names)
MUJOCO_FAMILIES = (
    "cheetah_vel", "cheetah_dir", "ant_fwd_back", "ant_goal", "humanoid_dir", "walker_params",
    "wheeled", "small_ant", "reacher_2link", "reacher_4link",
)


def reference_qpos(model: mujoco.MjModel) -> np.ndarray:
    """The pose episodes start from: the model's keyframe "init" if it has one, else qpos0."""
    init = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, "init")
    return model.key_qpos[init].copy() if init >= 0 else model.qpos0.copy()


def torso_unhealthy(s: State, height: tuple[float, float]) -> np.ndarray:
    """A free-jointed torso's health check: a non-finite state, or the torso's height (qpos[2])
    outside ``height`` (bounds included in the healthy range)."""
    finite = np.isfinite(s["qpos"]).all(axis=1) & np.isfinite(s["qvel"]).all(axis=1)
    z = s["qpos"][:, 2]
    return ~(finite & (z >= height[0]) & (z <= height[1]))


def load_model(path: Path) -> mujoco.MjModel:
    """Compile the MJCF at ``path`` (through MjSpec, whose compiler warnings are Python warnings
    rather than lines appended to a MUJOCO_LOG.TXT in the working directory)."""
    with warnings.catch_warnings():
        # gymnasium's half_cheetah.xml uses it; the compiled model is what gymnasium simulates
        warnings.filterwarnings("ignore", message="compiler attribute 'settotalmass' is deprecated")
        return mujoco.MjSpec.from_file(str(path)).compile()


class MujocoFamily(TaskFamily):
    """A task family on one MuJoCo model; subclasses define the task-dependent physics."""

    model_path: Path
    frame_skip: int
    horizon = 200
    #: MjData outputs that ``observe``/``position``/``reward`` read besides qpos, qvel and cfrc_ext
    derived_fields: tuple[str, ...] = ()
    contact_forces = False  # whether they read cfrc_ext, which mj_step leaves uncomputed
    #: initial state = reference pose + U(-s, s) on qpos and U(-s, s) or s*N(0, 1) on qvel
    reset_noise_scale: float
    qvel_noise = "uniform"
    camera_distance, camera_elevation = 4.0, -25.0
    #: MjModel fields each task scales (Walker-Params), restored from pristine copies
    task_model_fields: tuple[str, ...] = ()

    @functools.cached_property
    def model(self) -> mujoco.MjModel:
        """A shared pristine model, for constants; every env compiles its own."""
        return self.load_model()

    @functools.cached_property
    def obs_dim(self) -> int:
        return self.observe(_state_of(mujoco.MjData(self.model), self.state_fields)).shape[1]

    @property
    def act_dim(self) -> int:
        return self.model.nu

    @functools.cached_property
    def dt(self) -> float:
        return self.model.opt.timestep * self.frame_skip

    @property
    def state_fields(self) -> tuple[str, ...]:
        """The MjData fields the physics functions read."""
        return ("qpos", "qvel", *self.derived_fields, *(("cfrc_ext",) if self.contact_forces else ()))

    def load_model(self) -> mujoco.MjModel:
        return load_model(self.model_path)

    @abstractmethod
    def task_array(self, tasks: Sequence[Task]) -> np.ndarray:
        """The tasks' parameters as a ``(B, k)`` array for the vectorised reward."""

    @abstractmethod
    def observe(self, s: State) -> np.ndarray:
        """Observations ``(B, obs_dim)``."""

    @abstractmethod
    def position(self, s: State) -> np.ndarray:
        """The point whose displacement (locomotion) or distance to a goal (reaching) is
        rewarded, ``(B, d)``."""

    @abstractmethod
    def reward(
        self, s: State, before: np.ndarray, after: np.ndarray, action: np.ndarray, task: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rewards and terminations ``(B,)`` of a step that moved ``position`` from ``before``
        to ``after`` under ``action`` ``(B, act_dim)``."""

    def task_model_scales(self, task: Task) -> dict[str, np.ndarray]:
        """Multipliers of the ``task_model_fields`` for ``task``."""
        return {}

    def initial_state(self, rng: np.random.Generator, qpos0: np.ndarray, nv: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.reset_noise_scale
        qpos = qpos0 + rng.uniform(-s, s, qpos0.size)
        if self.qvel_noise == "normal":
            return qpos, s * rng.standard_normal(nv)
        return qpos, rng.uniform(-s, s, nv)

    def make_batched(self, num_envs: int, device: torch.device | str = "cpu", num_threads: int = 1) -> MujocoBatchedEnv:
        return MujocoBatchedEnv(self, num_envs, device, num_threads)

    def default_task(self) -> Task:
        """The task of an env made without one: the first training task of seed 0."""
        return next(iter(self.sample_splits(np.random.default_rng(0)).values()))[0]


def _state_of(data: mujoco.MjData, fields: tuple[str, ...]) -> State:
    """One MjData as a batch of one."""
    return {name: getattr(data, name)[None] for name in fields}


class MujocoEnv(gym.Env):
    """The gymnasium form of a family: one task, one ``MjData``; truncates at the horizon."""

    family_cls: type[MujocoFamily]
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, task: Task | None = None, render_mode: str | None = None, width: int = 480, height: int = 480):
        self.family = self.family_cls()
        self.model = self.family.load_model()
        self.data = mujoco.MjData(self.model)
        self._qpos0 = reference_qpos(self.model)
        self._pristine = {name: getattr(self.model, name).copy() for name in self.family.task_model_fields}
        self.dt = self.family.dt
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.dt)}
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.family.obs_dim,), np.float64)
        low, high = self.model.actuator_ctrlrange.T.astype(np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        assert render_mode is None or render_mode in self.metadata["render_modes"]
        self.render_mode = render_mode
        self._render_size = (height, width)
        self._renderer: mujoco.Renderer | None = None
        self.set_task(task if task is not None else self.family.default_task())
        self._steps = 0
        self._position = self.family.position(self._state())

    def set_task(self, task: Task) -> None:
        self.task = task
        self._task_array = self.family.task_array([task])
        for name, scale in self.family.task_model_scales(task).items():
            getattr(self.model, name)[:] = self._pristine[name] * scale

    def _state(self) -> State:
        return _state_of(self.data, self.family.state_fields)

    def _obs(self) -> np.ndarray:
        return self.family.observe(self._state())[0].copy()

    def _info(self) -> dict[str, Any]:
        return {"task": copy.deepcopy(self.task)}  # a fresh copy: callers may keep or edit infos

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        mujoco.mj_resetData(self.model, self.data)
        self.set_state(*self.family.initial_state(self.np_random, self._qpos0, self.model.nv))
        self._steps = 0
        return self._obs(), self._info()

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Put the simulation in state (qpos, qvel): the next step starts from there."""
        self.data.qpos[:], self.data.qvel[:] = qpos, qvel
        mujoco.mj_forward(self.model, self.data)
        self._position = self.family.position(self._state()).copy()

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.family.frame_skip)
        if self.family.contact_forces:  # as gymnasium's MujocoEnv does after stepping
            mujoco.mj_rnePostConstraint(self.model, self.data)
        state = self._state()
        after = self.family.position(state).copy()
        reward, terminated = self.family.reward(state, self._position, after, action[None], self._task_array)
        self._position = after
        self._steps += 1
        truncated = self._steps >= self.family.horizon
        return self._obs(), float(reward[0]), bool(terminated[0]), truncated, self._info()

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, *self._render_size)
            self._camera = mujoco.MjvCamera()
            self._camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
            self._camera.trackbodyid = 1
            self._camera.distance = self.family.camera_distance
            self._camera.elevation = self.family.camera_elevation
        self._renderer.update_scene(self.data, self._camera)
        return self._renderer.render()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


@dataclass
class StateRecording:
    """The simulation states of one episode of a batched env (from a reset to the next):
    ``qpos``/``qvel`` ``(B, nq)``/``(B, nv)`` after the reset and after each step, and which
    simulations were ``done`` ``(B,)`` after each step (frozen ones repeat their last state)."""

    tasks: list[Task]
    qpos: list[np.ndarray] = field(default_factory=list)
    qvel: list[np.ndarray] = field(default_factory=list)
    done: list[np.ndarray] = field(default_factory=list)


class MujocoBatchedEnv(BatchedEnv):
    """B simulations of one family on a :class:`mujoco.batch.Batch`; obs/rewards float32.

    ``num_threads`` threads step the simulations (1: the calling thread only). Setting
    ``recording`` to a list makes every reset append a :class:`StateRecording` that the steps
    fill (for videos, metarl/videos.py); ``None``, the default, records nothing.
    """

    discrete = False
    recording: list[StateRecording] | None = None

    def __init__(self, family: MujocoFamily, num_envs: int, device: torch.device | str = "cpu", num_threads: int = 1):
        self.family = family
        self.num_envs, self.device = num_envs, torch.device(device)
        self.obs_dim, self.act_dim, self.horizon = family.obs_dim, family.act_dim, family.horizon
        self.model = family.load_model()
        self._qpos0 = reference_qpos(self.model)
        # contact forces need each simulation's whole MjData after its step (contacts, constraint
        # forces), which only a persistent batch keeps
        self.batch = mjbatch.Batch(self.model, nsim=num_envs, nthread=num_threads, persistent=family.contact_forces)
        self._fields = {name: self.batch.bind(name) for name in ("qpos", "qvel", *family.derived_fields)}
        if family.contact_forces:
            self._fields["cfrc_ext"] = np.zeros((num_envs, self.model.nbody, 6))
            self._scratch = mujoco.MjData(self.model)
        self._ctrl = self.batch.bind("ctrl")
        self._pristine = {name: getattr(self.model, name).copy() for name in family.task_model_fields}
        self._done = np.ones(num_envs, dtype=bool)  # terminated or truncated: frozen
        self._terminated = np.zeros(num_envs, dtype=bool)
        self._truncated = np.zeros(num_envs, dtype=bool)
        self._steps = 0
        self.set_tasks([family.default_task()] * num_envs)

    def set_tasks(self, tasks: list[Task]) -> None:
        if len(tasks) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} tasks, got {len(tasks)}")
        self.tasks = list(tasks)
        self._task_array = self.family.task_array(tasks)
        if self.family.task_model_fields:
            per_sim = {name: self.batch.expand(name) for name in self.family.task_model_fields}
            for i, task in enumerate(tasks):
                for name, scale in self.family.task_model_scales(task).items():
                    per_sim[name][i] = self._pristine[name] * scale

    def reset(self, seed: int | Sequence[int] | None = None) -> torch.Tensor:
        if seed is None:  # from torch's global generator, never fresh entropy (module docstring)
            seed = int(torch.randint(2**31 - 1, ()))
        seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
        self.batch.reset(stage=mujoco.mjtStage.mjSTAGE_NONE)
        qpos, qvel = self._fields["qpos"], self._fields["qvel"]
        for i, s in enumerate(seeds):
            qpos[i], qvel[i] = self.family.initial_state(np.random.default_rng(s), self._qpos0, self.model.nv)
        self.batch.forward()
        if self.family.contact_forces:
            self._fields["cfrc_ext"][:] = 0.0  # as gymnasium's reset leaves it
        self._position = self.family.position(self._fields).copy()
        self._done[:] = self._terminated[:] = self._truncated[:] = False
        self._steps = 0
        if self.recording is not None:
            self.recording.append(StateRecording(list(self.tasks), [qpos.copy()], [qvel.copy()]))
        return self._to_tensor(self.family.observe(self._fields))

    def step(self, actions: torch.Tensor):
        action = actions.detach().to("cpu", torch.float64).numpy()
        active = ~self._done
        all_active = active.all()
        # frozen simulations are not stepped, so their state, obs and position stay as they were
        if all_active:
            self._ctrl[:] = action
            self.batch.step(nstep=self.family.frame_skip)
        elif active.any():
            self._ctrl[active] = action[active]
            self.batch.step(np.flatnonzero(active), nstep=self.family.frame_skip)
        if self.family.contact_forces:
            self._post_constraint_forces(np.flatnonzero(active))
        after = self.family.position(self._fields).copy()
        reward, terminated = self.family.reward(self._fields, self._position, after, action, self._task_array)
        self._position = after
        self._steps += 1
        self._terminated |= active & terminated
        if self._steps >= self.horizon:
            self._truncated |= active
        self._done = self._terminated | self._truncated
        if self.recording is not None:
            record = self.recording[-1]
            record.qpos.append(self._fields["qpos"].copy())
            record.qvel.append(self._fields["qvel"].copy())
            record.done.append(self._done.copy())
        if not all_active:
            reward = np.where(active, reward, 0.0)
        obs = self.family.observe(self._fields)
        return self._to_tensor(obs), self._to_tensor(reward), self._to_tensor(self._terminated), self._to_tensor(self._truncated), {}

    def _post_constraint_forces(self, sims: np.ndarray) -> None:
        """``cfrc_ext`` of the stepped simulations, by ``mj_rnePostConstraint`` on each one's
        MjData as its step left it, as gymnasium does. Of the model it reads only the structure
        and options, which no task changes, so the batch's model serves every simulation."""
        forces, data = self._fields["cfrc_ext"], self._scratch
        for i in sims:
            self.batch.get_data(i, data)
            mujoco.mj_rnePostConstraint(self.model, data)
            forces[i] = data.cfrc_ext

    def _to_tensor(self, x: np.ndarray) -> torch.Tensor:
        """float32 (bool kept) copies, on the env's device."""
        tensor = torch.from_numpy(x.copy() if x.dtype == bool else x.astype(np.float32))
        return tensor if self.device.type == "cpu" else tensor.to(self.device)
