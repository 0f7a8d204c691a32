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
  (reparameterised Gaussian through a softmax). As Ren et al. (2019) §3.1, the KL maps the
  posterior to a Dirichlet with the Laplace bridge and is taken between Dirichlets, in closed form.
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
    """Inverse Laplace bridge: diagonal Gaussian in the softmax basis -> Dirichlet alpha.

    Hennig et al.'s form, alpha_k = (1 - 2/K + e^{mu_k} sum_l e^{-mu_l} / K^2) / var_k, which
    inverts ``dirichlet_to_logit_normal`` exactly and ignores a shift of all logits (as softmax
    does). Ren et al. (2019) print e^{-mu_k} in the first factor, a sign typo: that form neither
    round-trips nor is shift-invariant."""
    k = mean.shape[-1]
    return (1 - 2 / k + mean.exp() * (-mean).exp().sum(-1, keepdim=True) / k**2) / var


def dirichlet_kl(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """KL(Dir(alpha) || Dir(beta)) over the last dim, in closed form."""
    alpha0, beta0 = alpha.sum(-1), beta.sum(-1)
    return (torch.lgamma(alpha0) - torch.lgamma(alpha).sum(-1) - torch.lgamma(beta0) + torch.lgamma(beta).sum(-1)
            + ((alpha - beta) * (torch.digamma(alpha) - torch.digamma(alpha0)[..., None])).sum(-1))


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor, prior_mean, prior_logvar) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(prior_mean, exp(prior_logvar))) for diagonal Gaussians, summed
    over the last dim (PEARL's latent, VATE's belief against its prior, TESP's trust region)."""
    return 0.5 * (prior_logvar - logvar - 1 + (logvar.exp() + (mean - prior_mean) ** 2) / prior_logvar.exp()).sum(-1)


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
        return gaussian_kl(mean, var.log(), self.prior_mean.to(post), self.prior_var.to(post).log())


class Dirichlet(Gaussian):
    """``m`` Dirichlet variables over ``n`` classes as logit-normals; prior Dir(alpha, ..., alpha).
    Factor and posterior: logit-space ``[mean, var]``.

    ``prior()`` is the Laplace bridge of Dir(alpha): zero mean, variance (1 - 1/n) / alpha. It maps
    back to Dir(alpha) exactly (zero KL) and is sampled like any posterior, so prior z and the z of an
    uninformative posterior have one distribution. That diagonal logit-normal is an intentional
    approximation, a little less sparse than Dir(alpha): it drops the bridge's off-diagonal covariance
    -1/(n alpha), which (softmax ignoring shifts) shrinks the simplex directions by (1 - 1/n). For
    Dir(0.2) over 4 classes its softmax has component variance 0.079 (Dir: 0.104) and mean largest
    component 0.68 (Dir: 0.76); the full bridge covariance gives 0.089 / 0.71, the rest is the
    Laplace approximation itself. Kept diagonal because the posterior, as the paper's, is diagonal.
    """

    def __init__(self, m: int, n: int, alpha: float = 0.2):
        super().__init__(m * n)
        self.m, self.n = m, n
        self.prior_alpha = torch.full((n,), float(alpha))
        mean, var = dirichlet_to_logit_normal(self.prior_alpha)
        self.prior_mean, self.prior_var = mean.repeat(m), var.repeat(m)

    def sample(self, post: torch.Tensor) -> torch.Tensor:
        logits = super().sample(post)
        return logits.unflatten(-1, (self.m, self.n)).softmax(-1).flatten(-2)

    def kl(self, post: torch.Tensor) -> torch.Tensor:
        """KL(Dir(bridge(posterior)) || Dir(alpha)) summed over the m variables, in float64: a sharp
        posterior has alphas of 1e5 and more, where float32 lgamma differences are off by 0.03+."""
        mean, var = post.double().split(self.d, -1)
        alpha = logit_normal_to_dirichlet(mean.unflatten(-1, (self.m, self.n)), var.unflatten(-1, (self.m, self.n)))
        return dirichlet_kl(alpha, self.prior_alpha.to(alpha)).sum(-1).to(post.dtype)


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
