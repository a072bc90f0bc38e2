"""Generative losses (token CE / perplexity, VAE ELBO, GAN losses, WGAN-GP) against float64 NumPy formulas,
torch.distributions, analytic critic gradients, and gradcheck (double backward for the penalty)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from goodfit import losses as gl

SEEDS = range(12)


def log_softmax(x, axis=-1):
    shifted = x - x.max(axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis, keepdims=True))


@pytest.mark.parametrize("seed", SEEDS)
def test_token_cross_entropy_and_perplexity_match_formula(seed):
    rng = np.random.default_rng(seed)
    n, t, v = int(rng.integers(1, 5)), int(rng.integers(1, 8)), int(rng.integers(2, 12))
    logits, targets = rng.normal(size=(n, t, v)) * 2, rng.integers(0, v, size=(n, t))
    ignore = [-100, 0][seed % 2]
    if ignore == -100:
        targets[:, -1:] = -100  # padding
    targets[0, 0] = 1  # at least one counted token
    nll, count = 0.0, 0
    for i in range(n):
        for j in range(t):
            if targets[i, j] != ignore:
                nll -= log_softmax(logits[i, j])[targets[i, j]]
                count += 1
    x, y = torch.from_numpy(logits), torch.from_numpy(targets)
    np.testing.assert_allclose(gl.token_cross_entropy(x, y, ignore_index=ignore).item(), nll / count, rtol=1e-10)
    np.testing.assert_allclose(gl.perplexity(x, y, ignore_index=ignore).item(), np.exp(nll / count), rtol=1e-10)
    per = gl.token_cross_entropy(x, y, ignore_index=ignore, reduction="none")
    assert per.shape == (n, t) and bool((per[y == ignore] == 0).all())
    np.testing.assert_allclose(per.sum().item(), nll, rtol=1e-10)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    targets = torch.randint(0, 37, (3, 9))
    assert abs(gl.perplexity(torch.zeros(3, 9, 37), targets).item() - 37) < 1e-4


@pytest.mark.parametrize("seed", SEEDS)
def test_vae_elbo_matches_formula(seed):
    rng = np.random.default_rng(100 + seed)
    n, d, z = int(rng.integers(1, 6)), int(rng.integers(1, 10)), int(rng.integers(1, 5))
    recon_kind, beta = ["bce", "mse"][seed % 2], [1.0, 4.0, 0.0][seed % 3]
    x = rng.uniform(size=(n, 1, d)) if recon_kind == "bce" else rng.normal(size=(n, 1, d))
    r, mu, logvar = rng.normal(size=(n, 1, d)), rng.normal(size=(n, z)), rng.normal(size=(n, z)) * 0.5
    if recon_kind == "bce":
        rec = -(x * -np.logaddexp(0, -r) + (1 - x) * -np.logaddexp(0, r)).reshape(n, -1).sum(1)
    else:
        rec = ((x - r) ** 2).reshape(n, -1).sum(1)
    kl = np.array([sum(-0.5 * (1 + logvar[i, k] - mu[i, k] ** 2 - np.exp(logvar[i, k])) for k in range(z))
                   for i in range(n)])
    args = [torch.from_numpy(a) for a in (r, x, mu, logvar)]
    got = gl.vae_elbo(*args, beta=beta, reconstruction=recon_kind)
    np.testing.assert_allclose(got.item(), np.mean(rec + beta * kl), rtol=1e-10, atol=1e-12)
    terms = gl.vae_elbo(*args, beta=beta, reconstruction=recon_kind, reduction="none", return_terms=True)
    np.testing.assert_allclose(terms["reconstruction"].numpy(), rec, rtol=1e-10)
    np.testing.assert_allclose(terms["kl"].numpy(), kl, rtol=1e-10, atol=1e-12)
    # the KL term against torch.distributions' closed form, an independent code path
    std = torch.exp(0.5 * args[3])
    reference_kl = kl_divergence(Normal(args[2], std), Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(terms["kl"], reference_kl, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", gl.GAN_KINDS)
def test_gan_losses_match_formula(seed, kind):
    rng = np.random.default_rng(200 + seed)
    real, fake = rng.normal(size=int(rng.integers(1, 20))) * 3, rng.normal(size=int(rng.integers(1, 20))) * 3
    if seed % 2:
        real, fake = real.reshape(-1, 1), fake.reshape(-1, 1)
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    if kind == "non_saturating":
        g = np.mean(-np.log(sig(fake)))
        d = np.mean(-np.log(sig(real))) + np.mean(-np.log(1 - sig(fake)))
    elif kind == "hinge":
        g, d = -fake.mean(), np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake))
    else:
        g, d = -fake.mean(), fake.mean() - real.mean()
    rt, ft = torch.from_numpy(real), torch.from_numpy(fake)
    np.testing.assert_allclose(gl.gan_generator(ft, kind=kind).item(), g, rtol=1e-9)
    np.testing.assert_allclose(gl.gan_discriminator(rt, ft, kind=kind).item(), d, rtol=1e-9, atol=1e-12)
    if kind == "non_saturating":  # the discriminator's loss is BCE with real → 1, fake → 0
        bce = (F.binary_cross_entropy_with_logits(rt, torch.ones_like(rt))
               + F.binary_cross_entropy_with_logits(ft, torch.zeros_like(ft)))
        assert torch.allclose(gl.gan_discriminator(rt, ft), bce, rtol=1e-12)


def _tanh_critic(w, v):
    return lambda x: torch.tanh(x.flatten(1) @ w) @ v


@pytest.mark.parametrize("seed", range(8))
def test_gradient_penalty_matches_the_analytic_gradient(seed):
    rng = np.random.default_rng(300 + seed)
    n, d, h = int(rng.integers(1, 6)), int(rng.integers(1, 6)), 4
    real, fake, eps = rng.normal(size=(n, 1, d)), rng.normal(size=(n, 1, d)), rng.uniform(size=n)
    w, v, lam = rng.normal(size=(d, h)), rng.normal(size=h), [10.0, 1.0][seed % 2]
    total = 0.0
    for i in range(n):
        xh = eps[i] * real[i].reshape(-1) + (1 - eps[i]) * fake[i].reshape(-1)
        grad = w @ (v * (1 - np.tanh(xh @ w) ** 2))  # ∇_x Σ_j v_j tanh(x·w_j)
        total += (np.linalg.norm(grad) - 1) ** 2
    critic = _tanh_critic(torch.from_numpy(w), torch.from_numpy(v))
    got = gl.gradient_penalty(critic, torch.from_numpy(real), torch.from_numpy(fake), eps=torch.from_numpy(eps),
                              lambda_gp=lam)
    np.testing.assert_allclose(got.item(), lam * total / n, rtol=1e-10)


def test_gradient_penalty_of_a_linear_critic_and_its_backward():
    torch.manual_seed(0)
    critic = torch.nn.Linear(5, 1).double()
    real, fake = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    penalty = gl.gradient_penalty(critic, real, fake)  # random ε; the gradient of a linear critic is w everywhere
    expected = 10 * (critic.weight.norm() - 1) ** 2
    assert torch.allclose(penalty, expected, rtol=1e-10)
    penalty.backward()
    w = critic.weight.detach()
    assert torch.allclose(critic.weight.grad, 20 * (w.norm() - 1) * w / w.norm(), rtol=1e-8)
    module = gl.LOSSES["gradient_penalty"](lambda_gp=2.0)
    assert torch.allclose(module(critic, real, fake), expected / 5, rtol=1e-10)


def test_gradient_penalty_passes_gradcheck_through_double_backward():
    torch.manual_seed(1)
    real, fake = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    eps = torch.rand(4, dtype=torch.float64)
    w = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, v: gl.gradient_penalty(_tanh_critic(w, v), real, fake, eps=eps), (w, v))


@pytest.mark.parametrize("case", ["vae_bce", "vae_mse", "token", "gan_g", "gan_d_hinge"])
def test_generative_losses_pass_gradcheck(case):
    torch.manual_seed(2)
    r = lambda *s: torch.randn(*s, dtype=torch.float64, requires_grad=True)  # noqa: E731
    if case.startswith("vae"):
        x = torch.rand(3, 4, dtype=torch.float64)
        kind = case.split("_")[1]
        assert torch.autograd.gradcheck(
            lambda rec, mu, lv: gl.vae_elbo(rec, x, mu, lv, beta=2.0, reconstruction=kind), (r(3, 4), r(3, 2), r(3, 2)))
    elif case == "token":
        y = torch.randint(0, 5, (2, 3))
        y[0, 0] = -100
        assert torch.autograd.gradcheck(lambda z: gl.token_cross_entropy(z, y), (r(2, 3, 5),))
    elif case == "gan_g":
        assert torch.autograd.gradcheck(lambda f: gl.gan_generator(f), (r(6),))
    else:
        assert torch.autograd.gradcheck(lambda a, b: gl.gan_discriminator(a, b, kind="hinge"), (r(6), r(4)))


@pytest.mark.parametrize("call,match", [
    (lambda: gl.token_cross_entropy(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long)), r"\(N, T, V\)"),
    (lambda: gl.token_cross_entropy(torch.zeros(2, 5, 7), torch.zeros(2, 4, dtype=torch.long)), r"\(2, 5\)"),
    (lambda: gl.token_cross_entropy(torch.zeros(2, 5, 7), torch.zeros(2, 5)), "integer tensor"),
    (lambda: gl.perplexity(torch.zeros(1, 2, 3), torch.tensor([[0, 3]])), r"\[0, 2\]"),
    (lambda: gl.vae_elbo(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 2)), r"\(N, D\)"),
    (lambda: gl.vae_elbo(torch.zeros(2, 4), torch.zeros(2, 5), torch.zeros(2, 3), torch.zeros(2, 3)), r"\(N, \*\)"),
    (lambda: gl.vae_elbo(torch.zeros(2, 4), torch.full((2, 4), 2.0), torch.zeros(2, 3), torch.zeros(2, 3)),
     r"\[0, 1\]"),
    (lambda: gl.vae_elbo(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 3),
                         reconstruction="l1"), "'bce' or 'mse'"),
    (lambda: gl.gan_generator(torch.zeros(3), kind="lsgan"), "non_saturating, hinge, wasserstein"),
    (lambda: gl.gan_discriminator(torch.zeros(3), torch.zeros(3, dtype=torch.long)), "floating-point"),
    (lambda: gl.gradient_penalty(lambda x: x, torch.zeros(3, 2), torch.zeros(3, 2)), r"\(3,\) or \(3, 1\)"),
    (lambda: gl.gradient_penalty(lambda x: x.sum(1), torch.zeros(3, 2), torch.zeros(3, 2), eps=torch.zeros(2)),
     r"shape \(3,\)"),
    (lambda: gl.gradient_penalty(lambda x: x.sum(1), torch.zeros(3, 2), torch.zeros(4, 2)), "same shape"),
])
def test_bad_inputs_raise_value_errors_naming_what_is_expected(call, match):
    with pytest.raises(ValueError, match=match):
        call()
