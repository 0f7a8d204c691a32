import math

import pytest
import torch

from metarl.latents import (
    Categorical,
    Dirichlet,
    Gaussian,
    LatentSpace,
    dirichlet_to_logit_normal,
    gaussian_kl,
    logit_normal_to_dirichlet,
)


def test_gaussian_product_matches_closed_form():
    # the product of the factors only, no N(0, I) prior factor (oyster's _product_of_gaussians):
    # precisions add, the mean is precision-weighted. Hand-computed per task:
    #   N(1, 0.5) alone                 -> N(1, 0.5)
    #   N(1, 0.5) x N(3, 1.5), N(9, 2) masked -> precision 2 + 2/3 = 8/3, mean (2 + 2) * 3/8 = 1.5
    #   nothing unmasked                -> the prior N(0, 1)
    latent = Gaussian(1)
    mean = torch.tensor([[1.0, 5.0, 7.0], [1.0, 3.0, 9.0], [4.0, 4.0, 4.0]])[..., None]
    var = torch.tensor([[0.5, 1.0, 1.0], [0.5, 1.5, 2.0], [1.0, 1.0, 1.0]])[..., None]
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    post = latent.posterior(torch.cat([mean, var], -1), mask)
    torch.testing.assert_close(post, torch.tensor([[1.0, 0.5], [1.5, 0.375], [0.0, 1.0]]))


def test_empty_context_gives_prior():
    latent = LatentSpace.parse("dir(2,4)+cat(1,3)+gau(2)")
    factors = torch.randn(3, 4, latent.param_dim)
    post = latent.posterior(factors, torch.zeros(3, 4))
    torch.testing.assert_close(post, latent.prior(3))
    torch.testing.assert_close(latent.kl(post), torch.zeros(3), atol=1e-6, rtol=0)


def test_categorical_product_normalises():
    torch.manual_seed(0)
    cat = Categorical(2, 4)
    logits = torch.randn(1, 3, 8)
    probs = cat.log_probs(cat.posterior(logits, torch.ones(1, 3))).exp()
    factor_probs = logits.unflatten(-1, (2, 4)).softmax(-1)
    product = factor_probs.prod(1)
    torch.testing.assert_close(probs[0], product[0] / product[0].sum(-1, keepdim=True))
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 2))
    z = cat.sample(cat.posterior(logits, torch.ones(1, 3)))
    torch.testing.assert_close(z.unflatten(-1, (2, 4)).sum(-1), torch.ones(1, 2))


def test_categorical_kl_to_uniform():
    cat = Categorical(1, 4)
    q = torch.tensor([[0.7, 0.1, 0.1, 0.1]])
    expected = (q * (q * 4).log()).sum()
    torch.testing.assert_close(cat.kl(q.log()), expected[None])


def test_laplace_bridge_round_trip():
    alpha = torch.tensor([[0.2, 0.2, 0.2, 0.2], [0.5, 1.0, 3.0, 7.0]])
    mean, var = dirichlet_to_logit_normal(alpha)
    torch.testing.assert_close(logit_normal_to_dirichlet(mean, var), alpha)
    # the bridged Gaussian's softmax(mean) is the Dirichlet's mean direction
    torch.testing.assert_close(mean.softmax(-1), alpha / alpha.sum(-1, keepdim=True))
    # the symmetric Dir(0.2) prior: zero mean, variance (1/alpha)(1 - 1/K)
    torch.testing.assert_close(Dirichlet(1, 4).prior_var, torch.full((4,), 5 * 0.75))


def test_logit_normal_kl_matches_monte_carlo():
    torch.manual_seed(0)
    dirichlet = Dirichlet(2, 4, alpha=0.2)
    post = torch.cat([torch.randn(1, 8), torch.rand(1, 8) + 0.2], -1)
    mean, var = post.split(8, -1)
    logits = mean + var.sqrt() * torch.randn(50_000, 8)  # logit-space samples of the posterior
    prior = torch.distributions.Normal(dirichlet.prior_mean, dirichlet.prior_var.sqrt())
    log_ratio = (torch.distributions.Normal(mean, var.sqrt()).log_prob(logits) - prior.log_prob(logits)).sum(-1)
    assert dirichlet.kl(post).item() == pytest.approx(log_ratio.mean().item(), rel=0.05)
    assert gaussian_kl(mean, var, mean, var).abs().max() < 1e-6


def test_samples_live_on_the_right_support():
    torch.manual_seed(0)
    latent = LatentSpace.parse(["Dir(2, 4)", "gau(2)"])
    assert (latent.dim, latent.param_dim) == (10, 20)
    z = latent.sample(latent.prior(100))
    simplex = z[:, :8].unflatten(-1, (2, 4))
    assert (simplex >= 0).all()
    torch.testing.assert_close(simplex.sum(-1), torch.ones(100, 2))
    # a sparse Dir(0.2) prior puts most mass near the vertices
    assert simplex.max(-1).values.mean() > 0.6


def test_reparameterised_gradients_flow():
    latent = LatentSpace.parse("cat(2,4)+dir(1,3)+gau(2)")
    raw = torch.randn(2, 5, latent.param_dim, requires_grad=True)
    post = latent.posterior(latent.factors(raw))
    (latent.sample(post).pow(2).sum() + latent.kl(post).sum()).backward()
    assert raw.grad.abs().sum() > 0 and torch.isfinite(raw.grad).all()


@pytest.mark.parametrize("bad", ["gau(2,3)", "cat(4)", "foo(1)", "gau(2)+"])
def test_parse_rejects_bad_specs(bad):
    with pytest.raises(ValueError, match="bad latent component"):
        LatentSpace.parse(bad)


def test_parse_sizes():
    assert LatentSpace.parse("gau(5)").dim == 5
    assert LatentSpace.parse("cat(2,4)+gau(2)").param_dim == 8 + 4
    assert math.isclose(LatentSpace.parse("cat(2,4)", temperature=0.3).components[0].temperature, 0.3)
