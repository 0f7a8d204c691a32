import math

import pytest
import torch

from torch.distributions import kl_divergence

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


def test_gaussian_kl_matches_torch():
    # the one diagonal-Gaussian KL that PEARL's latent, VATE's belief and TESP's trust region share
    torch.manual_seed(0)
    mean, logvar, prior_mean, prior_logvar = torch.randn(4, 5, 3).double().unbind(0)
    expected = kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                             torch.distributions.Normal(prior_mean, (0.5 * prior_logvar).exp())).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean, logvar, prior_mean, prior_logvar), expected)
    post = torch.cat([mean, logvar.exp()], -1)  # Gaussian(3): [mean, var] against N(0, I)
    expected = kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                             torch.distributions.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(Gaussian(3).kl(post), expected)


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


def test_categorical_kl_matches_torch():
    torch.manual_seed(0)
    logits = 3 * torch.randn(3, 2, 4)
    uniform = torch.distributions.Categorical(probs=torch.full((4,), 0.25))
    expected = kl_divergence(torch.distributions.Categorical(logits=logits), uniform).sum(-1)
    torch.testing.assert_close(Categorical(2, 4).kl(logits.flatten(-2)), expected)


def test_laplace_bridge_round_trip():
    alpha = torch.tensor([[0.2, 0.2, 0.2, 0.2], [0.5, 1.0, 3.0, 7.0]])
    mean, var = dirichlet_to_logit_normal(alpha)
    torch.testing.assert_close(logit_normal_to_dirichlet(mean, var), alpha)
    # the bridged Gaussian's softmax(mean) is the Dirichlet's mean direction
    torch.testing.assert_close(mean.softmax(-1), alpha / alpha.sum(-1, keepdim=True))
    # the symmetric Dir(0.2) prior: zero mean, variance (1/alpha)(1 - 1/K)
    torch.testing.assert_close(Dirichlet(1, 4).prior_var, torch.full((4,), 5 * 0.75))


def test_laplace_bridge_of_a_known_dirichlet():
    # Dir(1, 2, 4), worked by hand: mu_k = log alpha_k - mean(log alpha) = (-log 2, 0, log 2);
    # var_k = (1 - 2/3) / alpha_k + (1/9) sum_l 1/alpha_l = 1/(3 alpha_k) + 7/36
    alpha = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    mean, var = dirichlet_to_logit_normal(alpha)
    torch.testing.assert_close(mean, torch.tensor([-math.log(2), 0.0, math.log(2)], dtype=torch.float64))
    torch.testing.assert_close(var, torch.tensor([19 / 36, 13 / 36, 10 / 36], dtype=torch.float64))
    # back: 1 - 2/3 + e^{mu_k} (e^{-mu_1} + e^{-mu_2} + e^{-mu_3}) / 9 = (19, 26, 40) / 36, over var_k;
    # the logits' common shift (here +5) drops out, as it does under softmax
    torch.testing.assert_close(logit_normal_to_dirichlet(mean + 5, var), alpha)


def test_dirichlet_kl_is_taken_between_bridged_dirichlets():
    # Ren et al. (2019) 3.1: KL(Dir(bridge(posterior)) || Dir(0.2)). Posteriors of known Dirichlets,
    # with the forward Laplace bridge written out (K = 4) and arbitrary logit shifts
    alpha = torch.tensor([[[0.5, 1.0, 3.0, 7.0], [20.0, 2.0, 0.3, 1.0]],
                          [[0.2, 0.2, 0.2, 0.2], [4e4, 3e3, 50.0, 1.0]]], dtype=torch.float64)  # (tasks, m, n)
    mean = alpha.log() + torch.tensor([[[1.0], [-2.0]], [[0.0], [7.0]]], dtype=torch.float64)
    var = 0.5 / alpha + (1 / alpha).sum(-1, keepdim=True) / 16
    post = torch.cat([mean.flatten(-2), var.flatten(-2)], -1)
    prior = torch.distributions.Dirichlet(torch.full((4,), 0.2, dtype=torch.float64))
    expected = kl_divergence(torch.distributions.Dirichlet(alpha), prior).sum(-1)
    torch.testing.assert_close(Dirichlet(2, 4, alpha=0.2).kl(post), expected)
    # the prior's own logit-space parameters are Dir(0.2) exactly
    assert Dirichlet(2, 4).kl(Dirichlet(2, 4).prior(1)).abs().item() < 1e-5


def test_prior_samples_have_roughly_the_dirichlets_moments():
    torch.manual_seed(0)
    dirichlet = Dirichlet(1, 4, alpha=0.2)
    z = dirichlet.sample(dirichlet.prior(200_000))
    exact = torch.distributions.Dirichlet(torch.full((4,), 0.2)).sample((200_000,))
    torch.testing.assert_close(z.mean(0), torch.full((4,), 0.25), atol=3e-3, rtol=0)
    # Dir(a,..,a) over K classes: Var p_k = a (K a - a) / ((K a)^2 (K a + 1)) = 0.104 for (0.2, K = 4);
    # the diagonal logit-normal is a little less sparse (see Dirichlet's docstring: 0.079 and 0.68)
    variance_ratio = z.var(0).mean().item() / (0.2 * 0.6 / (0.8**2 * 1.8))
    assert 0.7 < variance_ratio < 1.0
    largest, largest_exact = z.max(-1).values.mean().item(), exact.max(-1).values.mean().item()
    assert largest_exact - 0.1 < largest < largest_exact


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


def test_reparameterised_gradients_match_finite_differences():
    latent = LatentSpace.parse("cat(2,4)+dir(1,3)+gau(2)")
    torch.manual_seed(0)
    raw = torch.randn(2, 5, latent.param_dim, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, latent.dim, dtype=torch.float64)

    def loss(raw):
        torch.manual_seed(1)  # the same noise at every evaluation: one fixed reparameterised sample
        post = latent.posterior(latent.factors(raw))
        return (weights * latent.sample(post)).sum(-1) + latent.kl(post)

    assert torch.autograd.gradcheck(loss, (raw,))


@pytest.mark.parametrize("bad", ["gau(2,3)", "cat(4)", "foo(1)", "gau(2)+"])
def test_parse_rejects_bad_specs(bad):
    with pytest.raises(ValueError, match="bad latent component"):
        LatentSpace.parse(bad)


def test_parse_sizes():
    assert LatentSpace.parse("gau(5)").dim == 5
    assert LatentSpace.parse("cat(2,4)+gau(2)").param_dim == 8 + 4
    assert math.isclose(LatentSpace.parse("cat(2,4)", temperature=0.3).components[0].temperature, 0.3)
