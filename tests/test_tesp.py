"""TESP and its gradient-based baselines (metarl.methods.tesp) on a tiny pure-torch task family:
a 2-D point that must reach an unobserved goal on the unit circle."""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest
import torch

from metarl.envs.base import BatchedEnv, TaskFamily
from metarl.methods.tesp import TESP, Episodes, Hyperparams, advantages, update_buffer


class PointGoalEnv(BatchedEnv):
    obs_dim, act_dim, discrete, horizon = 2, 2, False, 10

    def __init__(self, num_envs: int, device="cpu"):
        self.num_envs, self.device = num_envs, torch.device(device)
        self.goals = torch.zeros(num_envs, 2)

    def set_tasks(self, tasks):
        self.goals = torch.tensor([task["goal"] for task in tasks], dtype=torch.float32)

    def reset(self, seed=None):  # deterministic: the seed is not needed
        self.pos = torch.zeros(self.num_envs, 2)
        self.t = 0
        self.truncated = torch.zeros(self.num_envs, dtype=torch.bool)
        return self.pos.clone()

    def step(self, actions):
        active = ~self.truncated
        self.pos = torch.where(active[:, None], self.pos + 0.2 * actions.clamp(-1, 1), self.pos)
        reward = -(self.pos - self.goals).norm(dim=-1) * active
        self.t += 1
        self.truncated = self.truncated | (self.t >= self.horizon)
        return self.pos.clone(), reward, torch.zeros_like(self.truncated), self.truncated.clone(), {}


class PointGoalFamily(TaskFamily):
    name, gym_id, horizon, obs_dim, act_dim = "point_goal", "none", 10, 2, 2
    split_sizes: ClassVar[dict[str, int]] = {"train": 20, "test": 8}

    def sample_splits(self, rng):
        def goals(n):
            return [{"goal": [math.cos(a), math.sin(a)]} for a in rng.uniform(0, 2 * math.pi, n)]
        return {split: goals(n) for split, n in self.split_sizes.items()}

    def make_batched(self, num_envs, device="cpu"):
        return PointGoalEnv(num_envs, device)


TINY = {"policy_hidden": [32, 32], "gru_size": 16, "embedding_dim": 4, "meta_batch": 4, "episodes_per_task": 4,
        "eval_episodes": 4, "eval_batch": 4, "buffer_size": 3, "ppo_epochs": 2}
METHODS = {
    "tesp": {},
    "maml": {"embedding": "none", "adapt_policy": True, "learn_alpha": False, "alpha_init": 0.1},
    "meta_sgd": {"embedding": "none", "adapt_policy": True},
    "adapt_sv": {"embedding": "task_vector"},
    "v2": {"adapt_policy": True},
    "v4": {"adapt_context": False},
}


def make(seed=0, **hparams) -> TESP:
    torch.manual_seed(seed)
    family = PointGoalFamily()
    return TESP(family, family.sample_splits(np.random.default_rng(seed)), Hyperparams(**{**TINY, **hparams}),
                "train", torch.device("cpu"))


def record_rollouts(method: TESP) -> list[Episodes]:
    """Spy on ``method.rollout`` to see the episodes each fast update used."""
    seen, rollout = [], method.rollout

    def spy(*args):
        seen.append(rollout(*args))
        return seen[-1]
    method.rollout = spy
    return seen


def test_meta_sgd_fast_update_is_theta_minus_alpha_times_grad():
    method = make(**METHODS["meta_sgd"], fast_updates=1)
    with torch.no_grad():  # distinct rates per parameter entry, so a mixed-up alpha would show
        for a in method.model.alphas:
            a.uniform_(0.01, 0.1)
    tasks = method.tasks["train"][:3]
    seen = record_rollouts(method)
    adapted = method.adapt(tasks, episodes_per_task=4).fast
    first = seen[0]  # D_0, sampled before the fast update

    adv = advantages(first, 0.99, 0.97)
    alpha = method.model.alpha()
    for t in range(len(tasks)):
        policy = method.model.policy  # the plain nn.Module forward, not the batched one
        obs, act, valid = first.obs[t][first.valid[t]], first.actions[t][first.valid[t]], first.valid[t]
        dist = torch.distributions.Normal(policy(obs), method.model.log_std.exp())
        loss = -(dist.log_prob(act).sum(-1) * adv[t][valid]).sum() / valid.sum()
        names = method.model.fast_names
        grads = torch.autograd.grad(loss, [dict(method.model.named_parameters())[n] for n in names])
        for name, grad in zip(names, grads):
            expected = dict(method.model.named_parameters())[name] - alpha[name] * grad
            torch.testing.assert_close(adapted[name][t], expected.detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["tesp", "v2"])
def test_only_v2_fast_updates_the_policy(variant):
    method = make(**METHODS[variant])
    before = {n: p.detach().clone() for n, p in method.model.params().items()}
    ad = method.adapt(method.tasks["train"][:2], episodes_per_task=4)
    policy_names = [n for n in before if n.startswith(("policy.", "log_std"))]
    encoder_names = [n for n in before if n.startswith("encoder.")]
    assert set(ad.fast) == set(encoder_names + policy_names * (variant == "v2"))
    for name in ad.fast:  # every fast parameter moved away from its initial value in every task
        assert not torch.equal(ad.fast[name][0], before[name]) and not torch.equal(ad.fast[name][1], before[name])
    for name, value in method.model.params().items():  # adaptation never writes the meta-parameters
        assert torch.equal(value, before[name])


def test_episode_buffer_keeps_exactly_the_best_m():
    def episodes(returns):
        T, E, L = *returns.shape, 5
        rewards = returns.unsqueeze(-1).expand(T, E, L) / L
        return Episodes(obs=rewards.unsqueeze(-1).clone(), actions=torch.zeros(T, E, L, 1), rewards=rewards.clone(),
                        logp=torch.zeros(T, E, L), valid=torch.ones(T, E, L, dtype=torch.bool))
    returns = torch.randn(3, 10)
    buffer = update_buffer(None, episodes(returns[:, :6]), size=4, keep_best=True)
    buffer = update_buffer(buffer, episodes(returns[:, 6:]), size=4, keep_best=True)
    torch.testing.assert_close(buffer.returns.sort(1).values, returns.topk(4, dim=1).values.sort(1).values)
    torch.testing.assert_close(buffer.obs[..., 0].sum(-1), buffer.returns)  # fields stay aligned
    everything = update_buffer(update_buffer(None, episodes(returns[:, :6]), 4, keep_best=False),
                               episodes(returns[:, 6:]), 4, keep_best=False)
    torch.testing.assert_close(everything.returns, returns)


@pytest.mark.parametrize("variant", ["tesp", "meta_sgd", "adapt_sv", "v2"])
def test_batched_fast_update_equals_per_task_loop(variant):
    method = make(**METHODS[variant], fast_updates=1)
    seen = record_rollouts(method)
    ad = method.adapt(method.tasks["train"][:3], episodes_per_task=4)
    *warmup, first, _ = seen
    buffer = update_buffer(None, warmup[0], 3, True) if warmup else None
    shared = {n: p.detach() for n, p in method.model.params().items()}
    for t in range(3):
        fast = {n: shared[n].unsqueeze(0) for n in method.model.fast_names}
        one, _ = method.fast_step(shared, fast, None if buffer is None else buffer.index([t]), first.index([t]))
        for name in fast:
            torch.testing.assert_close(ad.fast[name][t], one[name][0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", list(METHODS))
def test_state_dict_resume_equals_uninterrupted(variant):
    uninterrupted = make(**METHODS[variant])
    for _ in range(2):
        uninterrupted.train_iteration()

    first = make(**METHODS[variant])
    first.train_iteration()
    state, rng = first.state_dict(), torch.get_rng_state()
    resumed = make(**METHODS[variant])
    with torch.no_grad():  # so that only load_state_dict can make it match
        for p in resumed.model.parameters():
            p.add_(1.0)
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)
    resumed.train_iteration()
    for (name, a), b in zip(uninterrupted.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_evaluate_reports_every_stage():
    method = make(fast_updates=2)
    frame = method.evaluate(method.tasks["test"][:5])  # 5 tasks: two chunks of eval_batch 4
    assert sorted(frame.stage.unique()) == ["final", "update_0", "update_1", "update_2", "warmup"]
    assert sorted(frame.task.unique()) == list(range(5))
    final = frame[frame.stage == "final"].set_index("task")["return"]
    torch.testing.assert_close(torch.tensor(final.values),
                               torch.tensor(frame[frame.stage == "update_2"].set_index("task")["return"].values))


@pytest.mark.slow
def test_short_run_improves_post_adaptation_return():
    method = make(seed=3, ppo_epochs=5, meta_batch=8, episodes_per_task=8, eval_episodes=8)
    before = method.evaluate(method.tasks["test"]).query("stage == 'final'")["return"].mean()
    for _ in range(30):
        method.train_iteration()
    after = method.evaluate(method.tasks["test"]).query("stage == 'final'")["return"].mean()
    assert after > before + 1.0, (before, after)
