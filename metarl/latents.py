"""Latent task variables for permutation-invariant context encoders (PEARL and the
structured-latent paper).

An encoder maps every context transition to a *factor* (raw parameters of one likelihood term);
the posterior is the product of the factors, which stays in closed form:
* ``Gaussian(d)``: factors N(mu_i, var_i); product = precision-weighted mean. Prior N(0, I).
* ``Categorical(m, n)``: m independent n-way variables; a factor is a vector of logits and the
  product of categoricals is the sum of logits. Uniform prior (adds nothing). Sampled with the
  Gumbel-softmax relaxation so z stays differentiable.
* ``Dirichlet(m, n)``: m Dirichlet variables over n classes, carried as Gaussians in logit
  (softmax) space so that the product of factors stays Gaussian; sampled as logit-normal
  (reparameterised Gaussian through a softmax). The Dir(alpha) prior is turned into its
  logit-space Gaussian with the Laplace bridge, and the KL is taken between the Gaussians.
The posterior is the product of the per-transition factors only, with no prior factor, as
PEARL's code (oyster rlkit/torch/sac/agent.py ``_product_of_gaussians``); the prior enters through
the KL term. An empty context (every factor masked out) gives the prior, which is what oyster's
agent holds before it has seen any transition (``clear_z``).

``LatentSpace`` concatenates components, parsed from strings such as ``"dir(2,4)+gau(2)"``.
Everything is batched over a leading task dimension: factors ``(T, N, param_dim)`` with a
``(T, N)`` validity mask -> posterior ``(T, param_dim)`` -> sample ``(T, dim)``, KL ``(T,)``.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

MIN_VAR = 1e-7  # as PEARL: keeps factor precisions finite


def dirichlet_to_logit_normal(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Laplace bridge (Hennig et al. 2012): Dir(alpha) over the last dim -> diagonal Gaussian
    (mean, var) in the softmax basis."""
    k = alpha.shape[-1]
    log_alpha = alpha.log()
    mean = log_alpha - log_alpha.mean(-1, keepdim=True)
    var = (1 - 2 / k) / alpha + (1 / alpha).sum(-1, keepdim=True) / k**2
    return mean, var


def logit_normal_to_dirichlet(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Inverse Laplace bridge: diagonal Gaussian in the softmax basis -> Dirichlet alpha."""
    k = mean.shape[-1]
    return (1 - 2 / k + mean.exp() * (-mean).exp().sum(-1, keepdim=True) / k**2) / var


def gaussian_kl(mean: torch.Tensor, var: torch.Tensor, prior_mean, prior_var) -> torch.Tensor:
    """KL(N(mean, var) || N(prior_mean, prior_var)) for diagonal Gaussians, summed over the last dim."""
    return 0.5 * (var / prior_var + (mean - prior_mean) ** 2 / prior_var - 1 + torch.log(prior_var / var)).sum(-1)


class Gaussian:
    """Isotropic Gaussian latent of size ``d`` (PEARL). Factor and posterior: ``[mean, var]``."""

    def __init__(self, d: int):
        self.d = d
        self.dim = d
        self.param_dim = 2 * d
        self.prior_mean, self.prior_var = torch.zeros(d), torch.ones(d)

    def factors(self, raw: torch.Tensor) -> torch.Tensor:
        mean, var = raw.split(self.d, -1)
        return torch.cat([mean, F.softplus(var).clamp_min(MIN_VAR)], -1)

    def posterior(self, factors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Product of the unmasked factors: precisions add, the mean is precision-weighted.
        ``Dirichlet`` inherits it in logit space (Ren et al. build on PEARL's product)."""
        mean, var = factors.split(self.d, -1)
        precision = mask[..., None] / var
        total = precision.sum(-2)
        # no transition seen: nothing has updated the belief, so it is the prior (the empty
        # product has zero precision); a safe denominator keeps gradients finite there
        empty = (mask.sum(-1) == 0)[..., None]
        post_var = 1 / torch.where(empty, 1.0, total)
        post_mean = post_var * (precision * mean).sum(-2)
        prior_mean, prior_var = self.prior_mean.to(factors), self.prior_var.to(factors)
        return torch.cat([torch.where(empty, prior_mean, post_mean), torch.where(empty, prior_var, post_var)], -1)

    def prior(self, num_tasks: int) -> torch.Tensor:
        return torch.cat([self.prior_mean, self.prior_var]).expand(num_tasks, -1)

    def sample(self, post: torch.Tensor) -> torch.Tensor:
        mean, var = post.split(self.d, -1)
        return mean + var.sqrt() * torch.randn_like(mean)

    def kl(self, post: torch.Tensor) -> torch.Tensor:
        mean, var = post.split(self.d, -1)
        return gaussian_kl(mean, var, self.prior_mean.to(post), self.prior_var.to(post))


class Dirichlet(Gaussian):
    """``m`` Dirichlet variables over ``n`` classes as logit-normals; prior Dir(alpha, ..., alpha)."""

    def __init__(self, m: int, n: int, alpha: float = 0.2):
        super().__init__(m * n)
        self.m, self.n = m, n
        mean, var = dirichlet_to_logit_normal(torch.full((n,), float(alpha)))
        self.prior_mean, self.prior_var = mean.repeat(m), var.repeat(m)

    def sample(self, post: torch.Tensor) -> torch.Tensor:
        logits = super().sample(post)
        return logits.unflatten(-1, (self.m, self.n)).softmax(-1).flatten(-2)


class Categorical:
    """``m`` independent ``n``-way categoricals, uniform prior; factor and posterior: logits."""

    def __init__(self, m: int, n: int, temperature: float = 0.5):
        self.m, self.n, self.temperature = m, n, temperature
        self.dim = self.param_dim = m * n

    def factors(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def posterior(self, factors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # product of categoricals = sum of logits (the uniform prior adds a constant)
        return (mask[..., None] * factors).sum(-2)

    def prior(self, num_tasks: int) -> torch.Tensor:
        return torch.zeros(num_tasks, self.param_dim)

    def log_probs(self, post: torch.Tensor) -> torch.Tensor:
        return post.unflatten(-1, (self.m, self.n)).log_softmax(-1)

    def sample(self, post: torch.Tensor) -> torch.Tensor:
        gumbel = -torch.empty_like(post).exponential_().log()
        noisy = self.log_probs(post) + gumbel.unflatten(-1, (self.m, self.n))
        return (noisy / self.temperature).softmax(-1).flatten(-2)

    def kl(self, post: torch.Tensor) -> torch.Tensor:
        log_q = self.log_probs(post)
        return (log_q.exp() * (log_q + math.log(self.n))).sum((-2, -1))


_COMPONENT = re.compile(r"(gau|cat|dir)\((\d+)(?:,(\d+))?\)")


class LatentSpace:
    """A concatenation of latent components, e.g. ``LatentSpace.parse("dir(2,4)+gau(2)")``."""

    def __init__(self, components: list):
        self.components = components
        self.dim = sum(c.dim for c in components)
        self.param_dim = sum(c.param_dim for c in components)
        self._param_sizes = [c.param_dim for c in components]

    @classmethod
    def parse(cls, spec: str | list[str], temperature: float = 0.5, alpha: float = 0.2) -> LatentSpace:
        """``"gau(5)"``, ``"cat(2,4)+gau(2)"`` or ``["dir(2,4)", "gau(2)"]`` (case and spaces ignored)."""
        parts = spec if isinstance(spec, list) else spec.split("+")
        components = []
        for part in parts:
            match = _COMPONENT.fullmatch(part.replace(" ", "").lower())
            if not match or (match[1] == "gau") != (match[3] is None):
                raise ValueError(f"bad latent component {part!r}: expected gau(d), cat(m,n) or dir(m,n)")
            kind, a, b = match[1], int(match[2]), match[3] and int(match[3])
            components.append(Gaussian(a) if kind == "gau" else
                              Categorical(a, b, temperature) if kind == "cat" else Dirichlet(a, b, alpha))
        return cls(components)

    def _map(self, fn, params: torch.Tensor, *args) -> list[torch.Tensor]:
        return [fn(c, p, *args) for c, p in zip(self.components, params.split(self._param_sizes, -1))]

    def factors(self, raw: torch.Tensor) -> torch.Tensor:
        """Encoder outputs ``(..., param_dim)`` -> valid factor parameters."""
        return torch.cat(self._map(lambda c, p: c.factors(p), raw), -1)

    def posterior(self, factors: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Product of the factors ``(T, N, param_dim)`` whose ``mask`` ``(T, N)`` is 1 (the prior
        where none is)."""
        if mask is None:
            mask = torch.ones(factors.shape[:-1], device=factors.device)
        return torch.cat(self._map(lambda c, p: c.posterior(p, mask), factors), -1)

    def prior(self, num_tasks: int, device=None) -> torch.Tensor:
        return torch.cat([c.prior(num_tasks) for c in self.components], -1).to(device)

    def sample(self, post: torch.Tensor) -> torch.Tensor:
        """Reparameterised (relaxed for categoricals) sample ``(T, dim)``."""
        return torch.cat(self._map(lambda c, p: c.sample(p), post), -1)

    def kl(self, post: torch.Tensor) -> torch.Tensor:
        """KL(posterior || prior) per task ``(T,)``."""
        return torch.stack(self._map(lambda c, p: c.kl(p), post)).sum(0)
