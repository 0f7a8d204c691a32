import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metarl.envs import get_family
from metarl.envs.gridworld import GridWorldEnv
from metarl.methods.vate import VATE, gaussian_kl_to_standard
from metarl.utils.runtime import rng_state, seed_everything, set_rng_state

torch.set_num_threads(1)  # the tests run beside other jobs on few cores
FAMILY = get_family("gridworld")
TASKS = FAMILY.sample_splits(np.random.default_rng(0))


#: detached VATE with varibad's VAE buffer (small: 2 iterations of 16 meta-episodes overflow it)
BUFFERED = {"detach_encoder": True, "vae_buffer_size": 24, "vae_updates": 2, "vae_batch": 10}


def make(seed=0, **hparams):
    seed_everything(seed)
    hparams = {"num_envs": 16, **hparams}
    return VATE(FAMILY, TASKS, VATE.make_hparams(hparams), "train", torch.device("cpu"))


# --- plain step-by-step re-implementations, the references of the tests below ---------------

def linear(x, layer):
    return x @ layer.weight.T + layer.bias


def dense(x, net, activation):
    """An MLP applied layer by layer from its weights: activation after every layer but the last."""
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    for layer in layers[:-1]:
        x = activation(linear(x, layer))
    return linear(x, layers[-1])


def gru_cell(x, h, gru):
    """The GRU update written out (PyTorch's gate order: reset, update, candidate)."""
    i_r, i_z, i_n = (x @ gru.weight_ih_l0.T + gru.bias_ih_l0).chunk(3, -1)
    h_r, h_z, h_n = (h @ gru.weight_hh_l0.T + gru.bias_hh_l0).chunk(3, -1)
    reset, update = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    candidate = torch.tanh(i_n + reset * h_n)
    return (1 - update) * candidate + update * h


def belief_step(model, next_obs, action, reward, h):
    """Embed one transition (s', one-hot a, r), step the GRU, apply the belief head."""
    x = torch.cat([next_obs, F.one_hot(action, 5).to(next_obs.dtype), reward[:, None]], 1)
    h = gru_cell(torch.relu(linear(x, model.embed)), h, model.gru)
    return linear(h, model.to_belief), h


def reference_beliefs(model, next_obs, actions, rewards):
    """Beliefs (T+1, B, D) of whole meta-episodes, one time step at a time (prior first)."""
    h = torch.zeros(actions.shape[1], model.gru.hidden_size, dtype=next_obs.dtype)
    beliefs = [linear(h, model.to_belief)]
    for t in range(len(actions)):
        belief, h = belief_step(model, next_obs[t], actions[t], rewards[t], h)
        beliefs.append(belief)
    return torch.stack(beliefs)


def policy_logits_and_value(model, obs, belief):
    x = torch.cat([obs, belief], -1)
    return dense(x, model.actor, torch.tanh), dense(x, model.critic, torch.tanh)[..., 0]


def reference_advantages(rewards, values, gamma, lam):
    """GAE over the whole meta-episode, no terminal state inside it."""
    adv, last = torch.zeros_like(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        last = rewards[t] + gamma * next_value - values[t] + gamma * lam * last
        adv[t] = last
    return adv, adv + values


def reference_losses(method, batch, adv, returns, eps):
    """PPO loss and ELBO by loops over time steps; ``eps`` are the latent noise draws (T+1, B, L)."""
    model, hp = method.model, method.hp
    beliefs = reference_beliefs(model, batch["next_obs"], batch["action"], batch["reward"])
    T, B = batch["action"].shape
    acted_on = batch["belief"] if hp.detach_encoder else beliefs  # detached: the rollout's own beliefs
    policy = value = entropy = 0.0
    for t in range(T):
        logits, v = policy_logits_and_value(model, batch["obs"][t], acted_on[t])
        logp = torch.log_softmax(logits, 1)
        ratio = torch.exp(logp[torch.arange(B), batch["action"][t]] - batch["logp"][t])
        policy = policy - torch.minimum(ratio * adv[t], ratio.clamp(1 - hp.clip, 1 + hp.clip) * adv[t]).sum()
        value = value + ((v - returns[t]) ** 2).sum()
        entropy = entropy - (logp.exp() * logp).sum()
    terms = {"policy_loss": policy / (T * B), "value_loss": value / (T * B), "entropy": entropy / (T * B)}
    if not hp.variational:
        return terms
    return {**terms, "elbo_loss": reference_elbo(model, hp, batch, beliefs, eps)}


def reference_elbo(model, hp, batch, beliefs, eps):
    """mean_t −ELBO_t by loops over time steps; ``eps`` are the latent noise draws (T+1, B, L)."""
    T, B = batch["action"].shape
    L = hp.latent_dim
    xy = (batch["next_obs"][..., :2] * 4).round().long()
    cells, hits = xy[..., 0] * 5 + xy[..., 1], (batch["eval_reward"] > 0).to(beliefs.dtype)
    elbo = 0.0
    for t in range(T + 1):
        mean, logvar = beliefs[t, :, :L], beliefs[t, :, L:]
        probs = torch.sigmoid(dense(mean + torch.exp(0.5 * logvar) * eps[t], model.decoder, torch.relu))
        for j in range(T if hp.decode_future else t):
            p = probs[torch.arange(B), cells[j]]
            elbo = elbo - (hits[j] * torch.log(p) + (1 - hits[j]) * torch.log(1 - p)).sum()
        if hp.kl_to_prior or t == 0:
            prior_mean, prior_logvar = torch.zeros_like(mean), torch.zeros_like(logvar)
        else:
            prior_mean, prior_logvar = beliefs[t - 1, :, :L], beliefs[t - 1, :, L:]
        kl = 0.5 * (prior_logvar - logvar - 1 + (logvar.exp() + (mean - prior_mean) ** 2) / prior_logvar.exp())
        elbo = elbo + hp.kl_weight * kl.sum()
    return elbo / ((T + 1) * B)


def small_batch(method, num_envs=4, seed=3):
    """One fixed small batch of meta-episodes from the method's own rollout, in float64."""
    env = FAMILY.make_batched(num_envs, "cpu")
    env.set_tasks(TASKS["train"][:num_envs])
    torch.manual_seed(seed)
    traj = method.rollout(env)
    method.model.double()
    return {k: v.double() if v.is_floating_point() else v for k, v in traj.items()}


def final_return(method, tasks=TASKS["test"][:50]):
    frame = method.evaluate(tasks)
    return frame[frame.stage == "final"]["return"].mean()


def test_gaussian_kl_matches_torch():
    mean, logvar = torch.randn(7, 10), torch.randn(7, 10)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(gaussian_kl_to_standard(mean, logvar), expected, atol=1e-5)
    assert gaussian_kl_to_standard(torch.zeros(3), torch.zeros(3)).item() == 0.0


def test_rollout_beliefs_match_the_fused_encoder():
    """The rollout steps the GRU as a cell; the update re-encodes whole sequences: same beliefs."""
    method = make()
    traj = method.rollout(method.env)
    beliefs = method.model.encode(traj["next_obs"], traj["action"], traj["reward"])
    assert torch.allclose(traj["belief"][1:], beliefs, atol=1e-5)
    assert torch.allclose(traj["belief"][0], method.model.prior(16, "cpu"))


def test_elbo_is_reconstruction_plus_kl():
    method = make()
    traj = method.rollout(method.env)
    beliefs = traj["belief"].clone()
    beliefs[..., 10:] = -30.0  # (nearly) zero variance: the sample is the mean
    logits = method.model.decoder(beliefs[..., :10])  # (T+1, B, cells)
    cells, hit = method._cell(traj["next_obs"]), (traj["reward"] > 0).float()
    expected = 0.0
    for t in range(len(beliefs)):  # per belief: the whole meta-episode, plus its KL
        picked = logits[t].gather(1, cells.T).T  # (T, B)
        nll = torch.nn.functional.binary_cross_entropy_with_logits(picked, hit, reduction="none").sum(0)
        expected = expected + nll + gaussian_kl_to_standard(beliefs[t, :, :10], beliefs[t, :, 10:])
    expected = (expected / len(beliefs)).mean()
    assert method.elbo_loss(beliefs, traj).item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize("decode_future", [True, False])
def test_no_future_decodes_only_the_past(decode_future):
    """Changing the last transition's reward reaches only the final belief without the future."""
    method = make(decode_future=decode_future)
    traj = method.rollout(method.env)
    grads = []
    for last_reward in (-0.1, 1.0):
        rewards = traj["reward"].clone()
        rewards[-1] = last_reward
        beliefs = traj["belief"].clone().requires_grad_()
        torch.manual_seed(1)  # same latent samples both times
        method.elbo_loss(beliefs, {**traj, "eval_reward": rewards}).backward()
        grads.append(beliefs.grad)
    differs = (grads[0] - grads[1]).abs().sum((1, 2)) > 0
    assert differs[-1]
    assert differs[:-1].all() if decode_future else not differs[:-1].any()


@pytest.mark.parametrize("hparams", [{}, {"decode_future": False}, {"detach_encoder": True},
                                     {"kl_to_prior": False, "kl_weight": 0.1}, {"variational": False}])
def test_losses_match_step_by_step_reference(hparams):
    """PPO loss + ELBO on a fixed batch equal loops over time steps with the GRU, BCE and KL written out."""
    method = make(**hparams)
    batch = small_batch(method)
    torch.manual_seed(4)  # old log-probabilities as if the policy had moved: ratios on both sides of the clip
    batch["logp"] = batch["logp"] + 0.3 * torch.randn_like(batch["logp"])
    model, hp = method.model, method.hp
    with torch.no_grad():
        beliefs = reference_beliefs(model, batch["next_obs"], batch["action"], batch["reward"])
        values = policy_logits_and_value(model, batch["obs"], beliefs[:-1])[1]
        adv, returns = method._advantages(batch["reward"], values)
        ref_adv, ref_returns = reference_advantages(batch["reward"], values, hp.gamma, hp.gae_lambda)
    assert torch.allclose(adv, ref_adv, rtol=1e-12, atol=1e-12)
    assert torch.allclose(returns, ref_returns, rtol=1e-12, atol=1e-12)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    torch.manual_seed(5)
    terms = method.losses(batch, adv, returns)
    torch.manual_seed(5)  # the same latent noise, drawn once for all (T+1, B, L) posteriors
    eps = torch.randn(46, 4, hp.latent_dim, dtype=torch.float64)
    expected = reference_losses(method, batch, adv, returns, eps)
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-10, abs=1e-12), name
    total = expected["policy_loss"] + 0.5 * expected["value_loss"] - 0.01 * expected["entropy"]
    if hp.variational:
        assert expected["elbo_loss"].item() > 1.0  # a real reconstruction + KL term is in the total
        total = total + hp.elbo_coef * expected["elbo_loss"]
    else:
        assert terms["elbo_loss"].item() == 0.0
    assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-10)


ENCODER = ("embed", "gru", "to_belief")


@pytest.mark.parametrize("detach", [False, True])
def test_detach_keeps_rl_gradient_out_of_the_encoder(detach):
    """With detach_encoder the RL loss puts zero gradient on the encoder; the ELBO still trains it."""
    method = make(detach_encoder=detach)
    traj = method.rollout(method.env)
    adv, returns = torch.randn_like(traj["reward"]), torch.randn_like(traj["reward"])
    terms = method.losses(traj, adv, returns)
    hp = method.hp
    rl_loss = terms["policy_loss"] + hp.value_coef * terms["value_loss"] - hp.entropy_coef * terms["entropy"]
    named = dict(method.model.named_parameters())
    encoder = [p for name, p in named.items() if name.split(".")[0] in ENCODER]
    rl_grads = torch.autograd.grad(rl_loss, encoder + [named["actor.0.weight"]], allow_unused=True, retain_graph=True)
    elbo_grads = torch.autograd.grad(terms["elbo_loss"], encoder, allow_unused=True)

    def norm(g):
        return 0.0 if g is None else g.abs().sum().item()

    assert norm(rl_grads[-1]) > 0  # the policy itself learns from the RL loss either way
    assert all(norm(g) > 0 for g in elbo_grads)  # ELBO reaches embedding, GRU and belief head
    rl_encoder = [norm(g) for g in rl_grads[:-1]]
    assert all(g == 0 for g in rl_encoder) if detach else all(g > 0 for g in rl_encoder)


def test_detached_ppo_acts_on_the_rollout_beliefs():
    """Detached, the ELBO changes the encoder between the rollout and the PPO steps; PPO must still
    see the beliefs the actions were taken with, so its first ratio is exactly 1."""
    method = make(detach_encoder=True)
    traj = method.rollout(method.env)
    with torch.no_grad():  # as if the ELBO had updated the encoder since the rollout
        for p in method.model.gru.parameters():
            p.add_(0.1 * torch.randn_like(p))
    adv = torch.randn_like(traj["reward"])
    terms = method.losses(traj, adv, torch.zeros_like(adv))
    assert terms["policy_loss"].item() == pytest.approx(-adv.mean().item(), abs=1e-6)


def test_rl2_is_deterministic_without_decoder():
    """RL²'s belief is a deterministic function of the history (the explicit GRU recursion),
    changes with it, and there is no decoder; its loss has no ELBO term (see the reference test)."""
    method = make(variational=False, latent_dim=64)
    model = method.model
    assert not any(name.startswith("decoder") for name, _ in model.named_parameters())
    traj = method.rollout(method.env)
    with torch.no_grad():
        first = model.encode(traj["next_obs"], traj["action"], traj["reward"])
        torch.manual_seed(99)  # any randomness in encoding would show up as a different belief
        second = model.encode(traj["next_obs"], traj["action"], traj["reward"])
        expected = reference_beliefs(model, traj["next_obs"], traj["action"], traj["reward"])
        rewards = traj["reward"].clone()
        rewards[10] = -rewards[10]
        changed = model.encode(traj["next_obs"], traj["action"], rewards)
    assert first.shape == (45, 16, 64) and torch.equal(first, second)
    assert torch.allclose(first, expected[1:], atol=1e-5)
    assert torch.allclose(traj["belief"], expected, atol=1e-5)  # the rollout acted on the same beliefs
    assert torch.equal(changed[:10], first[:10]) and not torch.allclose(changed[10:], first[10:])
    assert "reward_probs" not in method.belief_rollout(TASKS["test"][0])


def greedy_meta_episode(model, task):
    """A plain sequential re-run of the greedy agent on the gymnasium gridworld: per-episode
    returns, visited cells (start first) and the belief before each step (prior first)."""
    env = GridWorldEnv()
    h = torch.zeros(1, model.gru.hidden_size)
    belief = linear(h, model.to_belief)
    returns, cells, beliefs = [], [(0, 0)], [belief[0]]
    for _ in range(3):
        obs, _ = env.reset(options={"task": task})
        total = 0.0
        for _ in range(15):
            logits, _ = policy_logits_and_value(model, torch.as_tensor(obs)[None], belief)
            action = int(logits.argmax())
            obs, reward, _, _, _ = env.step(action)
            total += reward
            belief, h = belief_step(model, torch.as_tensor(obs)[None], torch.tensor([action]),
                                    torch.tensor([reward], dtype=torch.float32), h)
            cells.append(env.pos)
            beliefs.append(belief[0])
        returns.append(total)
    return returns, torch.tensor(cells), torch.stack(beliefs)


def test_evaluate_and_belief_rollout_match_a_sequential_rerun():
    method = make()
    for _ in range(3):  # a few updates, so the greedy agent is not the initial one
        method.train_iteration()
    tasks = TASKS["test"][:6]
    frame = method.evaluate(tasks).pivot(index="task", columns="stage", values="return")
    with torch.no_grad():
        reruns = [greedy_meta_episode(method.model, task) for task in tasks]
        for i, (returns, cells, beliefs) in enumerate(reruns):
            episodes = [frame.loc[i, f"episode_{e}"] for e in (1, 2, 3)]
            assert episodes == pytest.approx(returns, abs=1e-4)
            assert frame.loc[i, "final"] == pytest.approx(sum(returns), abs=1e-4)
        returns, cells, beliefs = reruns[0]
        rollout = method.belief_rollout(tasks[0])
        assert torch.equal(rollout["positions"], cells)
        assert rollout["rewards"].sum().item() == pytest.approx(sum(returns), abs=1e-4)
        expected_probs = torch.sigmoid(dense(beliefs[:, :10], method.model.decoder, torch.relu))
        assert torch.allclose(rollout["reward_probs"], expected_probs.reshape(46, 5, 5), atol=1e-5)
    assert len({tuple(r[0]) for r in reruns}) > 1  # the tasks are told apart: not one fixed path


@pytest.mark.parametrize("hparams", [{}, {"detach_encoder": True}, BUFFERED])
def test_resume_equals_uninterrupted(hparams):
    uninterrupted = make(**hparams)
    for _ in range(2):
        uninterrupted.train_iteration()
    first = make(**hparams)
    first.train_iteration()
    saved, rng = io.BytesIO(), rng_state()
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    resumed = make(seed=123, **hparams)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    set_rng_state(rng)
    resumed.train_iteration()
    for a, b in zip(uninterrupted.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed.env_steps == uninterrupted.env_steps == 2 * 16 * 45


def test_short_training_improves_return():
    method = make(num_envs=64)
    before = final_return(method)
    for _ in range(30):
        method.train_iteration()
    assert final_return(method) > before + 3.0


@pytest.mark.parametrize("anneal", [True, False])
def test_lr_anneals_linearly_with_training_progress(anneal):
    method = make(lr=1e-3, anneal_lr=anneal, ppo_epochs=1, minibatches=1)
    for progress, expected in [(0.0, 1e-3), (0.75, 2.5e-4)]:
        method.progress = progress
        method.train_iteration()
        assert method.optimizer.lr == pytest.approx(expected if anneal else 1e-3)


def test_detached_vae_has_its_own_unannealed_optimiser():
    """Detached, the policy's rate anneals but the ELBO keeps training the encoder and decoder at
    the full rate (varibad ppo.py), and neither optimiser steps the other's parameters."""
    method = make(lr=1e-3, anneal_lr=True, detach_encoder=True, ppo_epochs=1, minibatches=1)
    names = {id(p): name.split(".")[0] for name, p in method.model.named_parameters()}
    assert {names[id(p)] for p in method.vae_optimizer.params} == {"embed", "gru", "to_belief", "decoder"}
    assert {names[id(p)] for p in method.optimizer.params} == {"actor", "critic"}
    method.progress = 0.75
    method.train_iteration()
    assert method.optimizer.lr == pytest.approx(2.5e-4) and method.vae_optimizer.lr == pytest.approx(1e-3)


def test_vae_buffer_holds_the_last_meta_episodes():
    """First in, first out: after 2 iterations of 16 meta-episodes a 24-slot buffer holds the 8
    newest of the first iteration beside all 16 of the second."""
    method, rollouts = make(**BUFFERED), []
    rollout = method.rollout
    method.rollout = lambda env: rollouts.append(rollout(env)) or rollouts[-1]
    for _ in range(2):
        method.train_iteration()
    for key in ("obs", "next_obs", "action", "eval_reward"):
        every = torch.cat([r[key] for r in rollouts], 1)  # meta-episodes 0..31 in arrival order
        for slot in range(24):
            newest = max(g for g in range(32) if g % 24 == slot)
            assert torch.equal(method.vae_buffer[key][:, slot], every[:, newest])


def test_vae_updates_are_adam_steps_on_buffered_batches():
    """With a buffer, the PPO minibatches leave the encoder and decoder alone; after the policy
    update they take ``vae_updates`` Adam steps (torch.optim.Adam, clipped gradients) on the
    step-by-step ELBO of ``vae_batch`` distinct buffered meta-episodes, past iterations' included."""
    method = make(**BUFFERED)
    method.train_iteration()
    hp, vae = method.hp, method.vae_optimizer
    reference = copy.deepcopy(method.model)
    index = {id(p): i for i, p in enumerate(method.model.parameters())}
    params = [list(reference.parameters())[index[id(p)]] for p in vae.params]
    adam = torch.optim.Adam(params, lr=hp.lr)
    for p, m, v, step in zip(params, vae.exp_avg, vae.exp_avg_sq, vae.steps, strict=True):
        adam.state[p] = {"step": step.clone(), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
    before = [p.detach().clone() for p in vae.params]
    drawn = []  # the random state when the VAE steps begin, and the buffer they draw from
    vae_step = method._vae_step
    method._vae_step = lambda: (drawn.append((rng_state(), copy.deepcopy(method.vae_buffer))) if not drawn
                                else None) or vae_step()
    method.train_iteration()

    rng, buffer = drawn[0]
    set_rng_state(rng)
    past = []
    for _ in range(hp.vae_updates):
        picked = torch.randperm(24)[:hp.vae_batch]
        past += [slot for slot in picked.tolist() if 8 <= slot < 16]
        batch = {k: v[:, picked] for k, v in buffer.items()}
        eps = torch.randn(46, hp.vae_batch, hp.latent_dim)
        beliefs = reference_beliefs(reference, batch["next_obs"], batch["action"], batch["eval_reward"])
        loss = reference_elbo(reference, hp, batch, beliefs, eps)
        adam.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm)
        adam.step()
    for p, expected in zip(vae.params, params, strict=True):
        assert torch.allclose(p, expected, atol=1e-5)
    assert not any(torch.equal(p, q) for p, q in zip(vae.params, before, strict=True))  # it did learn
    assert past  # slots 8..15 hold the first iteration's meta-episodes
