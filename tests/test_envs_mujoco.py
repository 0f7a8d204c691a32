"""The ten MuJoCo task families: rewards on hand-built states, terminations, task sets,
gymnasium conformance, batched == gymnasium form, Walker-Params model restoration."""
from __future__ import annotations

import json
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from metarl.envs import get_family
from metarl.envs.mujoco_batch import ASSETS, load_model, reference_qpos
from metarl.envs.reaching import IN_DISTRIBUTION, OUT_OF_DISTRIBUTION

LOCOMOTION = ["cheetah_vel", "cheetah_dir", "ant_fwd_back", "ant_goal", "humanoid_dir", "walker_params"]
REACHING = ["wheeled", "small_ant", "reacher_2link", "reacher_4link"]
FAMILIES = LOCOMOTION + REACHING


def step_from(env, task, qpos=None, qvel=None, action=None):
    """Reset ``env`` (unwrapped) to ``task``, overwrite its state, take one step; return the
    step's reward and termination and copies of qpos and xipos before and after it."""
    env.reset(seed=0, options={"task": task})
    data = env.data
    env.set_state(data.qpos if qpos is None else qpos, data.qvel if qvel is None else qvel)
    before = {"qpos": data.qpos.copy(), "xipos": data.xipos.copy()}
    action = np.zeros(env.model.nu) if action is None else np.asarray(action, dtype=np.float64)
    _, reward, terminated, _, _ = env.step(action)
    return reward, terminated, before, action


def make(name, task=None):
    return get_family(name).make_gym(task).unwrapped


# ---------------------------------------------------------------- rewards on hand-built states


def test_cheetah_vel_reward():
    env = make("cheetah_vel")
    qvel = np.zeros(env.model.nv)
    qvel[0] = 2.0
    action = np.full(6, 0.5)
    reward, terminated, before, _ = step_from(env, {"velocity": 1.5}, qvel=qvel, action=action)
    v = (env.data.qpos[0] - before["qpos"][0]) / (5 * 0.01)
    assert reward == pytest.approx(-abs(v - 1.5) - 0.05 * 6 * 0.25, abs=1e-12)
    assert v > 1.0 and not terminated


def test_cheetah_dir_reward():
    env = make("cheetah_dir")
    qvel = np.zeros(env.model.nv)
    qvel[0] = 2.0
    for direction in (1.0, -1.0):
        reward, _, before, _ = step_from(env, {"direction": direction}, qvel=qvel)
        v = (env.data.qpos[0] - before["qpos"][0]) / 0.05
        assert reward == pytest.approx(direction * v, abs=1e-12)


# Contact costs come from gymnasium's own Ant-v5 / Humanoid-v5 (same MJCF files, same
# qpos/qvel/action), whose contact forces are those of mj_rnePostConstraint after the step.


def gymnasium_state_after(gym_id, steps):
    """qpos and qvel of gymnasium's env after ``steps`` zero-action steps from reset(seed=0)."""
    env = gym.make(gym_id).unwrapped
    env.reset(seed=0)
    for _ in range(steps):
        env.step(np.zeros(env.action_space.shape))
    return env.data.qpos.copy(), env.data.qvel.copy()


def gymnasium_step(gym_id, qpos, qvel, action):
    """One step of gymnasium's env from (qpos, qvel): its info dict and its MjData."""
    env = gym.make(gym_id).unwrapped
    env.reset(seed=0)
    env.set_state(qpos, qvel)
    info = env.step(action)[4]
    return info, env.data


# the ant stands on its legs after 20 steps, the humanoid's feet are on the floor from step 9
ANT_LANDED, HUMANOID_LANDED = ("Ant-v5", 20), ("Humanoid-v5", 10)


def test_ant_fwd_back_reward_and_termination():
    env = make("ant_fwd_back")
    qpos, qvel = gymnasium_state_after(*ANT_LANDED)
    qvel[:2] += (1.0, 0.5)
    action = np.full(8, 0.2)
    for angle in (0.0, np.pi):
        reward, terminated, before, _ = step_from(env, {"angle": angle}, qpos, qvel, action)
        info, gym_data = gymnasium_step("Ant-v5", qpos, qvel, action)
        np.testing.assert_array_equal(env.data.qpos, gym_data.qpos)  # the same physics
        assert info["reward_contact"] < 0  # standing: the contact term is in play
        displacement = env.data.qpos[:2] - before["qpos"][:2]
        velocity = displacement @ [np.cos(angle), np.sin(angle)] / 0.05
        assert reward == pytest.approx(velocity - 0.5 * 8 * 0.04 + info["reward_contact"] + 1.0, abs=1e-12)
        assert not terminated
    qpos = env.model.qpos0.copy()
    qpos[2] = 1.5  # torso above the healthy range [0.2, 1]
    _, terminated, _, _ = step_from(env, {"angle": 0.0}, qpos=qpos)
    assert terminated


def test_ant_goal_reward_never_terminates():
    env = make("ant_goal")
    qpos, qvel = gymnasium_state_after(*ANT_LANDED)
    action = np.full(8, -0.3)
    reward, terminated, _, _ = step_from(env, {"goal": [1.0, -2.0]}, qpos, qvel, action)
    info, _ = gymnasium_step("Ant-v5", qpos, qvel, action)
    assert info["reward_contact"] < 0
    l1 = abs(env.data.qpos[0] - 1.0) + abs(env.data.qpos[1] + 2.0)
    assert reward == pytest.approx(-l1 - 0.1 * 8 * 0.09 + info["reward_contact"], abs=1e-12)
    qpos[2] = 1.5  # outside the ant's healthy range, which Ant-Goal ignores
    assert not step_from(env, {"goal": [1.0, -2.0]}, qpos=qpos)[1]


def test_humanoid_dir_reward_and_termination():
    env = make("humanoid_dir")
    mass = env.model.body_mass

    def com(xipos):
        return (mass @ xipos / mass.sum())[:2]

    qpos, qvel = gymnasium_state_after(*HUMANOID_LANDED)
    qvel[:2] += (0.6, -0.2)
    action = np.full(17, 0.1)
    angle = 2.0
    direction = np.array([np.cos(angle), np.sin(angle)])
    reward, terminated, before, _ = step_from(env, {"angle": angle}, qpos, qvel, action)
    info, gym_data = gymnasium_step("Humanoid-v5", qpos, qvel, action)
    np.testing.assert_array_equal(env.data.qpos, gym_data.qpos)
    forward = 0.25 * (com(env.data.xipos) - com(before["xipos"])) @ direction / 0.003
    assert forward != 0
    assert forward == pytest.approx(1.25 * (info["x_velocity"] * direction[0] + info["y_velocity"] * direction[1]))
    assert info["reward_contact"] < 0  # feet on the floor: impact cost
    assert reward == pytest.approx(forward - 0.1 * 17 * 0.01 + info["reward_contact"] + 5.0, abs=1e-10)
    assert not terminated
    qpos = env.model.qpos0.copy()
    qpos[2] = 0.5  # lying down
    assert step_from(env, {"angle": angle}, qpos=qpos)[1]


def both_env_forms(name, action_scale, rng_seed, seeds=(3, 4), steps=30):
    """Drive the gym env (first seed) and the batched env (all seeds) of ``name`` with the same
    uniform random actions. Yields (gym env, obs (n, obs_dim), actions) after the reset (actions
    None) and after each step, until a simulation ends (frozen then; gymnasium's would go on)."""
    family = get_family(name)
    env, batched = make(name), family.make_batched(len(seeds))
    for form in ("gym", "batched"):
        obs = batched.reset(seed=list(seeds)).numpy() if form == "batched" else env.reset(seed=seeds[0])[0][None]
        yield env, obs, None
        rng = np.random.default_rng(rng_seed)
        for _ in range(steps):
            action = rng.uniform(-action_scale, action_scale, (len(seeds), family.act_dim))
            if form == "batched":
                obs, _, terminated, _, _ = batched.step(torch.from_numpy(action))
                obs, ended = obs.numpy(), terminated.numpy()
            else:
                o, _, ended, _, _ = env.step(action[0])
                obs, ended = o[None], np.array([ended])
            yield env, obs, action[:len(obs)]
            if ended.any():
                break


@pytest.mark.parametrize(("name", "gym_id", "gym_kwargs"), [
    ("ant_goal", "Ant-v5", {"exclude_current_positions_from_observation": False}),
    ("humanoid_dir", "Humanoid-v5", {}),
])
def test_contact_forces_match_gymnasium(name, gym_id, gym_kwargs):
    """Both env forms observe gymnasium's cfrc_ext: zero after a reset, then at every step."""
    references = [gym.make(gym_id, **gym_kwargs).unwrapped for _ in range(2)]
    in_contact = {1: 0, 2: 0}  # per env form: the gym env observes one simulation, the batched two
    for env, obs, action in both_env_forms(name, action_scale=0.4, rng_seed=0):
        # same seeds, same initial-state noise: the envs start in gymnasium's state
        for i, o in enumerate(obs):
            if action is None:
                np.testing.assert_allclose(o, references[i].reset(seed=3 + i)[0], rtol=1e-6, atol=1e-6)
                continue
            reference_obs, _, _, _, info = references[i].step(action[i])
            np.testing.assert_allclose(o, reference_obs, rtol=1e-5, atol=1e-5)
            in_contact[len(obs)] += info["reward_contact"] < 0
        if len(obs) == 1 and action is not None:  # the gym env's own MjData
            np.testing.assert_allclose(env.data.cfrc_ext, references[0].data.cfrc_ext, rtol=1e-9, atol=1e-9)
    assert min(in_contact.values()) >= 10  # contacts were compared in both forms, not just zeros


# PEARL's observations (oyster rlkit/envs): gymnasium's env configured to match, plus for the
# cheetahs the torso frame's position that oyster appends (get_body_com("torso") = MjData.xpos)
OYSTER_OBSERVATIONS = [
    ("cheetah_vel", "HalfCheetah-v5", {}, True),
    ("cheetah_dir", "HalfCheetah-v5", {}, True),
    ("ant_fwd_back", "Ant-v5", {"include_cfrc_ext_in_observation": False}, False),
    ("ant_goal", "Ant-v5", {"exclude_current_positions_from_observation": False}, False),
]


@pytest.mark.parametrize(("name", "gym_id", "gym_kwargs", "torso_position"), OYSTER_OBSERVATIONS)
def test_locomotion_observations_are_oysters(name, gym_id, gym_kwargs, torso_position, monkeypatch, tmp_path):
    """Both env forms observe what oyster's envs do: ant-goal its x-y position, ant-dir no contact
    forces, the cheetahs their torso's position; checked against gymnasium's own env over random
    steps from the same initial states."""
    monkeypatch.chdir(tmp_path)  # gymnasium's HalfCheetah-v5 model logs a deprecation to ./MUJOCO_LOG.TXT
    references = [gym.make(gym_id, **gym_kwargs).unwrapped for _ in range(2)]

    def reference_obs(i, obs):
        torso = references[i].data.body("torso").xpos
        return np.concatenate([obs, torso]) if torso_position else obs

    expected_dim = references[0].observation_space.shape[0] + (3 if torso_position else 0)
    assert get_family(name).obs_dim == expected_dim
    for _, obs, action in both_env_forms(name, action_scale=1.0, rng_seed=1):
        for i, o in enumerate(obs):
            reference = references[i].reset(seed=3 + i)[0] if action is None else references[i].step(action[i])[0]
            np.testing.assert_allclose(o, reference_obs(i, reference), rtol=1e-5, atol=1e-5)
    if name == "ant_goal":  # the x-y position is observed and moves
        assert np.abs(obs[0, :2] - references[0].init_qpos[:2]).max() > 1e-3


def test_walker_params_reward_and_termination():
    family = get_family("walker_params")
    env = make("walker_params")
    task = family.sample_splits(np.random.default_rng(0))["train"][3]
    qvel = np.zeros(env.model.nv)
    qvel[0] = 1.0
    action = np.full(6, 0.7)
    reward, terminated, before, _ = step_from(env, task, qvel=qvel, action=action)
    v = (env.data.qpos[0] - before["qpos"][0]) / (4 * 0.002)
    assert reward == pytest.approx(v + 1.0 - 1e-3 * 6 * 0.49, abs=1e-12)
    assert not terminated
    qpos = env.model.qpos0.copy()
    qpos[2] = 1.5  # torso angle outside (-1, 1)
    assert step_from(env, task, qpos=qpos)[1]


def reaching_point(env) -> np.ndarray:
    """The rewarded point as MuJoCo computes it: the arm's fingertip body or the base."""
    return env.data.body("fingertip").xpos[:2] if "reacher" in env.family.name else env.data.qpos[:2]


@pytest.mark.parametrize("name", REACHING)
def test_reaching_reward_and_early_end(name):
    env = make(name)
    family = env.family
    goal = [0.7, -0.4]
    action = np.full(env.model.nu, 0.5)
    reward, terminated, _, _ = step_from(env, {"goal": goal}, action=action)
    mujoco.mj_forward(env.model, env.data)  # positions of the state after the step
    distance = np.linalg.norm(reaching_point(env) - goal)
    # the authors' ctrl_cost_coeff 1e-3 times calculate_ctrl_cost, 0.5 * sum(u^2)
    assert reward == pytest.approx(-distance - 1e-3 * 0.5 * env.model.nu * 0.25, abs=1e-9)
    assert not terminated
    # a goal where the body or fingertip rests ends the episode at once
    qpos = reference_qpos(env.model)
    if "reacher" in name:
        qpos[:] = np.linspace(0.3, -0.6, env.model.nq)
    here = family.position({"qpos": qpos[None]})[0].tolist()
    reward, terminated, _, _ = step_from(env, {"goal": here}, qpos=qpos, qvel=np.zeros(env.model.nv))
    assert terminated and -family.success_radius < reward <= 0


def test_small_ant_episode_ends_when_the_torso_leaves_its_height_band():
    env = make("small_ant")
    family, far = env.family, np.array([[1.0, 0.0]])
    start = reference_qpos(env.model)
    assert not step_from(env, {"goal": far[0].tolist()}, qpos=start, qvel=np.zeros(env.model.nv))[1]
    for height, ends in [(0.149, True), (0.15, False), (0.45, False), (0.451, True)]:  # the authors' notdead
        qpos = start.copy()
        qpos[2] = height
        state = {"qpos": qpos[None], "qvel": np.zeros((1, env.model.nv))}
        _, terminated = family.reward(state, qpos[None, :2], qpos[None, :2], np.zeros((1, 8)), far)
        assert terminated[0] == ends, height
    state = {"qpos": start[None].copy(), "qvel": np.zeros((1, env.model.nv))}
    state["qvel"][0, 3] = np.nan  # a healthy height, a non-finite velocity
    assert family.reward(state, start[None, :2], start[None, :2], np.zeros((1, 8)), far)[1][0]


@pytest.mark.parametrize("name, bound", [("wheeled", 50), ("small_ant", 50), ("reacher_2link", 100), ("reacher_4link", 50)])
def test_reaching_servos_are_the_authors_velocity_actuators(name, bound):
    """Action u drives each joint as the authors' velocity actuator (kv 1, ctrlrange ±bound) fed
    their normalised action bound * u (llan-ml/tesp MujocoEnv.normalize_action): MuJoCo's own
    velocity actuator, built from our model, follows the same trajectory bit for bit."""
    ours = load_model(ASSETS / f"{name}.xml")
    spec = mujoco.MjSpec.from_file(str(ASSETS / f"{name}.xml"))
    for actuator in spec.actuators:
        actuator.set_to_velocity(kv=1.0)
        actuator.ctrlrange = [-bound, bound]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="compiler attribute 'settotalmass' is deprecated")
        theirs = spec.compile()
    data = [mujoco.MjData(ours), mujoco.MjData(theirs)]
    for model, d in zip((ours, theirs), data):
        if model.nkey:
            mujoco.mj_resetDataKeyframe(model, d, 0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        u = rng.uniform(-1.3, 1.3, ours.nu)
        data[0].ctrl[:], data[1].ctrl[:] = u, bound * np.clip(u, -1, 1)
        mujoco.mj_step(ours, data[0], nstep=5)
        mujoco.mj_step(theirs, data[1], nstep=5)
    np.testing.assert_array_equal(data[0].qpos, data[1].qpos)
    assert np.abs(data[0].qvel).max() > 0.5  # the servos moved it
    assert ours.opt.timestep * get_family(name).frame_skip == pytest.approx(0.05)  # frame skip 5 of 0.01 s


@pytest.mark.parametrize("name", ["reacher_2link", "reacher_4link"])
def test_reacher_fingertip_matches_mujoco(name):
    env = make(name)
    rng = np.random.default_rng(1)
    for _ in range(5):
        env.data.qpos[:] = rng.uniform(-2.7, 2.7, env.model.nq)
        mujoco.mj_forward(env.model, env.data)
        np.testing.assert_allclose(env.family.fingertip(env.data.qpos[None])[0], reaching_point(env), atol=1e-12)
    env.data.qpos[:] = 0  # the start: stretched along +x
    mujoco.mj_forward(env.model, env.data)
    reach = np.linalg.norm(reaching_point(env))
    assert reaching_point(env)[0] == pytest.approx(reach) and reach >= OUT_OF_DISTRIBUTION[1]


# ---------------------------------------------------------------- task sets


@pytest.mark.parametrize("name", FAMILIES)
def test_splits_deterministic_sized_and_json(name):
    family = get_family(name)
    a = family.sample_splits(np.random.default_rng(7))
    b = family.sample_splits(np.random.default_rng(7))
    assert a == b
    assert {k: len(v) for k, v in a.items()} == family.split_sizes
    assert json.loads(json.dumps(a)) == a
    if name not in ("cheetah_dir", "ant_fwd_back"):
        assert family.sample_splits(np.random.default_rng(8)) != a


def test_fixed_direction_splits():
    assert get_family("cheetah_dir").sample_splits(np.random.default_rng(0))["test"] == [{"direction": 1.0}, {"direction": -1.0}]
    angles = [t["angle"] for t in get_family("ant_fwd_back").sample_splits(np.random.default_rng(0))["train"]]
    assert angles == [0.0, np.pi]


def test_locomotion_task_distributions():
    rng = np.random.default_rng(0)
    velocities = [t["velocity"] for t in get_family("cheetah_vel").sample_splits(rng)["train"]]
    assert 0 <= min(velocities) and max(velocities) <= 3
    goals = np.array([t["goal"] for t in get_family("ant_goal").sample_splits(rng)["train"]])
    assert np.linalg.norm(goals, axis=1).max() <= 3
    angles = [t["angle"] for t in get_family("humanoid_dir").sample_splits(rng)["train"]]
    assert 0 <= min(angles) and max(angles) <= 2 * np.pi
    task = get_family("walker_params").sample_splits(rng)["train"][0]
    assert 1.5**-3 <= np.min(task["body_mass_scale"]) and np.max(task["body_inertia_scale"]) <= 1.5**3
    assert 1.3**-3 <= np.min(task["dof_damping_scale"]) and np.max(task["dof_damping_scale"]) <= 1.3**3


@pytest.mark.parametrize("name, spacing", [("reacher_2link", 0.1), ("reacher_4link", 0.11)])
def test_reaching_split_radii_disjointness_and_spacing(name, spacing):
    """The authors' sample_threshold: targets of a split at least ``spacing`` apart, D' also from D."""
    splits = get_family(name).sample_splits(np.random.default_rng(3))
    targets = {k: np.array([t["goal"] for t in v]) for k, v in splits.items()}
    radius = {k: np.linalg.norm(v, axis=1) for k, v in targets.items()}
    for split, (low, high) in [("D", IN_DISTRIBUTION), ("D_prime", IN_DISTRIBUTION), ("D_double_prime", OUT_OF_DISTRIBUTION)]:
        assert len(targets[split]) == 100
        assert low < radius[split].min() and radius[split].max() < high
        gaps = np.linalg.norm(targets[split][:, None] - targets[split][None], axis=2)
        assert gaps[~np.eye(100, dtype=bool)].min() >= spacing
    assert np.linalg.norm(targets["D_prime"][:, None] - targets["D"][None], axis=2).min() >= spacing
    # uniform in area: half the targets lie inside the radius that halves the annulus' area
    low, high = IN_DISTRIBUTION
    median = np.sqrt((low**2 + high**2) / 2)
    assert 35 <= (radius["D"] < median).sum() <= 65


# ---------------------------------------------------------------- gymnasium conformance


@pytest.mark.filterwarnings("ignore:.*Box observation space .*infinity")  # unbounded, as gymnasium's own
@pytest.mark.parametrize("name", FAMILIES)
def test_check_env(name):
    family = get_family(name)
    task = next(iter(family.sample_splits(np.random.default_rng(0)).values()))[1]
    env = gym.make(family.gym_id, task=task)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=1)
    assert obs.shape == (family.obs_dim,) and info["task"] == task
    other = next(iter(family.sample_splits(np.random.default_rng(1)).values()))[0]
    assert env.reset(options={"task": other})[1]["task"] == other
    env.unwrapped.set_task(task)
    assert env.step(env.action_space.sample())[4]["task"] == task


def test_gym_env_truncates_at_horizon():
    env = make("reacher_2link", {"goal": [-1.0, 0.0]})
    env.reset(seed=0)
    truncated = [env.step(np.zeros(2))[3] for _ in range(200)]
    assert truncated == [False] * 199 + [True]


# ---------------------------------------------------------------- batched == gymnasium form


@pytest.mark.parametrize("name", FAMILIES)
def test_batched_equals_gym(name):
    family = get_family(name)
    splits = family.sample_splits(np.random.default_rng(2))
    pool = [t for tasks in splits.values() for t in tasks]
    tasks = [pool[i % len(pool)] for i in (0, 1, 3)]
    if name in REACHING:  # a goal at the start position: the episode ends early
        tasks[2] = {"goal": family.position({"qpos": reference_qpos(family.model)[None]})[0].tolist()}
    batched = family.make_batched(len(tasks))
    batched.set_tasks(tasks)
    envs = [family.make_gym(t).unwrapped for t in tasks]
    obs = batched.reset(seed=10)
    expected = np.stack([env.reset(seed=10 + i)[0] for i, env in enumerate(envs)])
    np.testing.assert_allclose(obs.numpy(), expected, rtol=1e-6, atol=1e-6)
    low, high = envs[0].action_space.low, envs[0].action_space.high
    actions = np.random.default_rng(0).uniform(low, high, (40, len(tasks), len(low)))
    done = [False] * len(tasks)
    last_obs = obs.numpy()
    for action in actions:
        obs, reward, terminated, truncated, _ = batched.step(torch.from_numpy(action))
        for i, env in enumerate(envs):
            if done[i]:  # frozen: last obs, reward 0, flags kept
                assert reward[i] == 0 and terminated[i]
                np.testing.assert_allclose(obs[i].numpy(), last_obs[i], rtol=1e-6, atol=1e-6)
                continue
            o, r, te, tr, _ = env.step(action[i])
            np.testing.assert_allclose(obs[i].numpy(), o, rtol=1e-6, atol=1e-6)
            assert reward[i].item() == pytest.approx(r, rel=1e-6, abs=1e-6)
            assert (terminated[i].item(), truncated[i].item()) == (te, tr)
            done[i] = te or tr
        last_obs = obs.numpy().copy()
    if name in REACHING or name == "humanoid_dir":
        assert any(done)  # the frozen path was exercised


def test_batched_truncates_freezes_and_resets():
    family = get_family("reacher_2link")
    batched = family.make_batched(2)
    batched.set_tasks([{"goal": [-1.0, 0.0]}, {"goal": [0.0, -1.0]}])
    batched.reset(seed=0)
    actions = torch.zeros(2, 2)
    for t in range(200):
        obs, _, terminated, truncated, _ = batched.step(actions)
        assert truncated.tolist() == [t == 199] * 2 and not terminated.any()
    obs2, reward2, _, truncated2, _ = batched.step(torch.ones(2, 2))
    assert torch.equal(obs2, obs) and not reward2.any() and truncated2.all()
    batched.reset()
    assert not batched.step(actions)[3].any()


# ---------------------------------------------------------------- Walker-Params model fields


def test_walker_params_scales_and_restores_model():
    family = get_family("walker_params")
    train = family.sample_splits(np.random.default_rng(0))["train"]
    fresh = family.load_model()
    env = make("walker_params", train[0])
    fields = family.task_model_fields
    for task in (train[1], train[2]):
        env.set_task(task)
        for name in fields:
            np.testing.assert_array_equal(getattr(env.model, name), getattr(fresh, name) * np.asarray(task[f"{name}_scale"]))
    env.set_task({f"{name}_scale": np.ones(getattr(fresh, name).shape).tolist() for name in fields})
    for name in dir(fresh):  # every model array is back to the pristine model's bits
        value = getattr(fresh, name)
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(env.model, name), value, err_msg=name)
    batched = family.make_batched(2)
    batched.set_tasks(train[3:5])
    for name in fields:
        per_sim = batched.batch.expand(name)
        for i, task in enumerate(train[3:5]):
            np.testing.assert_array_equal(per_sim[i], getattr(fresh, name) * np.asarray(task[f"{name}_scale"]))
