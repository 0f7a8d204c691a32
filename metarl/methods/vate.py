"""VATE (Zintgraf et al. 2019, later variBAD) and RL² as one on-policy recurrent method.

A meta-episode is ``episodes`` consecutive episodes on one task; a GRU encoder reads every
transition (s', a, r) and its hidden state carries across the episode boundaries.

* VATE (``variational: true``): the encoder outputs a Gaussian posterior q(m | τ:t) after every
  transition (t = 0 is the prior, from the zero hidden state). A reward decoder predicts from
  a latent sample the probability that each grid cell gives the goal reward. The policy acts
  on (state, posterior mean, posterior log-variance). Loss = PPO loss + λ · mean_t ELBO_t, where
  ELBO_t decodes the rewards of the *whole* meta-episode (past and future) from a sample of
  q_t, minus KL(q_t ‖ N(0, I)).
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
  gridworld: keep every meta-episode) and ELBO subsampling (off there) are not reproduced.

The rollout steps all ``num_envs`` meta-episodes together as tensors; the update re-encodes the
whole meta-episodes with one fused GRU call per PPO minibatch (minibatches split by env, so each
keeps its full history).
"""
from __future__ import annotations

import dataclasses

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from metarl.envs.base import Task, TaskFamily
from metarl.methods.base import FINAL_STAGE, Method
from metarl.nets import mlp
from metarl.optim import Adam


LOSS_TERMS = ("policy_loss", "value_loss", "entropy", "elbo_loss")
#: the variational auto-encoder: what the ELBO trains (VATEModel attribute names)
VAE_MODULES = ("embed", "gru", "to_belief", "decoder")


@dataclasses.dataclass
class Hyperparams:
    variational: bool = True       # VATE (Gaussian posterior + decoder) vs RL² (deterministic)
    latent_dim: int = 10
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


class VATEModel(nn.Module):
    """Everything needed to act: encoder, policy and value heads, and (VATE) reward decoder."""

    def __init__(self, obs_dim: int, n_actions: int, n_cells: int, hp: Hyperparams):
        super().__init__()
        self.hp, self.n_actions = hp, n_actions
        self.embed = nn.Linear(obs_dim + n_actions + 1, hp.embed_dim)
        self.gru = nn.GRU(hp.embed_dim, hp.encoder_hidden)
        # belief = [mean, log-variance] (VATE) or the embedding (RL²); it is what the policy sees
        self.belief_dim = 2 * hp.latent_dim if hp.variational else hp.latent_dim
        self.to_belief = nn.Linear(hp.encoder_hidden, self.belief_dim)
        self.actor = mlp(obs_dim + self.belief_dim, [hp.policy_hidden] * 2, n_actions)
        self.critic = mlp(obs_dim + self.belief_dim, [hp.policy_hidden] * 2, 1)
        # one logit per cell: log-odds that the cell is the goal, given a latent sample
        self.decoder = mlp(hp.latent_dim, [hp.decoder_hidden] * 2, n_cells, nn.ReLU) if hp.variational else None

    def _embed(self, next_obs, actions, rewards):
        x = torch.cat([next_obs, F.one_hot(actions, self.n_actions).to(next_obs.dtype), rewards.unsqueeze(-1)], -1)
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
        """Log-probabilities of every action."""
        return self.actor(self.policy_input(obs, belief)).log_softmax(-1)

    def act(self, obs, belief, greedy: bool = False):
        logp = self.log_policy(obs, belief)
        action = logp.argmax(-1) if greedy else torch.multinomial(logp.exp(), 1).squeeze(-1)
        return action, logp.gather(-1, action.unsqueeze(-1)).squeeze(-1)

    def reward_probs(self, belief) -> torch.Tensor:
        """Decoder's probability of the goal reward per cell under the posterior mean."""
        return torch.sigmoid(self.decoder(belief[..., :self.hp.latent_dim]))


def gaussian_kl_to_standard(mean, logvar):
    """KL(N(mean, exp(logvar)) ‖ N(0, I)), summed over the last dimension."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


def gaussian_kl(mean, logvar, prior_mean, prior_logvar):
    """KL(N(mean, exp(logvar)) ‖ N(prior_mean, exp(prior_logvar))), summed over the last dimension."""
    return 0.5 * (prior_logvar - logvar - 1 + (logvar.exp() + (mean - prior_mean).pow(2)) / prior_logvar.exp()).sum(-1)


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
        self.episodes = family.episodes
        self.steps = family.horizon * self.episodes  # meta-episode length
        self.grid_size = family.size
        self.model = VATEModel(family.obs_dim, family.act_dim, self.grid_size ** 2, hparams).to(device)
        if hparams.detach_encoder:
            # two optimisers as in varibad (metalearner.py, vae.py): the encoder and decoder learn from
            # the ELBO alone, at a rate that is not annealed with the policy's (ppo.py anneals the
            # VAE's only when the RL loss goes through the encoder)
            vae = [p for name, p in self.model.named_parameters() if name.split(".")[0] in VAE_MODULES]
            rl = [p for name, p in self.model.named_parameters() if name.split(".")[0] not in VAE_MODULES]
            self.optimizer, self.vae_optimizer = Adam(rl, lr=hparams.lr), Adam(vae, lr=hparams.lr)
        else:
            self.optimizer, self.vae_optimizer = Adam(self.model.parameters(), lr=hparams.lr), None
        self.train_goals = self._goals(tasks[train_split])
        self.env = family.make_batched(hparams.num_envs, device)
        # the VAE buffer: the transitions the ELBO needs, (T, N, ...) with N = vae_buffer_size slots
        # filled first-in-first-out; ``vae_buffer_filled`` counts meta-episodes ever added
        self.vae_buffer = {}
        if hparams.vae_buffer_size:
            N, T = hparams.vae_buffer_size, self.steps
            self.vae_buffer = {"next_obs": torch.zeros(T, N, family.obs_dim, device=device),
                               "action": torch.zeros(T, N, dtype=torch.long, device=device),
                               "reward": torch.zeros(T, N, device=device)}
            self.vae_buffer_filled = torch.zeros((), dtype=torch.long)

    def _goals(self, tasks: list[Task]) -> torch.Tensor:
        return torch.tensor([t["goal"] for t in tasks], dtype=torch.long, device=self.device)

    def _cell(self, obs) -> torch.Tensor:
        """Grid cell index x·size + y from the scaled position in the observation."""
        xy = (obs[..., :2] * (self.grid_size - 1)).round().long()
        return xy[..., 0] * self.grid_size + xy[..., 1]

    @torch.no_grad()
    def rollout(self, env, greedy: bool = False) -> dict[str, torch.Tensor]:
        """One meta-episode in every env of ``env``: ``(T, B, ...)`` tensors; ``beliefs`` has T+1
        entries (prior first)."""
        model, B = self.model, env.num_envs
        belief, hidden = model.prior(B, self.device), torch.zeros(B, self.hp.encoder_hidden, device=self.device)
        keys = ("obs", "action", "logp", "reward", "next_obs", "belief")
        traj = {k: [] for k in keys}
        for t in range(self.steps):
            if t % self.family.horizon == 0:
                obs = env.reset()
            action, logp = model.act(obs, belief, greedy)
            next_obs, reward, *_ = env.step(action)
            traj["belief"].append(belief)
            belief, hidden = model.encode_step(next_obs, action, reward, hidden)
            for k, v in zip(keys[:-1], (obs, action, logp, reward, next_obs), strict=True):
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

    def elbo_loss(self, beliefs, next_obs, rewards) -> torch.Tensor:
        """mean_t −ELBO_t: beliefs ``(T+1, B, 2L)`` decode the rewards of transitions ``(T, B)``."""
        L = self.hp.latent_dim
        mean, logvar = beliefs[..., :L], beliefs[..., L:]
        sample = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        logits = self.model.decoder(sample)  # (T+1, B, cells)
        cells = self._cell(next_obs).T  # (B, T)
        # logit of transition j's cell under belief t, laid out (T+1, B, T)
        picked = logits.gather(2, cells.expand(len(logits), -1, -1))
        target = (rewards.T > 0).to(picked.dtype).expand_as(picked)
        nll = F.binary_cross_entropy_with_logits(picked, target, reduction="none")
        if not self.hp.decode_future:  # belief t (after t transitions) decodes transitions j < t
            T = len(rewards)
            seen = torch.arange(T, device=self.device)[None, :] < torch.arange(T + 1, device=self.device)[:, None]
            nll = nll * seen[:, None, :]
        if self.hp.kl_to_prior:
            kl = gaussian_kl_to_standard(mean, logvar)
        else:
            zero = torch.zeros_like(mean[:1])
            kl = gaussian_kl(mean, logvar, torch.cat([zero, mean[:-1]]), torch.cat([zero, logvar[:-1]]))
        return (nll.sum(2) + self.hp.kl_weight * kl).mean()

    def train_iteration(self) -> dict[str, float]:
        hp, model = self.hp, self.model
        if hp.anneal_lr:  # a constant rate lets late PPO updates undo a good policy
            self.optimizer.lr = hp.lr * (1.0 - self.progress)
        self.env.set_goals(self.train_goals[torch.randint(len(self.train_goals), (hp.num_envs,), device=self.device)])
        traj = self.rollout(self.env)
        self.env_steps += hp.num_envs * self.steps
        with torch.no_grad():
            values = model.critic(model.policy_input(traj["obs"], traj["belief"][:-1])).squeeze(-1)
        adv, returns = self._advantages(traj["reward"], values)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)

        if self.vae_buffer:
            self._add_to_vae_buffer(traj)
        stats = []
        for _ in range(hp.ppo_epochs):
            for envs in torch.randperm(hp.num_envs, device=self.device).chunk(hp.minibatches):
                terms = self.losses({k: v[:, envs] for k, v in traj.items()}, adv[:, envs], returns[:, envs])
                for optimizer in self._optimizers():
                    optimizer.zero_grad()
                terms["loss"].backward()
                for optimizer in self._optimizers():
                    nn.utils.clip_grad_norm_(optimizer.params, hp.max_grad_norm)
                    optimizer.step()
                stats.append([terms[k].item() for k in LOSS_TERMS])
        stats = torch.tensor(stats).mean(0).tolist()
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
        hp, model = self.hp, self.model
        held = min(int(self.vae_buffer_filled), hp.vae_buffer_size)
        picked = torch.randperm(held)[:hp.vae_batch].to(self.device)
        batch = {k: v[:, picked] for k, v in self.vae_buffer.items()}
        beliefs = model.encode(batch["next_obs"], batch["action"], batch["reward"])
        beliefs = torch.cat([model.prior(beliefs.shape[1], self.device)[None], beliefs])
        loss = self.elbo_loss(beliefs, batch["next_obs"], batch["reward"])
        self.vae_optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.vae_optimizer.params, hp.max_grad_norm)
        self.vae_optimizer.step()
        return loss.item()

    def losses(self, batch: dict[str, torch.Tensor], adv, returns) -> dict[str, torch.Tensor]:
        """The loss terms and their weighted sum ``loss`` on whole meta-episodes ``batch`` (``(T, B, ...)``
        tensors as ``rollout`` returns them), re-encoded from scratch so the encoder gets gradients."""
        hp, model = self.hp, self.model
        if hp.detach_encoder and self.vae_buffer:  # nothing here needs the re-encoded beliefs
            beliefs = batch["belief"]
        else:
            beliefs = model.encode(batch["next_obs"], batch["action"], batch["reward"])
            beliefs = torch.cat([model.prior(beliefs.shape[1], self.device)[None], beliefs])
        # detached: PPO sees the beliefs the actions were taken with, not ones re-encoded by an
        # encoder the ELBO keeps changing under it (varibad algorithms/ppo.py: stored latents)
        acted_on = batch["belief"] if hp.detach_encoder else beliefs
        logp = model.log_policy(batch["obs"], acted_on[:-1])
        ratio = (logp.gather(-1, batch["action"].unsqueeze(-1)).squeeze(-1) - batch["logp"]).exp()
        terms = {"policy_loss": -torch.min(ratio * adv, ratio.clamp(1 - hp.clip, 1 + hp.clip) * adv).mean()}
        values = model.critic(model.policy_input(batch["obs"], acted_on[:-1])).squeeze(-1)
        terms["value_loss"] = (values - returns).pow(2).mean()
        terms["entropy"] = -(logp.exp() * logp).sum(-1).mean()
        rl_loss = terms["policy_loss"] + hp.value_coef * terms["value_loss"] - hp.entropy_coef * terms["entropy"]
        terms["elbo_loss"] = (self.elbo_loss(beliefs, batch["next_obs"], batch["reward"])
                              if hp.variational and not self.vae_buffer else torch.zeros((), device=self.device))
        terms["loss"] = rl_loss + hp.elbo_coef * terms["elbo_loss"]
        return terms

    def evaluate(self, tasks: list[Task]) -> pd.DataFrame:
        """One greedy meta-episode per task; per-episode returns and their sum (``final``)."""
        env = self.family.make_batched(len(tasks), self.device)
        env.set_goals(self._goals(tasks))
        rewards = self.rollout(env, greedy=True)["reward"]
        per_episode = rewards.reshape(self.episodes, self.family.horizon, -1).sum(1).cpu()
        rows = [{"task": i, "stage": f"episode_{e + 1}", "return": per_episode[e, i].item()}
                for i in range(len(tasks)) for e in range(self.episodes)]
        rows += [{"task": i, "stage": FINAL_STAGE, "return": per_episode[:, i].sum().item()} for i in range(len(tasks))]
        return pd.DataFrame(rows)

    @torch.no_grad()
    def belief_rollout(self, task: Task) -> dict[str, torch.Tensor]:
        """What the belief figure needs for one greedy meta-episode: ``positions`` (T+1, 2) cells
        (start first), ``rewards`` (T,), and for VATE ``reward_probs`` (T+1, size, size), the
        decoder's probability of the goal reward per cell under each posterior (prior first)."""
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
