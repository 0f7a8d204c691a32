"""TESP: meta-RL with Task Embedding and Shared Policy (Lan et al., IJCAI 2019), and the
gradient-based baselines and ablations of its paper, as one algorithm switched by hyper-parameters:

    method     embedding    adapt_context  adapt_policy  learn_alpha  other
    TESP       encoder      yes            no            yes
    MAML       none         -              yes           no           alpha_init = the fixed fast lr
    Meta-SGD   none         -              yes           yes
    AdaptSV    task_vector  yes            no            yes
    V1..V5     TESP with: V1 keep_best=False, V2 adapt_policy=True, V3 eta=0,
               V4 adapt_context=False (alpha = 0: one shared encoder), V5 learn_alpha=False

Adaptation to a task (all tasks of a batch run together: per-task parameters are stacked along a
leading task dimension and every network is evaluated with batched matmuls):
  0. encoder only: warm-up episodes sampled with h = 0 fill the episode buffer;
  1. for k = 0..K: h_k = mean over the buffered episodes of Enc_{theta_k}(episode) (GRU over
     (s, pi's distribution parameters, r) + linear layer), or the task vector v_k; sample
     episodes D_k from pi(a | s, h_k);
     if k < K: theta_{k+1} = theta_k - alpha * clip(grad L_PG(D_k)) (vanilla policy gradient,
     linear feature baseline, GAE; global-norm clip per task) and the buffer keeps the best M
     episodes of itself and D_k.
Meta-update: PPO on D_K for the initial fast parameters theta, their learning rates alpha and the
shared policy, plus eta * ||h_K||^2 / d, by the authors' outer loop: full-batch Adam steps, of
whose iterates the one with the lowest PPO loss within a KL bound of the sampling policy is kept
(TESP.meta_update).

Returns: the reward the methods learn from includes the environment's control cost; environments
whose step info carries ``distance_reward`` (the reaching families) also have the distance-only
return recorded per stage, which is the metric the TESP paper reports (the authors' code sums
``info["dist_reward"]`` into the custom metric ``episode_dist_reward``: llan-ml/tesp
tesp/maml/maml.py, on_episode_step; tesp/envs/mujoco/reacher.py).

Every family: discrete ones (the gridworld) get a categorical policy head (TESPModel; ours: the
authors' tasks are all continuous); on families whose env reports ``info["sparse_reward"]``
(sparse point robots) everything that adapts to a task (encoder input, episode buffer, fast-update
gradient, at train and test time) and the recorded returns use that evaluation reward, while the
outer PPO objective learns from the env's dense reward (E5's reward rule, as oyster's PEARL: dense
reward for its critic, sparse for its context).

The meta-gradient is FIRST ORDER: the fast-update gradients g_k are treated as constants, so
theta_K = theta - alpha * sum_k g_k, which passes the PPO gradient to theta unchanged and to alpha
as -sum_k g_k times it, without second derivatives through the g_k.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from metarl import compiling
from metarl.envs.base import BatchedEnv, Task, TaskFamily
from metarl.latents import gaussian_kl
from metarl.methods.base import FINAL_STAGE, Method
from metarl.nets import mlp, normc
from metarl.optim import Adam

EMBEDDINGS = ("encoder", "task_vector", "none")


@dataclass
class Hyperparams:
    embedding: str = "encoder"    # encoder (TESP) | task_vector (AdaptSV) | none (MAML, Meta-SGD)
    adapt_context: bool = True    # fast-update the encoder / task vector; False is V4 (alpha = 0)
    adapt_policy: bool = False    # fast-update the policy too (MAML, Meta-SGD, V2)
    learn_alpha: bool = True      # per-parameter learned fast learning rates (False: MAML, V5)
    alpha_init: float = 1e-3
    alpha_clip: float = 0.1       # learned rates are clipped to [-alpha_clip, alpha_clip] where used
    # each task's fast-update gradient is clipped to this global norm (llan-ml/tesp: inner_grad_clip
    # 60 in tesp/main_train.py, tf.clip_by_global_norm in tesp/maml/maml_policy_graph.py)
    inner_grad_clip: float = 60.0
    fast_updates: int = 3         # K
    buffer_size: int = 16         # M
    keep_best: bool = True        # False: the buffer holds all episodes (V1)
    eta: float = 0.005            # weight of ||h||^2 in the meta-objective
    policy_hidden: list[int] = field(default_factory=lambda: [256, 256])
    gru_size: int = 256
    embedding_dim: int = 8
    init_log_std: float = 0.0     # continuous actions: initial bias of the policy's log-std outputs
    meta_batch: int = 20          # tasks per meta-update
    episodes_per_task: int = 25   # per sampling round
    eval_episodes: int = 25       # per sampling round in evaluate()
    eval_batch: int = 100         # tasks adapted together in evaluate()
    gamma: float = 0.99
    gae_lambda: float = 0.97
    # the authors' rllib code feeds both losses raw GAE advantages (llan-ml/tesp tesp/utils.py,
    # rllib's compute_advantages); MAML's own code centres and scales them (rllab center_adv)
    normalize_advantages: bool = False
    ppo_clip: float = 0.15
    ppo_epochs: int = 20          # outer-loop iterates, n - 1 Adam steps (the authors' num_sgd_iter)
    # the outer loop keeps the iterate with the lowest PPO loss among those whose mean KL from the
    # sampling policy is below this (llan-ml/tesp tesp/maml/maml_optimizer.py; 0.01: tesp/maml/maml.py)
    kl_target: float = 0.01
    lr: float = 3e-4

    def __post_init__(self):
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {self.embedding!r}")
        if self.inner_grad_clip <= 0:
            raise ValueError(f"inner_grad_clip must be positive, got {self.inner_grad_clip}")
        if self.kl_target <= 0:
            raise ValueError(f"kl_target must be positive (the sampling parameters, KL 0, must qualify), "
                             f"got {self.kl_target}")
        if self.ppo_epochs < 2:  # n iterates are n - 1 Adam steps
            raise ValueError(f"ppo_epochs must be >= 2 (the outer loop steps after every iterate but the last), "
                             f"got {self.ppo_epochs}")


# ---------------------------------------------------------------------------------------------
# Episodes: (tasks T, episodes E, steps L, ...) tensors; steps after an episode ended are invalid.
# ---------------------------------------------------------------------------------------------
@dataclass
class Episodes:
    obs: Tensor      # (T, E, L, obs_dim)
    actions: Tensor  # (T, E, L, act_dim)
    dist: Tensor     # (T, E, L, dist_dim) the sampling policy's distribution parameters (TESPModel.sample)
    rewards: Tensor  # (T, E, L), 0 on invalid steps
    logp: Tensor     # (T, E, L) log-probability under the sampling policy
    valid: Tensor    # (T, E, L) bool
    distance_rewards: Tensor | None = None  # (T, E, L) the env's info["distance_reward"], if it has one
    sparse_rewards: Tensor | None = None    # (T, E, L) the env's info["sparse_reward"], if it has one

    @property
    def returns(self) -> Tensor:
        return self.rewards.sum(-1)

    def for_adaptation(self) -> Episodes:
        """The episodes as adaptation may see them (encoder input, episode buffer, fast-update
        gradient, recorded returns): the evaluation reward ``info["sparse_reward"]`` in place of
        the env reward where the env reports one, since the dense reward would leak the goal (E5's
        reward rule, as oyster's PEARL feeds its context the sparse reward)."""
        return self if self.sparse_rewards is None else dataclasses.replace(self, rewards=self.sparse_rewards)

    def _fields(self) -> list[Tensor | None]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    def index(self, tasks, episodes=slice(None)) -> Episodes:
        return Episodes(*(None if v is None else v[tasks, episodes] for v in self._fields()))

    def cat(self, other: Episodes) -> Episodes:
        return Episodes(*(None if a is None else torch.cat([a, b], dim=1)
                          for a, b in zip(self._fields(), other._fields())))


def update_buffer(buffer: Episodes | None, new: Episodes, size: int, keep_best: bool) -> Episodes:
    """The episode buffer: the best ``size`` episodes by return of the old buffer and the new ones
    (all of them when not ``keep_best``)."""
    merged = new if buffer is None else buffer.cat(new)
    if not keep_best or merged.returns.shape[1] <= size:
        return merged
    best = merged.returns.topk(size, dim=1).indices
    return merged.index(torch.arange(best.shape[0], device=best.device)[:, None], best)


def advantages(ep: Episodes, gamma: float, lam: float, normalize: bool = False) -> Tensor:
    """GAE over a linear-feature baseline fitted per task on the same episodes; ``normalize``:
    then centred and scaled per task.

    As the authors' code (llan-ml/tesp tesp/baselines/linear_feature_baseline.py, rllab's
    LinearFeatureBaseline): features (clip(obs, ±10), its square, t/100, (t/100)^2, (t/100)^3, 1),
    ridge 1e-5, fitted to the discounted returns of all the task's episodes of the round
    (tesp/utils.py postprocess_trajectory); GAE with value 0 after an episode's last step
    (termination or horizon). The authors then use them raw (rllib's compute_advantages);
    rllab's MAML normalises them (center_adv), which ``normalize`` does per task."""
    T, E, L = ep.rewards.shape
    mask = ep.valid.to(ep.rewards.dtype)
    returns = torch.zeros_like(ep.rewards)
    running = ep.rewards.new_zeros(T, E)
    for t in reversed(range(L)):
        running = ep.rewards[:, :, t] + gamma * running  # rewards are 0 after an episode ends
        returns[:, :, t] = running
    obs = ep.obs.clamp(-10, 10)
    time = (torch.arange(L, device=mask.device, dtype=obs.dtype) / 100).expand(T, E, L).unsqueeze(-1)
    feats = torch.cat([obs, obs ** 2, time, time ** 2, time ** 3, torch.ones_like(time)], -1)
    x = (feats * mask.unsqueeze(-1)).reshape(T, E * L, -1).double()
    y = (returns * mask).reshape(T, E * L, 1).double()
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    weights = torch.linalg.solve(x.mT @ x + 1e-5 * eye, x.mT @ y)
    values = ((x @ weights).reshape(T, E, L) * mask).to(ep.rewards.dtype)

    adv = torch.zeros_like(ep.rewards)
    running = ep.rewards.new_zeros(T, E)
    for t in reversed(range(L)):
        next_value = values[:, :, t + 1] if t + 1 < L else torch.zeros_like(running)
        delta = ep.rewards[:, :, t] + gamma * next_value - values[:, :, t]
        running = (delta + gamma * lam * running) * mask[:, :, t]
        adv[:, :, t] = running
    if not normalize:
        return adv
    count = mask.sum((1, 2), keepdim=True)
    mean = adv.sum((1, 2), keepdim=True) / count
    std = (((adv - mean) * mask) ** 2).sum((1, 2), keepdim=True).div(count).sqrt()
    return (adv - mean) / (std + 1e-8) * mask


# ---------------------------------------------------------------------------------------------
# Networks, evaluated functionally so that any parameter can carry a leading task dimension.
# ---------------------------------------------------------------------------------------------
def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x (T, N, in)`` through a weight shared by all tasks ``(out, in)`` or per task ``(T, out, in)``."""
    return x @ weight.mT + bias.unsqueeze(-2)


def gaussian_log_prob(action: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    z = (action - mean) * torch.exp(-log_std)
    return (-0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class KerasGRU(torch.autograd.Function):
    """Keras's (TF 1.x) GRU cell run over whole sequences, with a hand-written backward pass.

    Per step: gates z, r = hard_sigmoid(x_zr + h W_zr^T), Keras's clip(0.2 x + 0.5, 0, 1) (its
    default gate activation); candidate c = tanh(x_h + (r * h) W_h^T), the reset gate applied to
    the state before its matmul (reset_after=False); h' = z h + (1 - z) c; h is carried unchanged
    past an episode's last valid step. ``apply(gates_x, valid, recurrent)``: ``gates_x (T, E, S,
    3H)`` the input's share of the gates (kernel and bias applied), ``valid (T, E, S)`` bool,
    ``recurrent (3H, H)`` or per task ``(T, 3H, H)``. Returns the last state ``(T, E, H)``.

    Why by hand: the states are small (a few tasks x episodes x 64-256 units) and the sequences
    long (200 steps), so autograd's per-op bookkeeping over some 30 ops a step dominates the
    encoder's cost; this backward runs the recurrence alone step by step and the weight gradient
    as one matmul over all steps (benchmarks/tesp.md, "A hand-written GRU backward")."""

    @staticmethod
    def forward(ctx, gates_x: Tensor, valid: Tensor, recurrent: Tensor) -> Tensor:
        T, E, S, _ = gates_x.shape
        units = recurrent.shape[-1]
        # contiguous copies made once, or the matmuls would copy them at every step
        w_zr, w_h = recurrent[..., :2 * units, :].mT.contiguous(), recurrent[..., 2 * units:, :].mT.contiguous()
        steps_x = gates_x.permute(2, 0, 1, 3)  # (S, T, E, 3H)
        steps_zr, steps_h = steps_x[..., :2 * units].contiguous(), steps_x[..., 2 * units:].contiguous()
        padded = not bool(valid.all())
        steps_valid = valid.permute(2, 0, 1).unsqueeze(-1)
        saving = any(ctx.needs_input_grad)
        hidden = gates_x.new_zeros(T, E, units)
        states, gates, candidates, inside = [], [], [], []
        for t in range(S):
            x_zr, x_h = steps_zr[t], steps_h[t]
            zr = torch.baddbmm(x_zr, hidden, w_zr) if w_zr.dim() == 3 else torch.addmm(
                x_zr.reshape(T * E, -1), hidden.reshape(T * E, -1), w_zr).reshape(T, E, -1)
            zr = zr.mul_(0.2).add_(0.5)
            if saving:  # clamp's gradient passes where its input lies within the bounds, ends included
                inside.append((zr >= 0) & (zr <= 1))
            zr = zr.clamp_(0.0, 1.0)
            z, r = zr[..., :units], zr[..., units:]
            candidate = torch.tanh(x_h + (r * hidden) @ w_h)
            new = z * hidden + (1 - z) * candidate
            if saving:
                states.append(hidden)
                gates.append(zr)
                candidates.append(candidate)
            hidden = torch.where(steps_valid[t], new, hidden) if padded else new
        if saving:
            ctx.save_for_backward(torch.stack(states), torch.stack(gates), torch.stack(candidates),
                                  torch.stack(inside), steps_valid, recurrent)
            ctx.padded = padded
        return hidden

    @staticmethod
    @once_differentiable  # the meta-gradient is first order
    def backward(ctx, grad_hidden: Tensor):
        states, gates, candidates, inside, steps_valid, recurrent = ctx.saved_tensors
        S, T, E, units = states.shape
        w_zr, w_h = recurrent[..., :2 * units, :], recurrent[..., 2 * units:, :]
        grad_gates = states.new_empty(S, T, E, 3 * units)
        grad_h = grad_hidden
        for t in reversed(range(S)):
            h, z, r, c = states[t], gates[t, ..., :units], gates[t, ..., units:], candidates[t]
            # where(valid, new, h): the gradient reaches the update where valid, else h directly
            grad_new = grad_h * steps_valid[t] if ctx.padded else grad_h
            grad_pre_h = grad_new * (1 - z) * (1 - c * c)  # through (1 - z) c and the tanh
            grad_gates[t, ..., 2 * units:] = grad_pre_h
            grad_rh = grad_pre_h @ w_h
            grad_zr = torch.cat([grad_new * (h - c), grad_rh * h], -1).mul_(0.2).mul_(inside[t])
            grad_gates[t, ..., :2 * units] = grad_zr
            grad_prev = grad_new * z + grad_rh * r + grad_zr @ w_zr
            grad_h = grad_prev + (grad_h - grad_new) if ctx.padded else grad_prev
        # the recurrent kernel's gradient, all steps in one matmul per task: rows (S E) of the gate
        # gradients against the state each multiplied
        flat = lambda x: x.permute(1, 0, 2, 3).reshape(T, S * E, -1)
        grad_recurrent = torch.cat([flat(grad_gates[..., :2 * units]).mT @ flat(states),
                                    flat(grad_gates[..., 2 * units:]).mT @ flat(gates[..., units:] * states)], 1)
        if recurrent.dim() == 2:
            grad_recurrent = grad_recurrent.sum(0)
        return grad_gates.permute(1, 2, 0, 3), None, grad_recurrent


class TESPModel(nn.Module):
    """Task encoder (GRU cell + linear) or task vector, shared tanh-MLP policy on [s, h], and the
    fast learning rates ``alphas`` (one tensor per fast parameter), as the authors' Keras models
    (llan-ml/tesp tesp/keras_models/keras_{tesp,mlp,maesn}.py, tesp/layers/gru_cell.py):

    * policy: rllib's head, the MLP's outputs are the distribution's parameters: mean and log-std
      of a diagonal Gaussian (rllib's DiagGaussian splits 2 * act_dim outputs), so the log-std
      depends on s and h; for ``discrete`` actions (``act_dim`` choices) the logits of a
      categorical distribution, and actions are stored one-hot;
    * encoder input per step: (s, the sampling policy's distribution parameters, r), rllib's
      stored "logits" (tesp/tesp/tesp_policy_graph.py reads obs, logits and rewards), not the
      sampled action;
    * GRU: Keras's (TF 1.x) cell: gates z, r with the hard sigmoid, the reset gate applied to the
      state before its matmul, one bias; glorot-uniform input kernel, orthogonal recurrent
      kernel, zero bias;
    * initialisation: normc (rllib's), hidden layers to norm 1, the policy's output layer, the
      embedding projection and the task vector to norm 0.01; biases 0.
    """

    def __init__(self, obs_dim: int, act_dim: int, hp: Hyperparams, discrete: bool = False):
        super().__init__()
        self.embedding, self.discrete = hp.embedding, discrete
        self.alpha_clip = hp.alpha_clip if hp.learn_alpha else math.inf
        self.dist_dim = act_dim if discrete else 2 * act_dim
        context_dim = 0 if hp.embedding == "none" else hp.embedding_dim
        if hp.embedding == "encoder":
            in_dim, units = obs_dim + self.dist_dim + 1, hp.gru_size
            self.encoder = nn.ParameterDict({
                "kernel": nn.Parameter(nn.init.xavier_uniform_(torch.empty(3 * units, in_dim))),
                # orthonormal columns of (3H, H): Keras's orthonormal rows of its (H, 3H) kernel
                "recurrent_kernel": nn.Parameter(nn.init.orthogonal_(torch.empty(3 * units, units))),
                "bias": nn.Parameter(torch.zeros(3 * units)),
                "projection_weight": nn.Parameter(normc(torch.empty(hp.embedding_dim, units), 0.01)),
                "projection_bias": nn.Parameter(torch.zeros(hp.embedding_dim))})
        elif hp.embedding == "task_vector":
            self.task_vector = nn.Parameter(normc(torch.empty(1, hp.embedding_dim), 0.01)[0])
        self.policy = mlp(obs_dim + context_dim, hp.policy_hidden, self.dist_dim)
        with torch.no_grad():
            linears = [layer for layer in self.policy if isinstance(layer, nn.Linear)]
            for layer in linears:
                normc(layer.weight, 1.0 if layer is not linears[-1] else 0.01)
                layer.bias.zero_()
            if not discrete:
                linears[-1].bias[act_dim:] = hp.init_log_std

        context_names = [n for n, _ in self.named_parameters() if n.startswith(("encoder.", "task_vector"))]
        policy_names = [n for n, _ in self.named_parameters() if n.startswith("policy.")]
        #: parameters fast-updated per task, in the order of ``alphas``
        self.fast_names = context_names * hp.adapt_context + policy_names * hp.adapt_policy
        params = dict(self.named_parameters())
        self.alphas = nn.ParameterList(
            nn.Parameter(torch.full_like(params[n], hp.alpha_init), requires_grad=hp.learn_alpha)
            for n in self.fast_names)

    def params(self) -> dict[str, Tensor]:
        """The network parameters by name (without the learning rates)."""
        return {n: p for n, p in self.named_parameters() if not n.startswith("alphas.")}

    def alpha(self) -> dict[str, Tensor]:
        """The stored fast learning rates by fast parameter."""
        return dict(zip(self.fast_names, self.alphas))

    def rates(self) -> dict[str, Tensor]:
        """The fast learning rates as the fast update uses them: learned rates clipped to
        +-alpha_clip at use, so one stored beyond the bound gets no gradient (llan-ml/tesp
        tesp/maml/maml_policy_graph.py, tf.clip_by_value inside the update; a fixed rate as given)."""
        return {n: a.clamp(-self.alpha_clip, self.alpha_clip) for n, a in self.alpha().items()}

    def context(self, p: dict[str, Tensor], buffer: Episodes | None, num_tasks: int) -> Tensor | None:
        """The task embedding h ``(T, d)``: mean encoding of the buffered episodes (zero while
        the buffer is empty), or the task vector; None without an embedding."""
        if self.embedding == "task_vector":
            return p["task_vector"].expand(num_tasks, -1)
        if self.embedding == "none":
            return None
        if buffer is None:
            bias = p["encoder.projection_bias"]
            return bias.new_zeros(num_tasks, bias.shape[-1])
        return self.encode(p, buffer).mean(1)

    def encode(self, p: dict[str, Tensor], ep: Episodes) -> Tensor:
        """Keras's GRU over each episode's (s, distribution parameters, r); the state at its last
        valid step goes through the projection. Returns ``(T, E, d)``."""
        T, E = ep.rewards.shape[:2]
        steps = int(ep.valid.sum(-1).max())  # no episode is longer; skip the padding
        x = torch.cat([ep.obs, ep.dist, ep.rewards.unsqueeze(-1)], -1)[:, :, :steps]
        gates_x = linear(x.reshape(T, E * steps, -1), p["encoder.kernel"], p["encoder.bias"])
        gates_x = gates_x.reshape(T, E, steps, -1)
        hidden = KerasGRU.apply(gates_x, ep.valid[:, :, :steps], p["encoder.recurrent_kernel"])
        return linear(hidden, p["encoder.projection_weight"], p["encoder.projection_bias"])

    def policy_dist(self, p: dict[str, Tensor], obs: Tensor, h: Tensor | None) -> Tensor:
        """The distribution's parameters ``(T, N, dist_dim)`` for ``obs (T, N, obs_dim)``: mean
        and log-std, or logits if discrete."""
        x = obs if h is None else torch.cat([obs, h.unsqueeze(1).expand(-1, obs.shape[1], -1)], -1)
        for i, layer in enumerate(self.policy):
            x = linear(x, p[f"policy.{i}.weight"], p[f"policy.{i}.bias"]) if isinstance(layer, nn.Linear) else layer(x)
        return x

    def log_prob_of(self, dist: Tensor, actions: Tensor) -> Tensor:
        """log pi(a) under the distribution parameters ``dist`` (one-hot ``actions`` if discrete)."""
        if self.discrete:
            return (actions * torch.log_softmax(dist, -1)).sum(-1)
        mean, log_std = dist.chunk(2, -1)
        return gaussian_log_prob(actions, mean, log_std)

    def log_prob(self, p: dict[str, Tensor], obs: Tensor, h: Tensor | None, actions: Tensor) -> Tensor:
        """log pi(a | s, h) ``(T, N)`` of ``actions (T, N, act_dim)`` (one-hot if discrete)."""
        return self.log_prob_of(self.policy_dist(p, obs, h), actions)

    def kl(self, old: Tensor, new: Tensor) -> Tensor:
        """KL(old || new) per sample between distribution parameters (rllib's ``kl``)."""
        if self.discrete:
            log_old = torch.log_softmax(old, -1)
            return (log_old.exp() * (log_old - torch.log_softmax(new, -1))).sum(-1)
        (mean_old, log_std_old), (mean_new, log_std_new) = old.chunk(2, -1), new.chunk(2, -1)
        return gaussian_kl(mean_old, 2 * log_std_old, mean_new, 2 * log_std_new)

    def sample(self, p: dict[str, Tensor], obs: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """An action per observation, drawn from torch's global generator, as stored (one-hot
        if discrete) ``(T, N, act_dim)``, its log-probability ``(T, N)`` and the distribution's
        parameters ``(T, N, dist_dim)``."""
        dist = self.policy_dist(p, obs, h)
        if self.discrete:
            probs = torch.softmax(dist, -1)
            choice = torch.multinomial(probs.reshape(-1, dist.shape[-1]), 1).reshape(dist.shape[:-1])
            action = nn.functional.one_hot(choice, dist.shape[-1]).to(dist.dtype)
        else:
            mean, log_std = dist.chunk(2, -1)
            action = mean + log_std.exp() * torch.randn_like(mean)
        return action, self.log_prob_of(dist, action), dist


@dataclass
class Adaptation:
    """What the meta-update needs from the adaptation of a batch of tasks."""
    fast: dict[str, Tensor]      # the adapted fast parameters theta_K, (T, ...)
    grad_sum: dict[str, Tensor]  # sum of the K fast-update gradients per fast parameter, (T, ...)
    buffer: Episodes | None      # the buffer h_K was computed from
    episodes: Episodes           # D_K, sampled after K fast updates
    #: mean return per task by stage: warmup (h = 0, encoder only), update_k after k fast updates
    returns: dict[str, Tensor]
    distance_returns: dict[str, Tensor]  # the same for info["distance_reward"]; empty without it
    env_steps: int               # steps sampled, warm-up included


class TESP(Method):
    Hyperparams = Hyperparams

    def __init__(self, family: TaskFamily, tasks: dict[str, list[Task]], hparams: Hyperparams,
                 train_split: str, device: torch.device):
        super().__init__(family, tasks, hparams, train_split, device)
        if hparams.meta_batch > len(tasks[train_split]):
            raise ValueError(f"meta_batch {hparams.meta_batch} exceeds the {len(tasks[train_split])} training tasks")
        self.model = TESPModel(family.obs_dim, family.act_dim, hparams, family.discrete).to(device)
        self.optimizer = Adam([p for p in self.model.parameters() if p.requires_grad], lr=hparams.lr)
        self._envs: dict[int, BatchedEnv] = {}
        self._sample, self._pg_loss, self._surrogate = self.model.sample, self.pg_loss, self.surrogate

    def use_compile(self, mode: str) -> None:
        """config.yaml's ``compile`` switch (metarl.compiling): compiles the policy's part of every
        hot path: the per-step forward of collection, the fast updates' policy-gradient loss and the
        PPO objective of the meta-update (their backward through AOT autograd). The encoder stays
        eager: its per-step GRU loop, unrolled, took minutes to compile per batch shape on CPU
        (benchmarks/compile.md)."""
        super().use_compile(mode)
        if self.compiled:
            self._sample = compiling.compiled(self.model.sample, self.device)
            self._pg_loss = compiling.compiled(self.pg_loss, self.device)
            self._surrogate = compiling.compiled(self.surrogate, self.device)

    # -- sampling -------------------------------------------------------------------------------
    def _env(self, tasks: list[Task], episodes_per_task: int) -> BatchedEnv:
        num_envs = len(tasks) * episodes_per_task
        if num_envs not in self._envs:
            self._envs[num_envs] = self.family.make_batched(num_envs, self.device)
        env = self._envs[num_envs]
        env.set_tasks([task for task in tasks for _ in range(episodes_per_task)])  # task-major
        return env

    def rollout(self, env: BatchedEnv, p: dict[str, Tensor], h: Tensor | None, num_tasks: int) -> Episodes:
        """One episode in each of the env's T * E environments, all stepped together."""
        E, L = env.num_envs // num_tasks, env.horizon
        # initial states seeded from torch's generator, which checkpoints save: resume == uninterrupted
        obs = env.reset(seed=int(torch.randint(2**31 - 1, ())))
        ep = Episodes(obs=obs.new_zeros(num_tasks, E, L, obs.shape[-1]),
                      actions=obs.new_zeros(num_tasks, E, L, env.act_dim),
                      dist=obs.new_zeros(num_tasks, E, L, self.model.dist_dim),
                      rewards=obs.new_zeros(num_tasks, E, L), logp=obs.new_zeros(num_tasks, E, L),
                      valid=torch.zeros(num_tasks, E, L, dtype=torch.bool, device=obs.device))
        alive = torch.ones(num_tasks, E, dtype=torch.bool, device=obs.device)
        for t in range(L):
            obs = obs.reshape(num_tasks, E, -1)
            action, ep.logp[:, :, t], ep.dist[:, :, t] = self._sample(p, obs, h)
            env_action = action.argmax(-1).reshape(-1) if env.discrete else action.reshape(env.num_envs, -1)
            next_obs, reward, terminated, truncated, info = env.step(env_action)
            ep.obs[:, :, t], ep.actions[:, :, t], ep.valid[:, :, t] = obs, action, alive
            ep.rewards[:, :, t] = reward.reshape(num_tasks, E) * alive
            for key, name in (("distance_reward", "distance_rewards"), ("sparse_reward", "sparse_rewards")):
                if key in info:  # the env's extra rewards, recorded like the reward
                    if getattr(ep, name) is None:
                        setattr(ep, name, torch.zeros_like(ep.rewards))
                    getattr(ep, name)[:, :, t] = info[key].reshape(num_tasks, E) * alive
            alive = alive & ~(terminated | truncated).reshape(num_tasks, E)
            obs = next_obs
            if not alive.any():
                break
        return ep

    # -- adaptation (inner loop) ----------------------------------------------------------------
    def pg_loss(self, p: dict[str, Tensor], h: Tensor | None, ep: Episodes, adv: Tensor) -> Tensor:
        """Vanilla policy-gradient loss per task ``(T,)`` (compiled when enabled)."""
        T, E, L = ep.rewards.shape
        logp = self.model.log_prob(p, ep.obs.reshape(T, E * L, -1), h, ep.actions.reshape(T, E * L, -1))
        return -(logp.reshape(T, E, L) * adv).sum((1, 2)) / ep.valid.sum((1, 2))

    def fast_step(self, shared: dict[str, Tensor], fast: dict[str, Tensor], buffer: Episodes | None,
                  ep: Episodes) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One fast update of every task at once: theta - alpha * g, g = grad L_PG(ep) clipped to
        the global norm ``inner_grad_clip`` per task; the tasks' losses are summed so one backward
        pass yields each task's own gradient. Returns the updated fast parameters and the g."""
        p = {**shared, **{n: v.detach().requires_grad_() for n, v in fast.items()}}
        with torch.enable_grad():
            h = self.model.context(p, buffer, ep.rewards.shape[0])
            adv = advantages(ep, self.hp.gamma, self.hp.gae_lambda, self.hp.normalize_advantages)
            loss = self._pg_loss(p, h, ep, adv).sum()
            grads = dict(zip(fast, torch.autograd.grad(loss, [p[n] for n in fast])))
        norm = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads.values()]).sum(0).sqrt()  # (T,)
        scale = (self.hp.inner_grad_clip / norm).clamp(max=1.0)  # tf.clip_by_global_norm
        grads = {n: g * scale.reshape(-1, *[1] * (g.dim() - 1)) for n, g in grads.items()}
        rates = self.model.rates()
        return {n: fast[n] - rates[n].detach() * grads[n] for n in fast}, grads

    @torch.no_grad()
    def adapt(self, tasks: list[Task], episodes_per_task: int, fast_updates: int | None = None) -> Adaptation:
        """Warm-up, then K fast updates for every task at once (see the module docstring); K is
        ``fast_updates`` if given (-1 with an encoder: the warm-up only), else hp.fast_updates.
        Adaptation sees the evaluation reward (Episodes.for_adaptation); the returned D_K keeps
        the env reward, which the meta-update (outer PPO objective) learns from."""
        hp, model, T = self.hp, self.model, len(tasks)
        K = hp.fast_updates if fast_updates is None else fast_updates
        least = -1 if hp.embedding == "encoder" else 0
        if K < least:
            raise ValueError(f"fast_updates must be >= {least} with embedding {hp.embedding!r}, got {K}")
        env = self._env(tasks, episodes_per_task)
        shared = {n: p.detach() for n, p in model.params().items()}
        fast = {n: shared[n].expand(T, *shared[n].shape).clone() for n in model.fast_names}
        grad_sum = {n: torch.zeros_like(v) for n, v in fast.items()}
        buffer, returns, distance_returns, steps = None, {}, {}, 0

        def record(stage: str, ep: Episodes) -> None:
            returns[stage] = ep.for_adaptation().returns.mean(1)
            if ep.distance_rewards is not None:
                distance_returns[stage] = ep.distance_rewards.sum(-1).mean(1)

        if hp.embedding == "encoder":
            ep = self.rollout(env, {**shared, **fast}, model.context(shared, None, T), T)  # warm-up
            buffer, steps = update_buffer(None, ep.for_adaptation(), hp.buffer_size, hp.keep_best), int(ep.valid.sum())
            record("warmup", ep)
        for k in range(K + 1):
            p = {**shared, **fast}
            ep = self.rollout(env, p, model.context(p, buffer, T), T)
            steps += int(ep.valid.sum())
            record(f"update_{k}", ep)
            if k == K:
                break
            seen = ep.for_adaptation()
            if fast:
                fast, grads = self.fast_step(shared, fast, buffer, seen)
                grad_sum = {n: grad_sum[n] + grads[n] for n in fast}
            if buffer is not None:
                buffer = update_buffer(buffer, seen, hp.buffer_size, hp.keep_best)
        return Adaptation(fast=fast, grad_sum=grad_sum, buffer=buffer, episodes=ep, returns=returns,
                          distance_returns=distance_returns, env_steps=steps)

    # -- meta-update (outer loop) ---------------------------------------------------------------
    def meta_loss(self, ad: Adaptation, adv: Tensor, idx: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """PPO-clip surrogate on D_K of tasks ``idx`` + eta * ||h_K||^2 / d, as a function of the
        initial parameters, the learning rates and the shared policy (first order); with the PPO
        loss alone, the h term and the mean KL from the sampling policy."""
        p, rates = self.model.params(), self.model.rates()
        for n in self.model.fast_names:
            p[n] = p[n].unsqueeze(0) - rates[n].unsqueeze(0) * ad.grad_sum[n][idx]
        ep = ad.episodes.index(idx)
        h = self.model.context(p, None if ad.buffer is None else ad.buffer.index(idx), len(idx))
        loss, policy_loss, h_norm, kl = self._surrogate(p, h, ep, adv[idx])
        return loss, {"policy_loss": policy_loss, "h_norm": h_norm, "kl": kl}

    def surrogate(self, p: dict[str, Tensor], h: Tensor | None, ep: Episodes,
                  adv: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``meta_loss`` given the embeddings ``h`` (compiled when enabled): the objective, the
        PPO loss, the h term and the KL, each a mean over every task's valid steps, then over tasks."""
        T, E, L = ep.rewards.shape
        dist = self.model.policy_dist(p, ep.obs.reshape(T, E * L, -1), h)
        logp = self.model.log_prob_of(dist, ep.actions.reshape(T, E * L, -1)).reshape(T, E, L)
        ratio = torch.exp(logp - ep.logp)
        surrogate = torch.min(ratio * adv, ratio.clamp(1 - self.hp.ppo_clip, 1 + self.hp.ppo_clip) * adv)
        steps = ep.valid.sum((1, 2))
        policy_loss = -((surrogate * ep.valid).sum((1, 2)) / steps).mean()
        kl = self.model.kl(ep.dist.reshape(T, E * L, -1), dist).reshape(T, E, L)
        kl = ((kl * ep.valid).sum((1, 2)) / steps).mean()
        # the mean square entry of h, not its squared norm: the authors' regulariser, for which the
        # paper's eta values were set (llan-ml/tesp tesp/rllib_models/rllib_tesp.py, loss())
        h_norm = policy_loss.new_zeros(()) if h is None else h.pow(2).mean()
        return policy_loss + self.hp.eta * h_norm, policy_loss, h_norm, kl

    def meta_update(self, ad: Adaptation) -> dict[str, float]:
        """The authors' outer loop (llan-ml/tesp tesp/maml/maml_optimizer.py, MAMLOptimizer.step):
        ``ppo_epochs`` full-batch evaluations of the meta-objective at the iterates theta_0 (the
        sampling parameters) .. theta_{n-1}, an Adam step after each but the last. The parameters
        end at the evaluated iterate with the lowest PPO loss among those whose mean KL from the
        sampling policy is below ``kl_target`` (theta_0's is 0). Only the parameters go back:
        Adam's moments keep every step, as the authors' set_weights restores the model's
        variables alone (tesp/maml/base_maml_policy_graph.py). Returns the kept iterate's
        statistics."""
        hp = self.hp
        adv = advantages(ad.episodes, hp.gamma, hp.gae_lambda, hp.normalize_advantages)
        tasks = torch.arange(adv.shape[0], device=self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        best = None
        for iterate in range(hp.ppo_epochs):
            loss, stats = self.meta_loss(ad, adv, tasks)
            stats = {name: value.item() for name, value in stats.items()}
            within = stats["kl"] < hp.kl_target
            if iterate == 0 and not within:  # theta_0 is the sampling policy: its KL is 0 unless not finite
                raise RuntimeError(f"the sampling parameters' KL from their own policy is {stats['kl']}, not below "
                                   f"kl_target {hp.kl_target}: the meta-objective is not finite")
            if within and (best is None or stats["policy_loss"] < best["policy_loss"]):
                best = {**stats, "iterate": iterate, "weights": [p.detach().clone() for p in params]}
            if iterate < hp.ppo_epochs - 1:
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
        with torch.no_grad():
            for p, kept in zip(params, best.pop("weights")):
                p.copy_(kept)
        return best

    def train_iteration(self) -> dict[str, float]:
        hp, train = self.hp, self.tasks[self.train_split]
        batch = [train[i] for i in torch.randperm(len(train))[:hp.meta_batch].tolist()]
        ad = self.adapt(batch, hp.episodes_per_task)
        self.env_steps += ad.env_steps
        kept = self.meta_update(ad)
        final = f"update_{hp.fast_updates}"
        metrics = {f"return_{stage}": r.mean().item() for stage, r in ad.returns.items()}
        metrics["return"] = ad.returns[final].mean().item()
        if ad.distance_returns:
            metrics["distance_return"] = ad.distance_returns[final].mean().item()
        metrics.update({"meta_loss": kept["policy_loss"], "h_norm": kept["h_norm"], "meta_kl": kept["kl"],
                        "meta_iterate": kept["iterate"]})
        if self.model.fast_names:
            metrics["alpha_abs_mean"] = torch.cat([a.abs().flatten() for a in self.model.rates().values()]).mean().item()
        return metrics

    def evaluate(self, tasks: list[Task]) -> pd.DataFrame:
        """Per task: stages ``warmup`` (encoder only: h = 0, before any adaptation), ``update_k``
        (mean return after k fast updates) and ``final`` (after K); column ``return``, and
        ``distance_return`` (the paper's metric) where the environment reports it."""
        rows = []
        for start in range(0, len(tasks), self.hp.eval_batch):
            ad = self.adapt(tasks[start:start + self.hp.eval_batch], self.hp.eval_episodes)
            stages = [(stage, stage) for stage in ad.returns] + [(FINAL_STAGE, f"update_{self.hp.fast_updates}")]
            for stage, source in stages:
                for i, value in enumerate(ad.returns[source].tolist()):
                    row = {"task": start + i, "stage": stage, "return": value}
                    if ad.distance_returns:
                        row["distance_return"] = ad.distance_returns[source][i].item()
                    rows.append(row)
        return pd.DataFrame(rows)

    def adaptation_returns(self, tasks: list[Task], episodes: int) -> Tensor:
        """E5's protocol (Method.adaptation_returns), all tasks at once, one episode per task and
        round, actions sampled as in evaluate(): with an encoder, column 0 is the warm-up episode
        (h = 0), column 1 the episode with h from the buffer {warm-up}, and a fast update follows
        each later episode; without one, column 0 is the unadapted policy's episode and a fast
        update follows each episode. Returns are the evaluation reward's (sparse where reported)."""
        fast_updates = episodes - 1 - (self.hp.embedding == "encoder")
        ad = self.adapt(tasks, episodes_per_task=1, fast_updates=fast_updates)
        return torch.stack(list(ad.returns.values()), 1)  # stages in the order they were played

    def state_dict(self):
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
