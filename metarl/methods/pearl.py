"""PEARL (Rakelly et al. 2019): off-policy meta-RL with a probabilistic context variable, plus
the structured latents of Ren et al. (2019) through ``metarl.latents``.

Read top to bottom: networks -> per-task replay buffer -> rollouts -> the PEARL class
(collection, one SAC+encoder gradient step, online-adaptation evaluation). The algorithm is
oyster's (katerakelly/oyster, the authors' code) step for step; tests/test_pearl_reference.py
checks a gradient step against a plain re-implementation of it.

Discrete actions (the gridworld, ``family.discrete``): discrete SAC (Christodoulou 2019) inside
PEARL's structure. The twin Q-networks output one value per action, the policy is a categorical
over the actions, and the value target and policy loss are exact expectations over that
categorical (no reparameterisation); actions are one-hot in the buffer and the context, so the
rest of the algorithm is unchanged. tests/test_pearl_discrete.py checks these losses.

Speed: the whole meta-batch goes through one forward/backward (tasks are a tensor dimension,
never a Python loop); the twin Q-networks are one batched matmul ensemble; a gradient step is two
backward passes (encoder + Q, then value + policy, in oyster's order) with gradients routed by
``detach`` so every network only receives the gradient PEARL gives it, and one fused Adam steps
the networks that have gradients after each pass (Adam is per parameter, so this equals oyster's
five Adams); buffers live on the device; collection steps the sampled tasks together through the
batched env.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from metarl import compiling
from metarl.envs.base import Task, TaskFamily
from metarl.latents import LatentSpace
from metarl.methods.base import FINAL_STAGE, Method
from metarl.optim import Adam


INITS = ("rlkit", "torch")


@dataclasses.dataclass
class Hyperparams:
    """Defaults are the paper's settings as oyster's MuJoCo configs use them (configs/*.json over
    configs/default.py); default.py itself has context_batch 64, extra_rl_steps 400 and
    eval_prior_trajectories 1, which config.yaml's point-robot block takes."""
    latent: str | list[str] = "gau(5)"   # see LatentSpace.parse, e.g. "dir(2,4)+gau(2)"
    gumbel_temperature: float = 0.5      # relaxation of categorical latents
    dirichlet_alpha: float = 0.2         # Dir(alpha, ..., alpha) prior of Dirichlet latents
    hidden: int = 300                    # actor / critic MLPs: layers x hidden
    layers: int = 3
    encoder_hidden: int = 200
    encoder_layers: int = 3
    use_next_obs: bool = False           # put s' into the context transitions
    meta_batch: int = 16                 # tasks per gradient step
    rl_batch: int = 256                  # transitions per task per gradient step
    context_batch: int = 256             # context transitions per task per gradient step
    tasks_per_iteration: int = 5         # train tasks collected from per iteration
    initial_steps: int = 2000            # per train task, z from the prior, before training
    prior_steps: int = 400               # per sampled task and iteration, z ~ prior (RL + context)
    posterior_steps: int = 0             # then z ~ posterior over the context so far (RL + context)
    extra_rl_steps: int = 600            # then z ~ posterior, RL only (PEARL's extra RL steps)
    # each phase collects whole trajectories until it has at least its steps, its first z from the prior
    grad_steps: int = 2000               # per iteration
    gamma: float = 0.99
    tau: float = 0.005
    lr: float = 3e-4
    anneal_lr: bool = False              # decay lr linearly to 0 over meta-training (not PEARL's)
    reward_scale: float = 5.0
    kl_lambda: float = 0.1
    policy_reg: float = 1e-3             # weight of the mean and log-std penalties (PEARL's code; continuous actions only)
    init: str = "rlkit"                  # network initialisation: "rlkit" (oyster's, see mlp) or "torch" (nn.Linear's default)
    buffer_size: int = 1_000_000         # per train task
    eval_trajectories: int = 3           # online adaptation: trajectories per test task ...
    eval_prior_trajectories: int = 2     # ... of which the first ones use z from the prior
    eval_runs: int = 2                   # independent adaptation runs per test task (oyster's num_evals)

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"PEARL: init must be one of {INITS}, got {self.init!r}")
        if self.eval_runs < 1:
            raise ValueError(f"PEARL: eval_runs must be at least 1, got {self.eval_runs}")


# ---------------------------------------------------------------------------------- networks

def mlp(inp: int, out: int, hidden: int, layers: int, init: str = "rlkit", init_w: float = 3e-3) -> nn.Sequential:
    """ReLU MLP. ``init="rlkit"`` initialises it as rlkit's ``Mlp`` (oyster rlkit/torch/networks.py):
    hidden weights U(+-1/sqrt(size[0])) by rlkit's ``fanin_init``, where size[0] of torch's (out, in)
    weight is the layer's *output* width (rlkit's quirk, reproduced), hidden biases 0.1, and the last
    layer's weights and biases U(+-init_w). ``init="torch"`` keeps ``nn.Linear``'s default
    (weights and biases U(+-1/sqrt(in))), which quick's small-network sparse settings use
    (benchmarks/pearl.md: with rlkit's, prior-z trajectories there all head for one spot)."""
    sizes = [inp] + [hidden] * layers
    body = []
    for a, b in itertools.pairwise(sizes):
        linear = nn.Linear(a, b)
        if init == "rlkit":
            bound = 1 / math.sqrt(linear.weight.shape[0])
            nn.init.uniform_(linear.weight, -bound, bound)
            nn.init.constant_(linear.bias, 0.1)
        body += [linear, nn.ReLU()]
    last = nn.Linear(sizes[-1], out)
    if init == "rlkit":
        nn.init.uniform_(last.weight, -init_w, init_w)
        nn.init.uniform_(last.bias, -init_w, init_w)
    return nn.Sequential(*body, last)


class EnsembleMLP(nn.Module):
    """``k`` MLPs with stacked weights evaluated by one batched matmul per layer (twin Q); each
    member is initialised as its own ``mlp``, then its (out, in) weights are stored transposed."""

    def __init__(self, k: int, inp: int, out: int, hidden: int, layers: int, init: str = "rlkit"):
        super().__init__()
        members = [mlp(inp, out, hidden, layers, init) for _ in range(k)]
        linears = [[m for m in member if isinstance(m, nn.Linear)] for member in members]
        self.weights = nn.ParameterList(nn.Parameter(torch.stack([ls[i].weight.T for ls in linears]))
                                        for i in range(len(linears[0])))
        self.biases = nn.ParameterList(nn.Parameter(torch.stack([ls[i].bias[None] for ls in linears]))
                                       for i in range(len(linears[0])))

    def forward(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """``x`` (N, inp) -> (k, N, out); ``frozen`` blocks gradients into the weights only."""
        h = x.expand(len(self.weights[0]), *x.shape)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            w, b = (w.detach(), b.detach()) if frozen else (w, b)
            h = torch.baddbmm(b, h, w)
            h = F.relu(h) if i < len(self.weights) - 1 else h
        return h


class TanhGaussianPolicy(nn.Module):
    def __init__(self, inp: int, act_dim: int, hidden: int, layers: int, init: str = "rlkit"):
        super().__init__()
        # one output layer for [mean, log-std]: the same as oyster's two heads, both U(+-1e-3)
        # with init "rlkit" (rlkit/torch/sac/policies.py TanhGaussianPolicy, init_w=1e-3)
        self.net = mlp(inp, 2 * act_dim, hidden, layers, init, init_w=1e-3)

    def forward(self, x: torch.Tensor, deterministic: bool = False, noise: torch.Tensor | None = None):
        """Action in [-1, 1]^act_dim, its log-probability, pre-tanh mean and log-std; ``noise``
        (standard normal, like the mean) reparameterises the sample, drawn here when None."""
        mean, log_std = self.net(x).chunk(2, -1)
        log_std = log_std.clamp(-20, 2)
        if deterministic:
            return torch.tanh(mean), None, mean, log_std
        u = mean + log_std.exp() * (torch.randn_like(mean) if noise is None else noise)
        # log N(u) - log|d tanh(u)/du|, with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))
        # exact and stable; oyster (rlkit/torch/distributions.py TanhNormal) uses
        # log(1 - tanh(u)^2 + 1e-6), which differs where tanh saturates (|u| of a few or more)
        log_prob = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
                    - 2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob, mean, log_std


class CategoricalPolicy(nn.Module):
    """Discrete SAC's policy (Christodoulou 2019): logits over the actions from an MLP whose last
    layer, with init "rlkit", is U(+-1e-3) like the Gaussian policy's heads, so it starts near uniform."""

    def __init__(self, inp: int, num_actions: int, hidden: int, layers: int, init: str = "rlkit"):
        super().__init__()
        self.net = mlp(inp, num_actions, hidden, layers, init, init_w=1e-3)

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.net(x), -1)

    def forward(self, x: torch.Tensor, deterministic: bool = False):
        """One-hot action (N, |A|), sampled or the most likely, and the log-probabilities of all actions."""
        log_pi = self.log_probs(x)
        index = log_pi.argmax(-1) if deterministic else torch.multinomial(log_pi.exp(), 1).squeeze(-1)
        return F.one_hot(index, log_pi.shape[-1]).to(log_pi.dtype), log_pi


class PEARLModel(nn.Module):
    """Everything needed to act and adapt: context encoder, policy, twin Q, value and target value.
    With ``discrete`` actions (one-hot, ``act_dim`` of them) Q maps (s, z) to one value per action."""

    def __init__(self, obs_dim: int, act_dim: int, latent: LatentSpace, hp: Hyperparams, discrete: bool = False):
        super().__init__()
        self.latent = latent
        self.context_dim = obs_dim + act_dim + 1 + (obs_dim if hp.use_next_obs else 0)
        self.encoder = mlp(self.context_dim, latent.param_dim, hp.encoder_hidden, hp.encoder_layers, hp.init)
        if discrete:
            self.policy = CategoricalPolicy(obs_dim + latent.dim, act_dim, hp.hidden, hp.layers, hp.init)
            self.q = EnsembleMLP(2, obs_dim + latent.dim, act_dim, hp.hidden, hp.layers, hp.init)
        else:
            self.policy = TanhGaussianPolicy(obs_dim + latent.dim, act_dim, hp.hidden, hp.layers, hp.init)
            self.q = EnsembleMLP(2, obs_dim + act_dim + latent.dim, 1, hp.hidden, hp.layers, hp.init)
        self.v = mlp(obs_dim + latent.dim, 1, hp.hidden, hp.layers, hp.init)
        self.v_target = copy.deepcopy(self.v).requires_grad_(False)

    def factors(self, context: torch.Tensor) -> torch.Tensor:
        """Context transitions ``(T, N, context_dim)`` -> one latent factor per transition."""
        return self.latent.factors(self.encoder(context))

    def posterior(self, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.latent.posterior(self.factors(context), mask)


# ---------------------------------------------------------------------------- replay buffer

class TaskReplay:
    """Transitions of every train task in one tensor ``(tasks, capacity, width)``, a ring per task.

    The *context window* of a task plays oyster's encoder buffer: ``clear_context`` empties it
    when the task is drawn for collection, then the prior-z and posterior-z steps join it (not the
    extra RL steps, which come last). Context rows are therefore contiguous, a slice of the same
    storage, so context costs no extra memory. Capacity grows by doubling up to ``max_size``.
    """

    def __init__(self, num_tasks: int, width: int, max_size: int, device: torch.device):
        self.max_size = max_size
        self.data = torch.zeros(num_tasks, min(1024, max_size), width, device=device)
        self.size = torch.zeros(num_tasks, dtype=torch.long, device=device)
        self.ptr = torch.zeros(num_tasks, dtype=torch.long, device=device)  # total ever written
        self.ctx_start = torch.zeros(num_tasks, dtype=torch.long, device=device)
        self.ctx_len = torch.zeros(num_tasks, dtype=torch.long, device=device)

    def clear_context(self, tasks: torch.Tensor) -> None:
        """Empty the context window of the distinct ``tasks``: it restarts at their next row.
        (Starts are row counts, taken modulo the capacity when read, so growth cannot move them.)"""
        self.ctx_start[tasks] = self.ptr[tasks]
        self.ctx_len[tasks] = 0

    def add(self, tasks: torch.Tensor, rows: torch.Tensor, valid: torch.Tensor, context: bool) -> None:
        """Append ``rows`` (E, L, width) where ``valid`` (E, L) for the distinct ``tasks`` (E,);
        with ``context`` they also join the tasks' context window."""
        count = valid.sum(1)
        needed = int((self.ptr[tasks] + count).max())
        capacity = self.data.shape[1]
        if needed > capacity and capacity < self.max_size:
            new_cap = min(self.max_size, max(needed, 2 * capacity))
            grown = self.data.new_zeros(self.data.shape[0], new_cap, self.data.shape[2])
            grown[:, :capacity] = self.data  # nothing has wrapped yet below max_size
            self.data, capacity = grown, new_cap
        offsets = self.ptr[tasks, None] + valid.long().cumsum(1) - 1
        task_idx = tasks[:, None].expand_as(valid)
        self.data[task_idx[valid], offsets[valid] % capacity] = rows[valid]
        if context:
            self.ctx_len[tasks] = (self.ctx_len[tasks] + count).clamp(max=capacity)
        self.ptr[tasks] += count
        self.size[tasks] = self.ptr[tasks].clamp(max=capacity)

    def sample(self, tasks: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` transitions per task, uniformly from everything stored: (T, n, width)."""
        idx = (torch.rand(len(tasks), n, device=self.data.device) * self.size[tasks, None]).long()
        return self.data[tasks[:, None], idx]

    def sample_context(self, tasks: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` transitions per task from its context window: (T, n, width)."""
        offset = (torch.rand(len(tasks), n, device=self.data.device) * self.ctx_len[tasks, None]).long()
        return self.data[tasks[:, None], (self.ctx_start[tasks, None] + offset) % self.data.shape[1]]

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("data", "size", "ptr", "ctx_start", "ctx_len")}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value.to(self.data.device))


# -------------------------------------------------------------------------------- the method

@dataclasses.dataclass
class Batch:
    """What a gradient step samples: per task of the meta-batch, RL rows (T, rl_batch, width) and
    encoder inputs (T, context_batch, context_dim); standard-normal noise (T*rl_batch, act_dim)
    reparameterising the policy's new actions (None for discrete actions: nothing is sampled)."""
    rows: torch.Tensor
    context: torch.Tensor
    action_noise: torch.Tensor | None


def distinct_rounds(draws: torch.Tensor) -> list[torch.Tensor]:
    """Split draws that may repeat into rounds of distinct ids, in order: the k-th draw of each id
    goes to round k (tasks of one round are stepped together through one batched env)."""
    rounds: list[list[int]] = []
    seen: dict[int, int] = {}
    for i in draws.tolist():
        k = seen[i] = seen.get(i, -1) + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(i)
    return [torch.tensor(r, dtype=torch.long) for r in rounds]


class PEARL(Method):
    Hyperparams = Hyperparams

    def __init__(self, family: TaskFamily, tasks: dict[str, list[Task]], hparams: Hyperparams,
                 train_split: str, device: torch.device):
        super().__init__(family, tasks, hparams, train_split, device)
        hp = self.hp
        if hp.extra_rl_steps > 0 and hp.prior_steps + hp.posterior_steps == 0:
            raise ValueError("PEARL: extra_rl_steps > 0 needs prior_steps or posterior_steps > 0 (the extra "
                             "steps' posterior is inferred from the context those phases collect)")
        self.train_tasks = tasks[train_split]
        self.obs_dim, self.act_dim, self.discrete = family.obs_dim, family.act_dim, family.discrete
        if not self.discrete:  # the policy acts in [-1, 1], rescaled to the env's bounds
            self.act_low, self.act_high = family.action_bounds(self.train_tasks[0], device)
        latent = LatentSpace.parse(hp.latent, hp.gumbel_temperature, hp.dirichlet_alpha)
        self.model = PEARLModel(self.obs_dim, self.act_dim, latent, hp, self.discrete).to(device)
        # one fused Adam for all networks; a network moves only in the phase of step() that gives
        # it gradients, so it equals oyster's per-network Adams (same lr, betas and eps)
        self.optimizer = Adam([p for p in self.model.parameters() if p.requires_grad], lr=hp.lr, fused=True)
        self.latent = latent
        # row layout: obs | action (one-hot if discrete) | reward (dense, for the critic) | context reward
        # | next obs | terminated
        o, a = self.obs_dim, self.act_dim
        self.cols = {"obs": slice(0, o), "act": slice(o, o + a), "rew": slice(o + a, o + a + 1),
                     "ctx_rew": slice(o + a + 1, o + a + 2), "next_obs": slice(o + a + 2, 2 * o + a + 2),
                     "term": slice(2 * o + a + 2, 2 * o + a + 3)}
        self.buffer = TaskReplay(len(self.train_tasks), 2 * o + a + 3, hp.buffer_size, device)
        self._envs: dict[int, object] = {}
        self.initialised = False
        self._critic_losses, self._actor_losses, self._act = self.critic_losses, self.actor_losses, self.model.policy
        self.graphs = False

    def use_compile(self, mode: str) -> None:
        """config.yaml's ``compile`` switch (metarl.compiling): compiles both phases of a gradient
        step (forward and, through AOT autograd, backward) and the policy forward of collection."""
        super().use_compile(mode)
        # on CUDA, compiled means CUDA-graph replay (cudagraph trees), whose outputs live in memory
        # the next replay reuses: the step and the rollout mark where one use ends
        self.graphs = self.compiled and self.device.type == "cuda"
        if self.compiled:
            self._critic_losses = compiling.compiled(self.critic_losses, self.device)
            self._actor_losses = compiling.compiled(self.actor_losses, self.device)
            self._act = compiling.compiled(self.model.policy, self.device)

    # ------------------------------------------------------------------------ helpers

    def _env(self, tasks: list[Task]):
        """Batched env for these tasks (cached by size: MuJoCo envs are not free to build)."""
        env = self._envs.get(len(tasks))
        if env is None:
            env = self._envs[len(tasks)] = self.family.make_batched(len(tasks), self.device)
        env.set_tasks(tasks)
        return env

    def context_of(self, rows: torch.Tensor) -> torch.Tensor:
        """Buffer rows -> encoder inputs (s, a, context reward[, s'])."""
        c = self.cols
        parts = [rows[..., c["obs"]], rows[..., c["act"]], rows[..., c["ctx_rew"]]]
        if self.hp.use_next_obs:
            parts.append(rows[..., c["next_obs"]])
        return torch.cat(parts, -1)

    @torch.no_grad()
    def rollout(self, env, z: torch.Tensor, deterministic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One trajectory per env with fixed z (E, dim). Returns buffer rows (E, H, width),
        validity (E, H) (False after the episode ended) and the visited observations (E, H+1, obs)."""
        obs = env.reset()
        rows, valid, path = [], [], [obs]
        ended = torch.zeros(env.num_envs, dtype=torch.bool, device=self.device)
        for _ in range(env.horizon):
            if self.graphs:  # the last step's action is used up (copied into rows and the env)
                torch.compiler.cudagraph_mark_step_begin()
            action = self._act(torch.cat([obs, z], -1), deterministic)[0]
            env_action = (action.argmax(-1) if self.discrete
                          else self.act_low + (action + 1) * 0.5 * (self.act_high - self.act_low))
            next_obs, reward, terminated, truncated, info = env.step(env_action)
            ctx_reward = info.get("sparse_reward", reward)
            rows.append(torch.cat([obs, action, reward[:, None], ctx_reward[:, None], next_obs,
                                   terminated[:, None].float()], -1))
            valid.append(~ended)
            ended = ended | terminated | truncated
            obs = next_obs
            path.append(obs)
        return torch.stack(rows, 1), torch.stack(valid, 1), torch.stack(path, 1)

    def collect(self, task_ids: torch.Tensor, steps: int, posterior: bool, context: bool) -> torch.Tensor:
        """One collection phase, oyster's ``collect_data`` (rlkit/core/rl_algorithm.py), on the
        distinct ``task_ids`` stepped together: whole trajectories until each task has at least
        ``steps`` transitions (more trajectories where episodes terminate early). z starts from the
        prior (oyster clears z at the start of every phase) and is resampled every trajectory; with
        ``posterior``, after every trajectory (oyster's update_post_train = 1) the posterior is
        re-inferred from a context batch of the task's context window and the next z drawn from it.
        Rows go to the RL buffer and, with ``context``, to the context window. Returns the
        trajectories' (context-reward) returns."""
        collected = torch.zeros(len(task_ids), dtype=torch.long, device=self.device)
        post = self.latent.prior(len(task_ids), self.device).clone()
        returns = []
        while (active := (collected < steps).nonzero().squeeze(1)).numel():
            ids = task_ids[active]
            env = self._env([self.train_tasks[i] for i in ids.tolist()])
            with torch.no_grad():
                z = self.latent.sample(post[active])
            rows, valid, _ = self.rollout(env, z, deterministic=False)
            self.buffer.add(ids, rows, valid, context)
            collected[active] += valid.sum(1)
            self.env_steps += int(valid.sum())
            returns.append((rows[..., self.cols["ctx_rew"]].squeeze(-1) * valid).sum(1))
            if posterior:
                with torch.no_grad():
                    post[active] = self.model.posterior(
                        self.context_of(self.buffer.sample_context(ids, self.hp.context_batch)))
        return torch.cat(returns)

    # ------------------------------------------------------------------------ training

    def sample_batch(self) -> Batch:
        """A meta-batch of tasks drawn with replacement (oyster: np.random.choice), per task an RL
        batch from its whole buffer and a context batch from its context window."""
        hp = self.hp
        tasks = torch.randint(len(self.train_tasks), (hp.meta_batch,), device=self.device)
        return Batch(rows=self.buffer.sample(tasks, hp.rl_batch),
                     context=self.context_of(self.buffer.sample_context(tasks, hp.context_batch)),
                     action_noise=None if self.discrete else
                     torch.randn(hp.meta_batch * hp.rl_batch, self.act_dim, device=self.device))

    def critic_losses(self, rows: torch.Tensor, context: torch.Tensor):
        """Phase 1 of a step: encoder and twin Q on the Bellman error + kl_lambda * KL. Returns the
        loss to minimise, its Q and KL parts and z, reparameterised here (compiled when enabled)."""
        hp, c, model = self.hp, self.cols, self.model
        obs, act, next_obs = rows[:, c["obs"]], rows[:, c["act"]], rows[:, c["next_obs"]]
        reward, term = rows[:, c["rew"]].squeeze(-1), rows[:, c["term"]].squeeze(-1)
        post = model.posterior(context)
        z = self.latent.sample(post).repeat_interleave(rows.shape[0] // context.shape[0], 0)
        if self.discrete:  # one Q per action: pick the taken one with its one-hot
            q = (model.q(torch.cat([obs, z], -1)) * act).sum(-1)           # (2, T*B)
        else:
            q = model.q(torch.cat([obs, act, z], -1)).squeeze(-1)         # (2, T*B)
        with torch.no_grad():
            v_next = model.v_target(torch.cat([next_obs, z], -1)).squeeze(-1)
            q_target = hp.reward_scale * reward + (1 - term) * hp.gamma * v_next
        q_loss = ((q - q_target) ** 2).mean(1).sum()
        kl = self.latent.kl(post).sum()  # summed over tasks, as oyster
        return q_loss + hp.kl_lambda * kl, q_loss, kl, z

    def actor_losses(self, obs: torch.Tensor, z: torch.Tensor, action_noise: torch.Tensor | None):
        """Phase 2 of a step: value and policy on detached z, against the min of the (updated)
        Q-networks on new actions; Q weights frozen so that the policy loss only moves the policy.
        Returns the loss to minimise and its value and policy parts (compiled when enabled)."""
        hp, model = self.hp, self.model
        s_z = torch.cat([obs, z], -1)
        if self.discrete:
            # discrete SAC (Christodoulou 2019): the expectations over new actions are exact sums
            # over the categorical, so V's target is E_pi[min Q - log pi] and the policy minimises
            # E_pi[log pi - min Q]; no mean/log-std penalties (the Gaussian's, nothing to penalise here)
            log_pi = model.policy.log_probs(s_z)                                      # (N, |A|)
            q_all = model.q(s_z, frozen=True).min(0).values                           # (N, |A|)
            v_target = (log_pi.exp() * (q_all - log_pi)).sum(-1)
            pi_loss = (log_pi.exp() * (log_pi - q_all)).sum(-1).mean()
        else:
            action, log_pi, mean, log_std = model.policy(s_z, noise=action_noise)
            q_new = model.q(torch.cat([obs, action, z], -1), frozen=True).squeeze(-1).min(0).values
            v_target = q_new - log_pi
            pi_loss = (log_pi - q_new).mean() + hp.policy_reg * ((mean ** 2).mean() + (log_std ** 2).mean())
        v = model.v(s_z).squeeze(-1)
        v_loss = ((v - v_target.detach()) ** 2).mean()
        return v_loss + pi_loss, v_loss, pi_loss  # disjoint: v_loss reaches V only, pi_loss the policy only

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step in oyster's order (``_take_step``, rlkit/torch/sac/sac.py): encoder and
        twin Q; then, against the updated Q, the value network, the soft target update and the
        policy. z's reparameterisation noise is drawn in ``critic_losses``."""
        rows = batch.rows.flatten(0, 1)                                    # (T*B, width)
        if self.graphs:  # a new step: the graphs may reuse the memory of the last step's outputs
            torch.compiler.cudagraph_mark_step_begin()
        loss, q_loss, kl, z = self._critic_losses(rows, batch.context)
        if self.graphs:  # the backward graph's replay overwrites the forward's other outputs: keep copies
            q_loss, kl, z = q_loss.detach().clone(), kl.detach().clone(), z.detach().clone()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()  # only the encoder and Q have gradients, so only they move

        loss, v_loss, pi_loss = self._actor_losses(rows[:, self.cols["obs"]], z.detach(), batch.action_noise)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():  # oyster updates the target after the value step (the policy ignores it)
            torch._foreach_lerp_(list(self.model.v_target.parameters()), list(self.model.v.parameters()), self.hp.tau)
        return {"q_loss": q_loss.detach(), "v_loss": v_loss.detach(), "pi_loss": pi_loss.detach(),
                "kl": kl.detach() / len(batch.rows)}

    def update(self) -> dict[str, torch.Tensor]:
        return self.step(self.sample_batch())

    def train_iteration(self) -> dict[str, float]:
        hp = self.hp
        if hp.anneal_lr:  # short runs at a high rate end on whichever policy the last updates left
            self.optimizer.lr = hp.lr * (1.0 - self.progress)
        if not self.initialised:
            self.collect(torch.arange(len(self.train_tasks), device=self.device), hp.initial_steps,
                         posterior=False, context=True)
            self.initialised = True
        # oyster draws each of the iteration's tasks with np.random.randint, so a task can come up
        # twice; it then collects for it twice, one after the other, clearing its context first
        drawn = torch.randint(len(self.train_tasks), (hp.tasks_per_iteration,))
        returns: dict[str, list[torch.Tensor]] = {"return_prior": [], "return_posterior": [], "return_extra_rl": []}
        for tasks in distinct_rounds(drawn):
            tasks = tasks.to(self.device)
            self.buffer.clear_context(tasks)
            for key, steps, posterior, context in [("return_prior", hp.prior_steps, False, True),
                                                   ("return_posterior", hp.posterior_steps, True, True),
                                                   ("return_extra_rl", hp.extra_rl_steps, True, False)]:
                if steps > 0:
                    returns[key].append(self.collect(tasks, steps, posterior, context))
        metrics = {key: float(torch.cat(value).mean()) for key, value in returns.items() if value}
        # the progress line's "return": the iteration's last trajectories
        metrics["return"] = metrics.get("return_extra_rl", metrics.get("return_posterior", metrics.get("return_prior")))
        sums: dict[str, torch.Tensor] = {}
        for _ in range(hp.grad_steps):
            for key, value in self.update().items():
                sums[key] = sums.get(key, 0) + value
        metrics.update({key: float(value) / hp.grad_steps for key, value in sums.items()})
        return metrics

    # ------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def adapt(self, tasks: list[Task], trajectories: int | None = None,
              prior_trajectories: int | None = None) -> dict[str, torch.Tensor]:
        """Online adaptation on all ``tasks`` at once: the first ``prior_trajectories`` with z from
        the prior, each later one with z from the posterior over all transitions gathered so far;
        deterministic actions. Returns per-trajectory ``returns`` (T, K) of the evaluation reward
        (sparse where the family has one) and the visited ``observations`` (T, K, H+1, obs)."""
        trajectories = trajectories or self.hp.eval_trajectories
        prior_trajectories = self.hp.eval_prior_trajectories if prior_trajectories is None else prior_trajectories
        env = self._env(tasks)
        factors, masks, returns, paths = [], [], [], []
        for k in range(trajectories):
            post = (self.latent.prior(len(tasks), self.device) if k < prior_trajectories
                    else self.latent.posterior(torch.cat(factors, 1), torch.cat(masks, 1)))
            rows, valid, path = self.rollout(env, self.latent.sample(post), deterministic=True)
            factors.append(self.model.factors(self.context_of(rows)))
            masks.append(valid.float())
            returns.append((rows[..., self.cols["ctx_rew"]].squeeze(-1) * valid).sum(1))
            paths.append(path)
        return {"returns": torch.stack(returns, 1).cpu(), "observations": torch.stack(paths, 1).cpu()}

    def adaptation_returns(self, tasks: list[Task], episodes: int) -> torch.Tensor:
        """The common protocol (metarl.protocol): PEARL's own online adaptation with ``episodes``
        trajectories, each an episode: z from the prior for the first ``eval_prior_trajectories``,
        then from the posterior over every transition of the task so far."""
        return self.adapt(tasks, trajectories=episodes)["returns"]

    def evaluate(self, tasks: list[Task]) -> pd.DataFrame:
        """Every task adapted ``eval_runs`` times, each run from scratch (oyster's ``_do_eval``,
        rlkit/core/rl_algorithm.py, averages ``num_evals`` = 2 such runs per task), all runs stepped
        together. One row per task, run and stage (``task`` repeats once per run), so a task's mean
        is oyster's average and ``goal_reached`` counts the runs that reached the goal."""
        runs, count = self.hp.eval_runs, len(tasks)
        returns = self.adapt(list(tasks) * runs)["returns"]                # (runs * tasks, T), run-major
        rows = [{"task": i % count, "stage": f"traj_{k + 1}", "return": float(returns[i, k])}
                for i in range(len(returns)) for k in range(returns.shape[1])]
        rows += [{"task": i % count, "stage": FINAL_STAGE, "return": float(returns[i, -1])} for i in range(len(returns))]
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict(),
                "buffer": self.buffer.state_dict(), "initialised": self.initialised}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.buffer.load_state_dict(state["buffer"])
        self.initialised = state["initialised"]
