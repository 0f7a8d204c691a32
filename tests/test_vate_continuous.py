"""VATE / RL² beyond the gridworld: the Gaussian policy head, the reward decoder's ELBO, the
common adaptation protocol, and smoke runs on every kind of task family."""
import io
import math

import numpy as np
import pytest
import torch
from conftest import CountingFamily, random_policy_returns
from test_vate import dense, gru_cell, linear

from metarl.envs import get_family
from metarl.envs.point_robot import HORIZON, MAX_STEP, PointRobotEnv
from metarl.methods.vate import VATE
from metarl.utils.runtime import rng_state, seed_everything, set_rng_state

torch.set_num_threads(1)

#: small networks and batches: these tests check mechanics, not learning
SMALL = {"num_envs": 4, "minibatches": 2, "ppo_epochs": 1, "encoder_hidden": 16, "embed_dim": 8,
         "policy_hidden": 16, "decoder_hidden": 16, "latent_dim": 3}


def make(family_name, seed=0, split="train", **hparams):
    family = get_family(family_name)
    tasks = family.sample_splits(np.random.default_rng(0))
    seed_everything(seed)
    return VATE(family, tasks, VATE.make_hparams({**SMALL, **hparams}), split, torch.device("cpu")), tasks


# --- the Gaussian head ------------------------------------------------------------------------

def test_gaussian_head_matches_torch_normal():
    method, _ = make("point_robot")
    model = method.model
    with torch.no_grad():
        model.log_std.copy_(torch.tensor([-0.7, 0.4]))
    obs, belief = torch.randn(5, 3), torch.randn(5, model.belief_dim)
    action = torch.randn(5, 2)
    mean = dense(torch.cat([obs, belief], -1), model.actor, torch.tanh)
    normal = torch.distributions.Normal(mean, torch.tensor([-0.7, 0.4]).exp())
    logp, entropy = model.log_prob_and_entropy(obs, belief, action)
    assert torch.allclose(logp, normal.log_prob(action).sum(-1), atol=1e-5)
    assert torch.allclose(entropy, normal.entropy().sum(-1), atol=1e-5)
    torch.manual_seed(0)
    sampled, sampled_logp = model.act(obs, belief)
    assert torch.allclose(sampled_logp, normal.log_prob(sampled).sum(-1), atol=1e-5)
    greedy, _ = model.act(obs, belief, greedy=True)
    assert torch.allclose(greedy, mean, atol=1e-6)


def test_log_std_is_learned_and_starts_at_the_init_std():
    method, _ = make("point_robot", policy_init_std=0.5)
    assert torch.allclose(method.model.log_std, torch.full((2,), math.log(0.5)))
    before = method.model.log_std.detach().clone()
    method.train_iteration()
    assert not torch.equal(method.model.log_std, before)


# --- the reward decoder's ELBO ----------------------------------------------------------------

def tiny_elbo_method(**hparams):
    """Latent size 1 and a decoder whose prediction is 2·z + 0.5 for z > 0 (one ReLU unit per layer,
    reading only the latent)."""
    method, _ = make("point_robot", latent_dim=1, decoder_hidden=1, **hparams)
    first, second, out = [m for m in method.model.decoder if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer in (first, second, out):
            layer.weight.zero_()
            layer.bias.zero_()
        first.weight[0, 0] = 1.0  # input 0 is the latent sample
        second.weight[0, 0] = 1.0
        out.weight[0, 0], out.bias[0] = 2.0, 0.5
    return method


def tiny_batch(frozen_second=False):
    """Two transitions of one meta-episode, rewards 1 and -1; beliefs with means 0.5, 1, 2 and
    log-variance -30 (the sample is the mean up to ~1e-7)."""
    obs = torch.zeros(2, 1, 3)
    if frozen_second:
        obs[1, 0, 2] = 1.0  # done flag: the episode had terminated before the second transition
    batch = {"obs": obs, "next_obs": torch.zeros(2, 1, 3), "action": torch.zeros(2, 1, 2),
             "eval_reward": torch.tensor([[1.0], [-1.0]])}
    beliefs = torch.tensor([[[0.5, -30.0]], [[1.0, -30.0]], [[2.0, -30.0]]])
    return beliefs, batch


@pytest.mark.parametrize("frozen_second", [False, True])
def test_reward_elbo_matches_a_hand_computation(frozen_second):
    # predictions 2m + 0.5 = 1.5, 2.5, 4.5 per ELBO term; KL_t = 0.5 (m² + e^-30 - 1 + 30)
    kl = [0.5 * (m * m + math.exp(-30) + 29) for m in (0.5, 1.0, 2.0)]
    if frozen_second:  # only the first transition (reward 1) is decoded
        squared = [0.5 ** 2, 1.5 ** 2, 3.5 ** 2]
    else:
        squared = [0.5 ** 2 + 2.5 ** 2, 1.5 ** 2 + 3.5 ** 2, 3.5 ** 2 + 5.5 ** 2]
    method = tiny_elbo_method()
    beliefs, batch = tiny_batch(frozen_second)
    expected = sum(s + k for s, k in zip(squared, kl, strict=True)) / 3
    assert method.elbo_loss(beliefs, batch).item() == pytest.approx(expected, rel=1e-5)
    past_only = tiny_elbo_method(decode_future=False, kl_weight=0.1)  # term t decodes transitions j < t
    squared_past = [0.0, 1.5 ** 2, 3.5 ** 2 + (0.0 if frozen_second else 5.5 ** 2)]
    expected = sum(s + 0.1 * k for s, k in zip(squared_past, kl, strict=True)) / 3
    assert past_only.elbo_loss(beliefs, batch).item() == pytest.approx(expected, rel=1e-5)


def test_subsampled_elbo_sums_the_drawn_terms():
    """With elbo_samples / decode_samples the ELBO is the mean over drawn terms t of the squared
    errors of the drawn transitions plus KL_t, the draws as torch.randint gives them."""
    method = tiny_elbo_method(elbo_samples=4, decode_samples=3)
    beliefs, batch = tiny_batch()
    torch.manual_seed(5)
    loss = method.elbo_loss(beliefs, batch)
    torch.manual_seed(5)
    torch.randn(3, 1, 1)  # the latent noise
    terms, decoded = torch.randint(3, (4, 1)), torch.randint(2, (4, 3, 1))
    means, rewards = [0.5, 1.0, 2.0], [1.0, -1.0]
    expected = 0.0
    for e in range(4):
        m = means[terms[e, 0]]
        expected += sum((2 * m + 0.5 - rewards[decoded[e, d, 0]]) ** 2 for d in range(3))
        expected += 0.5 * (m * m + math.exp(-30) + 29)
    assert loss.item() == pytest.approx(expected / 4, rel=1e-5)


def test_state_decoder_adds_its_squared_error():
    method, _ = make("point_robot", decode_state=True)
    traj = method.rollout(method.env)
    beliefs = traj["belief"].clone()
    beliefs[..., 3:] = -30.0
    L = 3
    with torch.no_grad():
        torch.manual_seed(2)
        total = method.elbo_loss(beliefs, traj)
        state_decoder, method.model.hp.decode_state = method.model.state_decoder, False
        torch.manual_seed(2)
        reward_only = method.elbo_loss(beliefs, traj)
    T = len(traj["action"])
    expected = 0.0
    for t in range(T + 1):
        z = beliefs[t, :, :L]
        for j in range(T):
            predicted = dense(torch.cat([z, traj["obs"][j], traj["action"][j]], -1), state_decoder, torch.relu)
            expected = expected + (predicted - traj["next_obs"][j]).pow(2).mean(-1)
    assert (total - reward_only).item() == pytest.approx((expected / (T + 1)).mean().item(), rel=1e-4)


# --- the reward rule and the protocol -----------------------------------------------------------

def test_sparse_family_encoder_and_decoder_never_see_the_dense_reward():
    """On the sparse point robot, shifting the dense env reward changes PPO's reward only."""
    method, tasks = make("sparse_point_robot")
    env = method.family.make_batched(4)
    env.set_tasks(tasks["train"][:4])
    step = env.step

    def shifted(actions):
        obs, reward, *rest = step(actions)
        return (obs, reward + 10.0, *rest)

    runs = []
    for shift in (False, True):
        env.step = shifted if shift else step
        torch.manual_seed(1)
        traj = method.rollout(env)
        torch.manual_seed(2)
        runs.append((traj, method.elbo_loss(traj["belief"], traj)))
    (plain, plain_elbo), (moved, moved_elbo) = runs
    assert torch.allclose(moved["reward"], plain["reward"] + 10.0)
    assert torch.equal(moved["belief"], plain["belief"]) and torch.equal(moved["eval_reward"], plain["eval_reward"])
    assert torch.equal(moved_elbo, plain_elbo)


def sequential_greedy_meta_episode(model, task, starts, episodes):
    """A plain re-run on the gymnasium point robot, one step at a time: greedy mean action, clipped
    to [-1, 1] and scaled by 0.1, GRU over (s' with done flag, raw action, r); per-episode returns."""
    env = PointRobotEnv(task)
    h = torch.zeros(1, model.gru.hidden_size)
    belief = linear(h, model.to_belief)
    returns = []
    for episode in range(episodes):
        env.reset(seed=0)
        env.pos = starts[episode].numpy().copy()  # the batched run's random start
        obs = torch.cat([starts[episode], torch.zeros(1)])[None]
        total = 0.0
        for _ in range(HORIZON):
            action = dense(torch.cat([obs, belief], -1), model.actor, torch.tanh)
            position, reward, terminated, truncated, _ = env.step((action[0].clamp(-1, 1) * MAX_STEP).numpy())
            total += reward
            obs = torch.cat([torch.as_tensor(position), torch.tensor([float(terminated or truncated)])])[None]
            x = torch.cat([obs, action, torch.tensor([[reward]], dtype=torch.float32)], -1)
            h = gru_cell(torch.relu(linear(x, model.embed)), h, model.gru)
            belief = linear(h, model.to_belief)
        returns.append(total)
    return returns


@pytest.mark.parametrize("episodes", [1, 3])
def test_adaptation_returns_play_exactly_the_episodes_and_match_a_sequential_rerun(episodes):
    method, tasks = make("point_robot")
    method.train_iteration()  # not the initial policy
    counting = CountingFamily(method.family)
    method.family = counting
    test = tasks["test"][:3]
    returns = method.adaptation_returns(test, episodes)
    assert returns.shape == (3, episodes)
    (env,) = counting.envs
    assert counting.env_steps == 3 * episodes * HORIZON and env.resets == episodes
    with torch.no_grad():
        for i, task in enumerate(test):
            starts = [start[i] for start in env.starts]
            expected = sequential_greedy_meta_episode(method.model, task, starts, episodes)
            assert returns[i].tolist() == pytest.approx(expected, abs=1e-3)


# --- smoke runs on every kind of family ----------------------------------------------------------

@pytest.mark.parametrize(("family", "split", "hparams"), [
    ("gridworld", "train", {}),
    ("point_robot", "train", {"variational": False}),
    ("sparse_point_robot", "train", {"detach_encoder": True, "vae_buffer_size": 8, "vae_batch": 4}),
    ("cheetah_vel", "train", {"episodes": 1, "elbo_samples": 4, "decode_samples": 4, "decode_state": True,
                              "reward_decoder_state": True, "reward_decoder_action": True}),
    ("reacher_2link", "D", {"elbo_samples": 4, "decode_samples": 4}),
])
def test_trains_and_adapts_on_every_kind_of_family(family, split, hparams):
    method, tasks = make(family, split=split, **hparams)
    assert method.episodes == hparams.get("episodes", 3 if family == "gridworld" else 2)
    metrics = method.train_iteration()
    assert all(math.isfinite(v) for v in metrics.values())
    assert method.env_steps == 4 * method.episodes * method.family.horizon
    eval_split = "D_double_prime" if split == "D" else "test"
    returns = method.adaptation_returns(tasks[eval_split][:3], 2)
    assert returns.shape == (3, 2) and returns.isfinite().all()
    frame = method.evaluate(tasks[eval_split][:2])
    assert len(frame) == 2 * (method.episodes + 1)


def test_resume_equals_uninterrupted_on_a_continuous_family():
    hparams = {"detach_encoder": True, "vae_buffer_size": 8, "vae_batch": 4, "elbo_samples": 3, "decode_samples": 3}
    uninterrupted, _ = make("point_robot", **hparams)
    for _ in range(2):
        uninterrupted.train_iteration()
    first, _ = make("point_robot", **hparams)
    first.train_iteration()
    saved, rng = io.BytesIO(), rng_state()
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    resumed, _ = make("point_robot", seed=123, **hparams)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    set_rng_state(rng)
    resumed.train_iteration()
    for a, b in zip(uninterrupted.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_episodes_must_be_positive():
    with pytest.raises(ValueError, match="episodes must be at least 1"):
        make("point_robot", episodes=0)


# --- learning -----------------------------------------------------------------------------------

@pytest.mark.slow  # ~60 s on an idle core (80 s on the shared one)
def test_learns_the_dense_point_robot_within_a_small_budget():
    """After 60 iterations (154k frames) the greedy agent's return after one episode of a task is well
    above a uniform random policy's on the same tasks (all 50 of the family, for a steady mean).
    varibad's continuous-control regime: encoder and decoder trained by the ELBO alone, and PPO's
    reward scaled down (varibad normalises it) so the value loss does not swamp the clipped gradient."""
    family = get_family("point_robot")
    splits = family.sample_splits(np.random.default_rng(0))
    tasks = splits["train"] + splits["test"]
    seed_everything(0)
    hparams = {"num_envs": 64, "detach_encoder": True, "reward_scale": 0.1}
    method = VATE(family, splits, VATE.make_hparams(hparams), "train", torch.device("cpu"))
    for _ in range(60):
        method.train_iteration()
    random_return = random_policy_returns(family, tasks, 5).mean().item()
    adapted = method.adaptation_returns(tasks, 2)[:, 1].mean().item()
    # measured: adapted -17.5, random -21.8 (standing still: about -21); 3 is several standard
    # errors of the random mean over 250 episodes
    assert adapted > random_return + 3.0, (adapted, random_return)
