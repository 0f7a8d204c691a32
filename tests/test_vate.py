import numpy as np
import pytest
import torch

from metarl.envs import get_family
from metarl.methods.vate import VATE, gaussian_kl_to_standard
from metarl.utils.runtime import rng_state, seed_everything, set_rng_state

torch.set_num_threads(1)  # the tests run beside other jobs on few cores
FAMILY = get_family("gridworld")
TASKS = FAMILY.sample_splits(np.random.default_rng(0))


def make(seed=0, **hparams):
    seed_everything(seed)
    hparams = {"num_envs": 16, **hparams}
    return VATE(FAMILY, TASKS, VATE.make_hparams(hparams), "train", torch.device("cpu"))


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
    assert method.elbo_loss(beliefs, traj["next_obs"], traj["reward"]).item() == pytest.approx(expected.item(), rel=1e-4)


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
        method.elbo_loss(beliefs, traj["next_obs"], rewards).backward()
        grads.append(beliefs.grad)
    differs = (grads[0] - grads[1]).abs().sum((1, 2)) > 0
    assert differs[-1]
    assert differs[:-1].all() if decode_future else not differs[:-1].any()


@pytest.mark.parametrize("detach", [False, True])
def test_detach_keeps_rl_gradient_out_of_the_encoder(detach):
    method = make(detach_encoder=detach)
    model = method.model
    traj = method.rollout(method.env)
    beliefs = model.encode(traj["next_obs"], traj["action"], traj["reward"])
    x = model.policy_input(traj["obs"], beliefs)
    (model.actor(x).logsumexp(-1).sum() + model.critic(x).sum()).backward()
    encoder_grad = sum(0.0 if p.grad is None else p.grad.abs().sum().item() for p in model.gru.parameters())
    assert (encoder_grad == 0) == detach
    assert model.actor[0].weight.grad.abs().sum() > 0


def test_rl2_is_deterministic_without_decoder():
    method = make(variational=False, latent_dim=64)
    assert method.model.decoder is None and method.model.belief_dim == 64
    assert method.train_iteration()["elbo_loss"] == 0.0
    assert "reward_probs" not in method.belief_rollout(TASKS["test"][0])


def test_evaluate_stages_and_belief_rollout():
    method = make()
    frame = method.evaluate(TASKS["test"][:5])
    assert set(frame.stage) == {"episode_1", "episode_2", "episode_3", "final"}
    per_task = frame.pivot(index="task", columns="stage", values="return")
    assert np.allclose(per_task[["episode_1", "episode_2", "episode_3"]].sum(axis=1), per_task["final"])
    rollout = method.belief_rollout(TASKS["test"][0])
    assert rollout["positions"].shape == (46, 2) and rollout["rewards"].shape == (45,)
    probs = rollout["reward_probs"]
    assert probs.shape == (46, 5, 5) and ((probs >= 0) & (probs <= 1)).all()


def test_resume_equals_uninterrupted():
    uninterrupted = make()
    for _ in range(2):
        uninterrupted.train_iteration()
    first = make()
    first.train_iteration()
    state, rng = first.state_dict(), rng_state()
    resumed = make(seed=123)
    resumed.load_state_dict(state)
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
