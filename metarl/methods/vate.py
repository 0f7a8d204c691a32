"""VATE (Zintgraf et al. 2019, later variBAD) and RL² as one on-policy recurrent method.

A meta-episode is ``episodes`` consecutive episodes on one task; a GRU encoder reads every
transition (s', a, r) and its hidden state carries across the episode boundaries.

* VATE (``variational: true``): the encoder outputs a Gaussian posterior q(m | τ:t) after every
  transition (t = 0 is the prior, from the zero hidden state). A decoder reconstructs the rewards
  from a latent sample. The policy acts on (state, posterior mean, posterior log-variance).
  Loss = PPO loss + λ · mean_t ELBO_t, where ELBO_t decodes the rewards of the *whole*
  meta-episode (past and future) from a sample of q_t, minus KL(q_t ‖ N(0, I)).
* RL² (``variational: false``): the same encoder gives a deterministic embedding of size
  ``latent_dim``; no decoder, no KL; PPO loss only.
* ablations: ``decode_future: false`` decodes only the past τ:t; ``detach_encoder: true`` stops
  the RL gradient at the policy's latent input (the encoder learns from the ELBO only). As in
  varibad's detached default, PPO then acts on the beliefs stored at rollout time and the encoder
  and decoder have their own Adam, not annealed (lmzintgraf/varibad algorithms/ppo.py, vae.py).
* ``kl_weight`` / ``kl_to_prior: false``: varibad's KL weight and its KL to the previous
  posterior (config/gridworld/args_grid_varibad.py); off by default (slower at quick scale).
* ``vae_buffer_size > 0`` (detached only): varibad's VAE training regime. Every meta-episode goes
  into a first-in-first-out buffer of the last ``vae_buffer_size`` ones; after the PPO update the
  encoder and decoder take ``vae_updates`` ELBO steps, each on ``vae_batch`` distinct meta-episodes
  drawn from it (varibad ``size_vae_buffer``, ``num_vae_updates``, ``vae_batch_num_trajs``;
  metalearner.py, vae.py, utils/storage_vae.py). varibad's ``vae_buffer_add_thresh`` (1 on the
  gridworld: keep every meta-episode) is not reproduced; its ELBO subsampling (off on the
  gridworld) is, on continuous families (``elbo_samples``, below).

Task families:
* the gridworld (discrete actions, one-hot in the encoder): the decoder gives, per grid cell, the
  log-odds that the cell is the goal (varibad's multi-head Bernoulli reward decoder there);
* every continuous family: a Gaussian policy with a learned state-independent log-std (varibad
  models/policy.py DiagGaussian); it acts in [-1, 1]^d, and the env gets the action clipped to
  that box and scaled linearly to its action space (varibad's point robot clips to [-1, 1] and
  scales by 0.1 in environments/navigation/point_robot.py; on MuJoCo, whose boxes are [-1, 1],
  this is MuJoCo's own ctrlrange clamp). The encoder reads the raw (unclipped) action, as
  varibad's does. The observation gets varibad's "done" flag (environments/wrappers.py
  add_done_info): 1 from the step that ends an episode until the next reset. The decoder is
  varibad's deterministic reward decoder p(r | m, s' [, s, a]) trained by squared error
  (vae.py compute_rew_reconstruction_loss; the inputs s and a as its MuJoCo configs have them,
  config/mujoco/args_cheetah_vel_varibad.py, off as in config/pointrobot/), optionally with a
  state decoder p(s' | m, s, a), also by squared error (``decode_state``). Transitions taken
  after an episode terminated early (the env is frozen, reward 0, until the next reset) are
  read by the encoder but not decoded. For long meta-episodes, ``elbo_samples`` /
  ``decode_samples`` draw that many ELBO terms and decoded transitions per meta-episode
  (varibad ``vae_subsample_elbos`` / ``vae_subsample_decodes``, summed as there, 50 on MuJoCo).

The encoder and the decoder see the family's evaluation reward (``info["sparse_reward"]`` where
the env reports one, else the env reward): on the sparse point robot the dense reward would give
the goal away. PPO maximises the env reward (times ``reward_scale``): it is used only to
meta-train.

The rollout steps all ``num_envs`` meta-episodes together as tensors; the update re-encodes the
whole meta-episodes with one fused GRU call per PPO minibatch (minibatches split by env, so each
keeps its full history).
"""
from __future__ import annotations

import dataclasses
import math

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from metarl import compiling
from metarl.envs.base import Task, TaskFamily
from metarl.latents import gaussian_kl
from metarl.methods.base import FINAL_STAGE, Method
from metarl.nets import mlp
from metarl.optim import Adam


LOSS_TERMS = ("policy_loss", "value_loss", "entropy", "elbo_loss")
#: the variational auto-encoder: what the ELBO trains (VATEModel attribute names)
VAE_MODULES = ("embed", "gru", "to_belief", "decoder", "state_decoder")
#: episodes per meta-episode on families that do not set their own (the gridworld's is 3):
#: varibad's MuJoCo configs, max_rollouts_per_task = 2 (config/mujoco/args_cheetah_vel_varibad.py)
DEFAULT_EPISODES = 2


@dataclasses.dataclass
class Hyperparams:
    variational: bool = True       # VATE (Gaussian posterior + decoder) vs RL² (deterministic)
    latent_dim: int = 10
    episodes: int | None = None    # episodes per meta-episode; None: the family's own, else DEFAULT_EPISODES
    decode_future: bool = True     # ELBO_t reconstructs the whole meta-episode, else only τ:t
    detach_encoder: bool = False   # RL loss does not reach the encoder
    elbo_coef: float = 1.0         # λ
    kl_weight: float = 1.0         # weight of the KL terms inside the ELBO
    kl_to_prior: bool = True       # KL(q_t ‖ N(0, I)) at every t, else KL(q_t ‖ q_{t-1}) (q_{-1} = N(0, I))
    vae_buffer_size: int = 0       # meta-episodes kept for the ELBO (detached only); 0: ELBO in the PPO minibatches
    vae_updates: int = 3           # ELBO steps per iteration on the buffer (varibad num_vae_updates)
    vae_batch: int = 25            # meta-episodes per ELBO step (varibad vae_batch_num_trajs)
    encoder_hidden: int = 64       # GRU size
    embed_dim: int = 32            # size of the (s', a, r) embedding fed to the GRU
    policy_hidden: int = 32
    decoder_hidden: int = 32
    # continuous families only
    policy_init_std: float = 1.0   # initial std of the Gaussian policy (varibad policy_init_std)
    reward_decoder_state: bool = False   # the reward decoder reads s besides s' (varibad input_prev_state)
    reward_decoder_action: bool = False  # ... and a (varibad input_action)
    decode_state: bool = False     # add a state decoder p(s' | m, s, a) to the ELBO (varibad decode_state)
    elbo_samples: int = 0          # ELBO terms drawn per meta-episode (varibad vae_subsample_elbos); 0: all T+1
    decode_samples: int = 0        # transitions decoded per ELBO term (varibad vae_subsample_decodes); 0: all T
    reward_scale: float = 1.0      # PPO maximises the env reward times this
    num_envs: int = 128            # meta-episodes per update
    lr: float = 3e-3
    anneal_lr: bool = False        # decay lr linearly to 0 over meta-training
    gamma: float = 0.99
    gae_lambda: float = 0.95
    ppo_epochs: int = 4
    minibatches: int = 4
    clip: float = 0.2
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    max_grad_norm: float = 1.0


def gaussian_log_prob(x, mean, log_std):
    """log N(x; mean, diag(exp(log_std)²)), summed over the last dimension."""
    return (-0.5 * ((x - mean) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(log_std):
    """Entropy of N(·, diag(exp(log_std)²)), summed over the last dimension."""
    return (log_std + 0.5 * (1 + math.log(2 * math.pi))).sum(-1)


class VATEModel(nn.Module):
    """Everything needed to act: encoder, policy and value heads, and (VATE) decoders.

    ``discrete``: categorical policy over ``act_dim`` actions and, given ``n_cells``, the gridworld's
    per-cell goal decoder; else a Gaussian policy over ``act_dim`` dimensions and a reward decoder."""

    def __init__(self, obs_dim: int, act_dim: int, discrete: bool, n_cells: int, hp: Hyperparams):
        super().__init__()
        self.hp, self.act_dim, self.discrete = hp, act_dim, discrete
        self.embed = nn.Linear(obs_dim + act_dim + 1, hp.embed_dim)
        self.gru = nn.GRU(hp.embed_dim, hp.encoder_hidden)
        # belief = [mean, log-variance] (VATE) or the embedding (RL²); it is what the policy sees
        self.belief_dim = 2 * hp.latent_dim if hp.variational else hp.latent_dim
        self.to_belief = nn.Linear(hp.encoder_hidden, self.belief_dim)
        # the action logits (discrete) or the Gaussian's mean (continuous)
        self.actor = mlp(obs_dim + self.belief_dim, [hp.policy_hidden] * 2, act_dim)
        self.critic = mlp(obs_dim + self.belief_dim, [hp.policy_hidden] * 2, 1)
        # state-independent, learned (varibad models/policy.py DiagGaussian)
        self.log_std = None if discrete else nn.Parameter(torch.full((act_dim,), math.log(hp.policy_init_std)))
        self.decoder = self.state_decoder = None
        if hp.variational and discrete:
            # one logit per cell: log-odds that the cell is the goal, given a latent sample
            self.decoder = mlp(hp.latent_dim, [hp.decoder_hidden] * 2, n_cells, nn.ReLU)
        elif hp.variational:
            # the reward of a transition from a latent sample, s' and optionally s and a
            inputs = hp.latent_dim + obs_dim * (1 + hp.reward_decoder_state) + act_dim * hp.reward_decoder_action
            self.decoder = mlp(inputs, [hp.decoder_hidden] * 2, 1, nn.ReLU)
            if hp.decode_state:
                self.state_decoder = mlp(hp.latent_dim + obs_dim + act_dim, [hp.decoder_hidden] * 2, obs_dim, nn.ReLU)

    def _embed(self, next_obs, actions, rewards):
        # discrete actions one-hot; continuous ones raw, as varibad's encoder reads them
        actions = F.one_hot(actions, self.act_dim).to(next_obs.dtype) if self.discrete else actions
        x = torch.cat([next_obs, actions, rewards.unsqueeze(-1)], -1)
        return F.relu(self.embed(x))

    def encode(self, next_obs, actions, rewards):
        """Beliefs after each transition of whole ``(T, B, ...)`` sequences (one fused GRU call)."""
        out, _ = self.gru(self._embed(next_obs, actions, rewards))
        return self.to_belief(out)

    def encode_step(self, next_obs, action, reward, hidden):
        """One transition ``(B, ...)`` during a rollout: the same GRU as a cell (far less overhead
        than a length-1 sequence). Returns the belief and the new hidden state."""
        hidden = torch.gru_cell(self._embed(next_obs, action, reward), hidden, *self.gru.all_weights[0])
        return self.to_belief(hidden), hidden

    def prior(self, batch: int, device) -> torch.Tensor:
        """Belief before any transition (t = 0): the head applied to the zero hidden state."""
        return self.to_belief(torch.zeros(batch, self.hp.encoder_hidden, device=device, dtype=self.to_belief.weight.dtype))

    def policy_input(self, obs, belief):
        return torch.cat([obs, belief.detach() if self.hp.detach_encoder else belief], -1)

    def log_policy(self, obs, belief):
        """Log-probabilities of every action (discrete)."""
        return self.actor(self.policy_input(obs, belief)).log_softmax(-1)

    def act(self, obs, belief, greedy: bool = False):
        """An action (greedy: the most likely one, or the Gaussian's mean) and its log-probability."""
        if self.discrete:
            logp = self.log_policy(obs, belief)
            action = logp.argmax(-1) if greedy else torch.multinomial(logp.exp(), 1).squeeze(-1)
            return action, logp.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        mean = self.actor(self.policy_input(obs, belief))
        action = mean if greedy else mean + self.log_std.exp() * torch.randn_like(mean)
        return action, gaussian_log_prob(action, mean, self.log_std)

    def log_prob_and_entropy(self, obs, belief, action):
        """The policy's log-probability of ``action`` and its entropy, per step."""
        if self.discrete:
            logp = self.log_policy(obs, belief)
            return logp.gather(-1, action.unsqueeze(-1)).squeeze(-1), -(logp.exp() * logp).sum(-1)
        mean = self.actor(self.policy_input(obs, belief))
        return gaussian_log_prob(action, mean, self.log_std), gaussian_entropy(self.log_std).expand(mean.shape[:-1])

    def predict_reward(self, latent, next_obs, obs, action):
        """The reward decoder's prediction (continuous families)."""
        inputs = [latent, next_obs, *([obs] if self.hp.reward_decoder_state else []),
                  *([action] if self.hp.reward_decoder_action else [])]
        return self.decoder(torch.cat(inputs, -1)).squeeze(-1)

    def reward_probs(self, belief) -> torch.Tensor:
        """Gridworld decoder's probability of the goal reward per cell under the posterior mean."""
        return torch.sigmoid(self.decoder(belief[..., :self.hp.latent_dim]))


def gaussian_kl_to_standard(mean, logvar):
    """KL(N(mean, exp(logvar)) ‖ N(0, I)), summed over the last dimension."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


class VATE(Method):
    Hyperparams = Hyperparams

    def __init__(self, family: TaskFamily, tasks: dict[str, list[Task]], hparams: Hyperparams,
                 train_split: str, device: torch.device):
        super().__init__(family, tasks, hparams, train_split, device)
        if hparams.vae_buffer_size and not (hparams.detach_encoder and hparams.variational):
            raise ValueError("vae_buffer_size > 0 needs detach_encoder: true and variational: true "
                             f"(got detach_encoder={hparams.detach_encoder}, variational={hparams.variational})")
        if hparams.vae_buffer_size and not 0 < hparams.vae_batch <= hparams.vae_buffer_size:
            raise ValueError(f"vae_batch must be in 1..vae_buffer_size={hparams.vae_buffer_size}, got {hparams.vae_batch}")
        if hparams.episodes is not None and hparams.episodes < 1:
            raise ValueError(f"episodes must be at least 1 (or null: the family's default), got {hparams.episodes}")
        if family.discrete and (hparams.elbo_samples or hparams.decode_samples):
            raise ValueError(f"elbo_samples / decode_samples are for continuous families; {family.name} "
                             f"decodes every transition (got {hparams.elbo_samples} / {hparams.decode_samples})")
        self.discrete = family.discrete
        self.episodes = hparams.episodes or getattr(family, "episodes", DEFAULT_EPISODES)
        self.steps = family.horizon * self.episodes  # meta-episode length
        self.grid_size = family.size if family.discrete else None
        # continuous families: the observation gets the done flag (see the module docstring)
        obs_dim = family.obs_dim + (not family.discrete)
        n_cells = self.grid_size ** 2 if family.discrete else 0
        self.model = VATEModel(obs_dim, family.act_dim, family.discrete, n_cells, hparams).to(device)
        if not family.discrete:
            self.act_low, self.act_high = family.action_bounds(tasks[train_split][0], device)
        if hparams.detach_encoder:
            # two optimisers as in varibad (metalearner.py, vae.py): the encoder and decoder learn from
            # the ELBO alone, at a rate that is not annealed with the policy's (ppo.py anneals the
            # VAE's only when the RL loss goes through the encoder)
            vae = [p for name, p in self.model.named_parameters() if name.split(".")[0] in VAE_MODULES]
            rl = [p for name, p in self.model.named_parameters() if name.split(".")[0] not in VAE_MODULES]
            self.optimizer, self.vae_optimizer = Adam(rl, lr=hparams.lr), Adam(vae, lr=hparams.lr)
        else:
            self.optimizer, self.vae_optimizer = Adam(self.model.parameters(), lr=hparams.lr), None
        self.train_tasks = tasks[train_split]
        self.env = family.make_batched(hparams.num_envs, device)
        # the VAE buffer: the transitions the ELBO needs, (T, N, ...) with N = vae_buffer_size slots
        # filled first-in-first-out; ``vae_buffer_filled`` counts meta-episodes ever added
        self.vae_buffer = {}
        if hparams.vae_buffer_size:
            N, T = hparams.vae_buffer_size, self.steps
            action = (torch.zeros(T, N, dtype=torch.long, device=device) if family.discrete
                      else torch.zeros(T, N, family.act_dim, device=device))
            self.vae_buffer = {"obs": torch.zeros(T, N, obs_dim, device=device),
                               "next_obs": torch.zeros(T, N, obs_dim, device=device),
                               "action": action, "eval_reward": torch.zeros(T, N, device=device)}
            self.vae_buffer_filled = torch.zeros((), dtype=torch.long)
        self._losses, self._vae_loss = self.losses, self.vae_loss
        self._act, self._encode_step = self.model.act, self.model.encode_step

    def use_compile(self, mode: str) -> None:
        """config.yaml's ``compile`` switch (metarl.compiling): compiles the PPO/ELBO loss of a
        minibatch (forward and, through AOT autograd, backward; the fused GRU call stays eager), the
        buffered VAE's ELBO, and the two per-step forwards of a rollout (policy, belief update)."""
        super().use_compile(mode)
        if self.compiled:
            self._losses = compiling.compiled(self.losses, self.device)
            self._vae_loss = compiling.compiled(self.vae_loss, self.device)
            self._act = compiling.compiled(self.model.act, self.device)
            self._encode_step = compiling.compiled(self.model.encode_step, self.device)

    def _cell(self, obs) -> torch.Tensor:
        """Grid cell index x·size + y from the scaled position in the observation."""
        xy = (obs[..., :2] * (self.grid_size - 1)).round().long()
        return xy[..., 0] * self.grid_size + xy[..., 1]

    def _observe(self, obs, done):
        """What the agent observes: the env's observation, plus on continuous families the done flag."""
        return obs if self.discrete else torch.cat([obs, done.to(obs.dtype).unsqueeze(-1)], -1)

    def _env_action(self, action):
        """A continuous action in [-1, 1]^d (clipped there) scaled linearly to the env's action space."""
        return self.act_low + (action.clamp(-1.0, 1.0) + 1.0) * 0.5 * (self.act_high - self.act_low)

    @torch.no_grad()
    def rollout(self, env, greedy: bool = False, episodes: int | None = None) -> dict[str, torch.Tensor]:
        """One meta-episode of ``episodes`` (default: the training meta-episode's) episodes in every env
        of ``env``: ``(T, B, ...)`` tensors; ``reward`` is the env's, ``eval_reward`` the evaluation
        reward the encoder reads; ``beliefs`` has T+1 entries (prior first)."""
        model, B = self.model, env.num_envs
        belief, hidden = model.prior(B, self.device), torch.zeros(B, self.hp.encoder_hidden, device=self.device)
        keys = ("obs", "action", "logp", "reward", "eval_reward", "next_obs", "belief")
        traj = {k: [] for k in keys}
        none_done = torch.zeros(B, dtype=torch.bool, device=self.device)  # the done flag after a reset
        for t in range(self.family.horizon * (episodes or self.episodes)):
            if t % self.family.horizon == 0:
                obs = self._observe(env.reset(), none_done)
            action, logp = self._act(obs, belief, greedy)
            next_obs, reward, terminated, truncated, info = env.step(action if self.discrete else self._env_action(action))
            next_obs = self._observe(next_obs, terminated | truncated)
            eval_reward = info.get("sparse_reward", reward)
            traj["belief"].append(belief)
            belief, hidden = self._encode_step(next_obs, action, eval_reward, hidden)
            for k, v in zip(keys[:-1], (obs, action, logp, reward, eval_reward, next_obs), strict=True):
                traj[k].append(v)
            obs = next_obs
        traj["belief"].append(belief)
        return {k: torch.stack(v) for k, v in traj.items()}

    def _advantages(self, rewards, values):
        """GAE over the meta-episode (episode boundaries are not terminal: the task goes on)."""
        hp, adv, last = self.hp, torch.zeros_like(rewards), torch.zeros_like(rewards[0])
        next_values = torch.cat([values[1:], torch.zeros_like(values[:1])])
        for t in reversed(range(len(rewards))):
            delta = rewards[t] + hp.gamma * next_values[t] - values[t]
            last = adv[t] = delta + hp.gamma * hp.gae_lambda * last
        return adv, adv + values

    def elbo_loss(self, beliefs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """mean_t −ELBO_t: beliefs ``(T+1, B, 2L)`` decode the transitions of the meta-episodes
        ``batch`` (``(T, B, ...)`` tensors as ``rollout`` returns them)."""
        hp = self.hp
        L = hp.latent_dim
        mean, logvar = beliefs[..., :L], beliefs[..., L:]
        sample = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        if hp.kl_to_prior:
            kl = gaussian_kl_to_standard(mean, logvar)
        else:
            zero = torch.zeros_like(mean[:1])
            kl = gaussian_kl(mean, logvar, torch.cat([zero, mean[:-1]]), torch.cat([zero, logvar[:-1]]))
        if self.discrete:
            return (self._cell_nll(sample, batch).sum(2) + hp.kl_weight * kl).mean()
        error, terms = self._reconstruction_error(sample, batch)
        return (error + hp.kl_weight * kl.gather(0, terms)).mean()

    def _cell_nll(self, sample, batch):
        """Gridworld: −log p(r_j | m_t) of every transition j under every latent sample t, ``(T+1, B, T)``."""
        logits = self.model.decoder(sample)  # (T+1, B, cells)
        cells = self._cell(batch["next_obs"]).T  # (B, T)
        # logit of transition j's cell under belief t, laid out (T+1, B, T)
        picked = logits.gather(2, cells.expand(len(logits), -1, -1))
        target = (batch["eval_reward"].T > 0).to(picked.dtype).expand_as(picked)
        nll = F.binary_cross_entropy_with_logits(picked, target, reduction="none")
        if not self.hp.decode_future:  # belief t (after t transitions) decodes transitions j < t
            T = len(batch["eval_reward"])
            seen = torch.arange(T, device=self.device)[None, :] < torch.arange(T + 1, device=self.device)[:, None]
            nll = nll * seen[:, None, :]
        return nll

    def _reconstruction_error(self, sample, batch):
        """Continuous families: squared errors of the reward (and state) decoder, summed over the decoded
        transitions, per ELBO term ``(E, B)``, and the ELBO terms' time indices ``(E, B)`` (all T+1, or
        ``elbo_samples`` drawn ones)."""
        hp, model = self.hp, self.model
        T, B = batch["eval_reward"].shape
        envs = torch.arange(B, device=self.device)
        terms = torch.arange(T + 1, device=self.device)[:, None].expand(T + 1, B)  # ELBO term index, (E, B)
        if hp.elbo_samples:
            terms = torch.randint(T + 1, (hp.elbo_samples, B), device=self.device)
        decoded = torch.arange(T, device=self.device)[None, :, None].expand(len(terms), T, B)  # (E, D, B)
        if hp.decode_samples:
            decoded = torch.randint(T, (len(terms), hp.decode_samples, B), device=self.device)
        latent = sample[terms, envs][:, None].expand(-1, decoded.shape[1], -1, -1)  # (E, D, B, L)
        obs, next_obs, action = (batch[k][decoded, envs] for k in ("obs", "next_obs", "action"))
        error = (model.predict_reward(latent, next_obs, obs, action) - batch["eval_reward"][decoded, envs]).pow(2)
        if hp.decode_state:  # mean over state dimensions, as varibad vae.py
            error = error + (model.state_decoder(torch.cat([latent, obs, action], -1)) - next_obs).pow(2).mean(-1)
        # a transition from a frozen env (its episode terminated; done flag set in s) is not decoded
        error = error * (1 - obs[..., -1])
        if not hp.decode_future:  # belief t (after t transitions) decodes transitions j < t
            error = error * (decoded < terms[:, None])
        return error.sum(1), terms

    def train_iteration(self) -> dict[str, float]:
        hp, model = self.hp, self.model
        if hp.anneal_lr:  # a constant rate lets late PPO updates undo a good policy
            self.optimizer.lr = hp.lr * (1.0 - self.progress)
        picked = torch.randint(len(self.train_tasks), (hp.num_envs,), device=self.device)
        self.env.set_tasks([self.train_tasks[i] for i in picked.tolist()])
        traj = self.rollout(self.env)
        self.env_steps += hp.num_envs * self.steps
        with torch.no_grad():
            values = model.critic(model.policy_input(traj["obs"], traj["belief"][:-1])).squeeze(-1)
        adv, returns = self._advantages(traj["reward"] * hp.reward_scale, values)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)

        if self.vae_buffer:
            self._add_to_vae_buffer(traj)
        stats = []
        for _ in range(hp.ppo_epochs):
            for envs in torch.randperm(hp.num_envs, device=self.device).chunk(hp.minibatches):
                terms = self._losses({k: v[:, envs] for k, v in traj.items()}, adv[:, envs], returns[:, envs])
                for optimizer in self._optimizers():
                    optimizer.zero_grad()
                terms["loss"].backward()
                for optimizer in self._optimizers():
                    nn.utils.clip_grad_norm_(optimizer.params, hp.max_grad_norm)
                    optimizer.step()
                stats.append(torch.stack([terms[k].detach() for k in LOSS_TERMS]))  # no host sync per minibatch
        stats = torch.stack(stats).mean(0).tolist()
        if self.vae_buffer:  # varibad metalearner.py: the VAE steps after the policy update
            stats[LOSS_TERMS.index("elbo_loss")] = sum(self._vae_step() for _ in range(hp.vae_updates)) / hp.vae_updates
        return {"return": traj["reward"].sum(0).mean().item(), **dict(zip(LOSS_TERMS, stats, strict=True))}

    def _optimizers(self):
        """The optimisers the PPO minibatches step (with a VAE buffer the VAE steps on its own)."""
        return [self.optimizer] if self.vae_optimizer is None or self.vae_buffer else [self.optimizer, self.vae_optimizer]

    def _add_to_vae_buffer(self, traj):
        N, n = self.hp.vae_buffer_size, traj["reward"].shape[1]
        slots = ((self.vae_buffer_filled + torch.arange(n)) % N).to(self.device)
        for k, v in self.vae_buffer.items():
            v[:, slots] = traj[k]
        self.vae_buffer_filled += n

    def _vae_step(self) -> float:
        """One ELBO step of encoder + decoder on ``vae_batch`` distinct buffered meta-episodes."""
        hp = self.hp
        held = min(int(self.vae_buffer_filled), hp.vae_buffer_size)
        picked = torch.randperm(held)[:hp.vae_batch].to(self.device)
        loss = self._vae_loss({k: v[:, picked] for k, v in self.vae_buffer.items()})
        self.vae_optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.vae_optimizer.params, hp.max_grad_norm)
        self.vae_optimizer.step()
        return loss.item()

    def encoded_beliefs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The beliefs ``(T+1, B, ·)`` of whole meta-episodes ``batch``, re-encoded from scratch, prior first."""
        beliefs = self.model.encode(batch["next_obs"], batch["action"], batch["eval_reward"])
        return torch.cat([self.model.prior(beliefs.shape[1], self.device)[None], beliefs])

    def vae_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The ELBO loss of buffered meta-episodes ``batch``, encoded from scratch (compiled when enabled)."""
        return self.elbo_loss(self.encoded_beliefs(batch), batch)

    def losses(self, batch: dict[str, torch.Tensor], adv, returns) -> dict[str, torch.Tensor]:
        """The loss terms and their weighted sum ``loss`` on whole meta-episodes ``batch`` (``(T, B, ...)``
        tensors as ``rollout`` returns them), re-encoded from scratch so the encoder gets gradients
        (compiled when enabled)."""
        hp, model = self.hp, self.model
        if hp.detach_encoder and self.vae_buffer:  # nothing here needs the re-encoded beliefs
            beliefs = batch["belief"]
        else:
            beliefs = self.encoded_beliefs(batch)
        # detached: PPO sees the beliefs the actions were taken with, not ones re-encoded by an
        # encoder the ELBO keeps changing under it (varibad algorithms/ppo.py: stored latents)
        acted_on = batch["belief"] if hp.detach_encoder else beliefs
        logp, entropy = model.log_prob_and_entropy(batch["obs"], acted_on[:-1], batch["action"])
        ratio = (logp - batch["logp"]).exp()
        terms = {"policy_loss": -torch.min(ratio * adv, ratio.clamp(1 - hp.clip, 1 + hp.clip) * adv).mean()}
        values = model.critic(model.policy_input(batch["obs"], acted_on[:-1])).squeeze(-1)
        terms["value_loss"] = (values - returns).pow(2).mean()
        terms["entropy"] = entropy.mean()
        rl_loss = terms["policy_loss"] + hp.value_coef * terms["value_loss"] - hp.entropy_coef * terms["entropy"]
        terms["elbo_loss"] = (self.elbo_loss(beliefs, batch)
                              if hp.variational and not self.vae_buffer else torch.zeros((), device=self.device))
        terms["loss"] = rl_loss + hp.elbo_coef * terms["elbo_loss"]
        return terms

    def adaptation_returns(self, tasks: list[Task], episodes: int) -> torch.Tensor:
        """One greedy meta-episode of ``episodes`` episodes per task (most likely action; the
        Gaussian's mean on continuous families), the hidden state carried across the episodes;
        ``(len(tasks), episodes)`` returns of the evaluation reward."""
        env = self.family.make_batched(len(tasks), self.device)
        env.set_tasks(list(tasks))
        rewards = self.rollout(env, greedy=True, episodes=episodes)["eval_reward"]
        return rewards.reshape(episodes, self.family.horizon, -1).sum(1).cpu().T

    def evaluate(self, tasks: list[Task]) -> pd.DataFrame:
        """One greedy meta-episode per task; per-episode returns and their sum (``final``)."""
        per_episode = self.adaptation_returns(tasks, self.episodes).T
        rows = [{"task": i, "stage": f"episode_{e + 1}", "return": per_episode[e, i].item()}
                for i in range(len(tasks)) for e in range(self.episodes)]
        rows += [{"task": i, "stage": FINAL_STAGE, "return": per_episode[:, i].sum().item()} for i in range(len(tasks))]
        return pd.DataFrame(rows)

    @torch.no_grad()
    def belief_rollout(self, task: Task) -> dict[str, torch.Tensor]:
        """What the belief figure needs for one greedy meta-episode on the gridworld: ``positions``
        (T+1, 2) cells (start first), ``rewards`` (T,), and for VATE ``reward_probs`` (T+1, size, size),
        the decoder's probability of the goal reward per cell under each posterior (prior first)."""
        if not self.discrete:
            raise ValueError(f"belief_rollout draws gridworld cells; the family is {self.family.name}")
        env = self.family.make_batched(1, self.device)
        env.set_tasks([task])
        traj = self.rollout(env, greedy=True)
        cells = torch.cat([self._cell(traj["obs"][:1]), self._cell(traj["next_obs"])])[:, 0]
        out = {"positions": torch.stack([cells // self.grid_size, cells % self.grid_size], 1).cpu(),
               "rewards": traj["reward"][:, 0].cpu()}
        if self.hp.variational:
            probs = self.model.reward_probs(traj["belief"][:, 0])
            out["reward_probs"] = probs.reshape(-1, self.grid_size, self.grid_size).cpu()
        return out

    def state_dict(self):
        state = {**super().state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.vae_optimizer is not None:
            state["vae_optimizer"] = self.vae_optimizer.state_dict()
        if self.vae_buffer:
            state["vae_buffer"] = {**self.vae_buffer, "filled": self.vae_buffer_filled}
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.vae_optimizer is not None:
            self.vae_optimizer.load_state_dict(state["vae_optimizer"])
        if self.vae_buffer:
            for k, v in self.vae_buffer.items():
                v.copy_(state["vae_buffer"][k])
            self.vae_buffer_filled = state["vae_buffer"]["filled"].clone()
