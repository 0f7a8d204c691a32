"""metarl's PEARL gradient step against a plain re-implementation of the authors' code.

The reference below restates oyster's ``PEARLSoftActorCritic._take_step`` (katerakelly/oyster,
rlkit/torch/sac/sac.py) and ``PEARLAgent`` (rlkit/torch/sac/agent.py) in float64, sequentially: six
separate networks (encoder, Q1, Q2, V, target V, policy) as lists of weight tensors, five
``torch.optim.Adam``, posterior = product of the per-transition Gaussians, and oyster's order:
KL backward, Bellman backward, Q1/Q2/encoder steps; min-Q of the new actions with the updated Q;
value step; soft target update; policy step. The one deliberate difference from oyster is the tanh
correction of the log-probability, exact here and in metarl where oyster adds 1e-6 inside the log.

Both start from metarl's initial weights and see the same batches, context and noise; after three
steps every parameter must agree to 1e-10.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from metarl.envs import get_family
from metarl.methods.pearl import PEARL

HP = {"hidden": 32, "layers": 2, "encoder_hidden": 24, "encoder_layers": 2, "meta_batch": 4, "rl_batch": 16,
      "context_batch": 8, "lr": 3e-3, "kl_lambda": 0.5, "reward_scale": 5.0, "gamma": 0.9, "tau": 0.05}
LATENT = 5
STEPS = 3


def linear_layers(sequential):
    return [(m.weight, m.bias) for m in sequential if isinstance(m, torch.nn.Linear)]


def leaf_copy(layers):
    return [(w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()) for w, b in layers]


def forward(layers, x):
    """A ReLU MLP given as [(weight (out, in), bias), ...]."""
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if i < len(layers) - 1:
            x = torch.relu(x)
    return x


def params(layers):
    return [t for pair in layers for t in pair]


class Reference:
    """oyster's networks, optimisers and ``_take_step``, from metarl's initial weights."""

    def __init__(self, model, act_dim):
        self.encoder = leaf_copy(linear_layers(model.encoder))
        ensemble = list(zip(model.q.weights, model.q.biases))
        self.q1 = leaf_copy([(w[0].T, b[0, 0]) for w, b in ensemble])
        self.q2 = leaf_copy([(w[1].T, b[1, 0]) for w, b in ensemble])
        self.v = leaf_copy(linear_layers(model.v))
        self.v_target = [(w.detach().clone(), b.detach().clone()) for w, b in linear_layers(model.v_target)]
        *hidden, (w, b) = linear_layers(model.policy.net)
        # oyster's policy: shared hidden layers, a mean head and a log-std head
        self.policy_hidden = leaf_copy(hidden)
        self.mean_head = leaf_copy([(w[:act_dim], b[:act_dim])])[0]
        self.log_std_head = leaf_copy([(w[act_dim:], b[act_dim:])])[0]
        lr = HP["lr"]
        self.opt_encoder = torch.optim.Adam(params(self.encoder), lr=lr)
        self.opt_q1 = torch.optim.Adam(params(self.q1), lr=lr)
        self.opt_q2 = torch.optim.Adam(params(self.q2), lr=lr)
        self.opt_v = torch.optim.Adam(params(self.v), lr=lr)
        self.opt_policy = torch.optim.Adam(params(self.policy_hidden) + list(self.mean_head) + list(self.log_std_head),
                                           lr=lr)

    def policy(self, x, noise):
        h = x
        for w, b in self.policy_hidden:
            h = torch.relu(h @ w.T + b)
        mean = h @ self.mean_head[0].T + self.mean_head[1]
        log_std = (h @ self.log_std_head[0].T + self.log_std_head[1]).clamp(-20, 2)
        u = mean + log_std.exp() * noise
        action = torch.tanh(u)
        log_pi = (Normal(mean, log_std.exp()).log_prob(u) - torch.log(1 - action**2)).sum(-1)
        return action, log_pi, mean, log_std

    def step(self, obs, act, reward, next_obs, term, context, z_noise, action_noise):
        """Inputs per task (T, B, .) / context (T, C, .); as oyster's _take_step."""
        t, b = obs.shape[:2]
        # infer the posterior: product of the Gaussian factors of every context transition
        out = forward(self.encoder, context)
        mu, var = out[..., :LATENT], F.softplus(out[..., LATENT:]).clamp(min=1e-7)
        post_var = 1 / (1 / var).sum(1)
        post_mu = post_var * (mu / var).sum(1)
        z = (post_mu + post_var.sqrt() * z_noise)[:, None].expand(t, b, LATENT).reshape(t * b, LATENT)
        obs, act, next_obs = obs.reshape(t * b, -1), act.reshape(t * b, -1), next_obs.reshape(t * b, -1)
        reward, term = reward.reshape(t * b), term.reshape(t * b)

        action, log_pi, mean, log_std = self.policy(torch.cat([obs, z.detach()], 1), action_noise)
        q1_pred = forward(self.q1, torch.cat([obs, act, z], 1)).squeeze(1)
        q2_pred = forward(self.q2, torch.cat([obs, act, z], 1)).squeeze(1)
        v_pred = forward(self.v, torch.cat([obs, z.detach()], 1)).squeeze(1)
        with torch.no_grad():
            target_v = forward(self.v_target, torch.cat([next_obs, z], 1)).squeeze(1)

        self.opt_encoder.zero_grad()
        kl = sum(kl_divergence(Normal(m, s.sqrt()), Normal(torch.zeros(LATENT), torch.ones(LATENT))).sum()
                 for m, s in zip(post_mu, post_var))
        (HP["kl_lambda"] * kl).backward(retain_graph=True)
        self.opt_q1.zero_grad()
        self.opt_q2.zero_grad()
        q_target = HP["reward_scale"] * reward + (1 - term) * HP["gamma"] * target_v
        qf_loss = ((q1_pred - q_target) ** 2).mean() + ((q2_pred - q_target) ** 2).mean()
        qf_loss.backward()
        self.opt_q1.step()
        self.opt_q2.step()
        self.opt_encoder.step()

        q_in = torch.cat([obs, action, z.detach()], 1)
        min_q = torch.min(forward(self.q1, q_in), forward(self.q2, q_in)).squeeze(1)
        vf_loss = ((v_pred - (min_q - log_pi).detach()) ** 2).mean()
        self.opt_v.zero_grad()
        vf_loss.backward()
        self.opt_v.step()
        with torch.no_grad():
            for (tw, tb), (w, bias) in zip(self.v_target, self.v):
                tw.copy_(tw * (1 - HP["tau"]) + w * HP["tau"])
                tb.copy_(tb * (1 - HP["tau"]) + bias * HP["tau"])

        policy_loss = (log_pi - min_q).mean() + 1e-3 * (mean**2).mean() + 1e-3 * (log_std**2).mean()
        self.opt_policy.zero_grad()
        policy_loss.backward()
        self.opt_policy.step()


def test_gradient_steps_equal_oyster_reference(float64):
    torch.manual_seed(0)
    family = get_family("point_robot")
    method = PEARL(family, family.sample_splits(np.random.default_rng(0)), PEARL.make_hparams(HP), "train",
                   torch.device("cpu"))
    assert method.model.encoder[0].weight.dtype == torch.float64
    # a replay buffer of arbitrary transitions: actions in [-1, 1], some terminal
    n, steps, width, c = len(method.train_tasks), 40, method.buffer.data.shape[2], method.cols
    rows = torch.randn(n, steps, width)
    rows[..., c["act"]] = torch.rand(n, steps, method.act_dim) * 2 - 1
    rows[..., c["term"]] = (torch.rand(n, steps, 1) < 0.2).double()
    method.buffer.add(torch.arange(n), rows, torch.ones(n, steps, dtype=torch.bool), context=True)
    reference = Reference(method.model, method.act_dim)

    for k in range(STEPS):
        batch = method.sample_batch()
        torch.manual_seed(100 + k)  # z's reparameterisation noise is the only draw inside step()
        method.step(batch)
        torch.manual_seed(100 + k)
        z_noise = torch.randn(HP["meta_batch"], LATENT)
        r = batch.rows
        reference.step(r[..., c["obs"]], r[..., c["act"]], r[..., c["rew"]], r[..., c["next_obs"]], r[..., c["term"]],
                       batch.context, z_noise, batch.action_noise)

    model = method.model
    ensemble = list(zip(model.q.weights, model.q.biases))
    *policy_hidden, (w, b) = linear_layers(model.policy.net)
    pairs = {
        "encoder": (params(linear_layers(model.encoder)), params(reference.encoder)),
        "q1": ([t for w_, b_ in ensemble for t in (w_[0].T, b_[0, 0])], params(reference.q1)),
        "q2": ([t for w_, b_ in ensemble for t in (w_[1].T, b_[1, 0])], params(reference.q2)),
        "v": (params(linear_layers(model.v)), params(reference.v)),
        "v_target": (params(linear_layers(model.v_target)), params(reference.v_target)),
        "policy": (params(policy_hidden) + [w[:method.act_dim], b[:method.act_dim], w[method.act_dim:],
                                            b[method.act_dim:]],
                   params(reference.policy_hidden) + list(reference.mean_head) + list(reference.log_std_head)),
    }
    for name, (mine, theirs) in pairs.items():
        assert len(mine) == len(theirs)
        for i, (a, e) in enumerate(zip(mine, theirs)):
            torch.testing.assert_close(a, e, rtol=0, atol=1e-10, msg=lambda m: f"{name}[{i}]: {m}")
