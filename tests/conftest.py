import copy
import os
import shutil
from pathlib import Path

# MuJoCo picks its OpenGL backend when first imported, whichever test imports it first: headless
# offscreen rendering (tests/test_videos.py) needs EGL (Mesa's software EGL without a GPU)
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest
import torch
import yaml

from metarl import config as metarl_config
from metarl.tasksets import write_taskset

REPO = Path(__file__).resolve().parent.parent

# Tiny networks gain nothing from intra-op threads, and on a loaded 2-core runner the extra
# threads make them many times slower; the pipeline's jobs set their own thread count.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where tests that take this fixture run: METARL_TEST_DEVICE (benchmarks/gpu_check.sh sets
    cuda), cpu by default."""
    return torch.device(os.environ.get("METARL_TEST_DEVICE", "cpu"))


@pytest.fixture(scope="session")
def repo_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture
def config(repo_config) -> dict:
    return copy.deepcopy(repo_config)


def smoke_job(repo_config: dict, directory: Path, experiment: str, family: str, method: str) -> tuple[dict, Path]:
    """The run spec of seed 0 at smoke scale and a task-set file for it (task seed 3) in ``directory``."""
    config = copy.deepcopy(repo_config)
    config["scale"] = "smoke"
    spec = metarl_config.run_spec(config, experiment, family, method, 0)
    taskset = Path(directory) / f"{family}.json"
    write_taskset(family, 3, taskset)
    return spec, taskset


def copy_workflow(dest: Path, config: dict) -> Path:
    """A runnable copy of the pipeline (Snakefile, rules, profiles) with ``config`` as config.yaml."""
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    shutil.copytree(REPO / "workflow", dest / "workflow")
    shutil.copytree(REPO / "profiles", dest / "profiles", symlinks=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


@pytest.fixture
def float64():
    """Reference tests compare in double precision: torch's default dtype is float64 inside."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def random_policy_returns(family, tasks, episodes: int, seed: int = 0) -> torch.Tensor:
    """``(len(tasks), episodes)`` returns of uniformly random actions: the baseline that learning
    tests beat, from metarl's ``random`` method (itself checked against a gymnasium replay in
    test_protocol.py)."""
    from metarl.methods.random_policy import RandomPolicy

    torch.manual_seed(seed)
    baseline = RandomPolicy(family, {"train": tasks}, RandomPolicy.make_hparams({}), "train", torch.device("cpu"))
    return baseline.adaptation_returns(tasks, episodes)


class CountingEnv:
    """Wraps a batched env for the protocol tests: counts its reset and step calls, and keeps each
    reset's observations and each step's evaluation reward (the sparse one where the env reports
    it), zero once an env's episode has ended."""

    def __init__(self, env):
        self.env, self.resets, self.steps, self.starts, self.rewards, self.done = env, 0, 0, [], [], None

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, *args, **kwargs):
        obs = self.env.reset(*args, **kwargs)
        self.resets += 1
        self.starts.append(obs.clone())
        self.rewards.append([])
        self.done = torch.zeros(self.env.num_envs, dtype=torch.bool, device=obs.device)
        return obs

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.steps += 1
        self.rewards[-1].append(torch.where(self.done, 0.0, info.get("sparse_reward", reward)))
        self.done = self.done | terminated | truncated
        return obs, reward, terminated, truncated, info


class CountingFamily:
    """Wraps a family so that every batched env it makes from now on is a ``CountingEnv`` (in
    ``envs``); ``episodes`` and ``env_steps`` total them over the envs' parallel copies."""

    def __init__(self, family):
        self.family, self.envs = family, []

    def __getattr__(self, name):
        return getattr(self.family, name)

    def make_batched(self, num_envs, device="cpu"):
        self.envs.append(CountingEnv(self.family.make_batched(num_envs, device)))
        return self.envs[-1]

    @property
    def episodes(self) -> int:
        return sum(env.resets * env.num_envs for env in self.envs)

    @property
    def env_steps(self) -> int:
        return sum(env.steps * env.num_envs for env in self.envs)


def assert_resume_equals_uninterrupted(make) -> None:
    """Two training iterations of ``make()`` equal, bit for bit, one iteration followed by a fresh
    method that loads its state (and torch's RNG state) and trains the second: model, env steps
    and, where the method has one, its replay buffer."""
    torch.manual_seed(0)
    a = make()
    a.train_iteration()
    state, rng = copy.deepcopy(a.state_dict()), torch.get_rng_state()
    a.train_iteration()
    b = make()
    b.load_state_dict(state)
    torch.set_rng_state(rng)
    b.train_iteration()
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    assert a.env_steps == b.env_steps
    if hasattr(a, "buffer"):
        torch.testing.assert_close(a.buffer.data, b.buffer.data, rtol=0, atol=0)
