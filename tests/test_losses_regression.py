"""Regression losses (MAE, Smooth-L1, Huber, log-cosh, quantile) against float64 NumPy formulas, torch's
built-ins and gradcheck; the quantile loss's minimizer is the empirical quantile."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from goodfit import losses as gl

SEEDS = range(16)


def pinball_reference(pred, y, taus):
    """Koenker's check function, one term at a time: τu if u ≥ 0 else (τ − 1)u, u = y − ŷ."""
    total, count = 0.0, 0
    for i in range(pred.shape[0]):
        for q, tau in enumerate(taus):
            u = y[i] - pred[i, q]
            total += tau * u if u >= 0 else (tau - 1) * u
            count += 1
    return total / count


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_losses_match_formulas_and_torch(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(1, 40)), [1, 1, 3][seed % 3]
    p, y = rng.normal(size=(n, d)) * 3, rng.normal(size=(n, d)) * 3
    beta, delta = [1.0, 0.3, 2.5, 0.0][seed % 4], [1.0, 0.3, 2.5][seed % 3]
    e = p - y
    pred, target = torch.from_numpy(p), torch.from_numpy(y)
    if d == 1 and seed % 2:
        target = target.reshape(-1)
    smooth = np.where(np.abs(e) < beta, 0.5 * e**2 / max(beta, 1e-300), np.abs(e) - 0.5 * beta)
    huber = np.where(np.abs(e) <= delta, 0.5 * e**2, delta * (np.abs(e) - 0.5 * delta))
    np.testing.assert_allclose(gl.mae(pred, target).item(), np.abs(e).mean(), rtol=1e-12)
    assert gl.l1 is gl.mae
    np.testing.assert_allclose(gl.smooth_l1(pred, target, beta=beta).item(), smooth.mean(), rtol=1e-12)
    np.testing.assert_allclose(gl.huber(pred, target, delta=delta).item(), huber.mean(), rtol=1e-12)
    np.testing.assert_allclose(gl.log_cosh(pred, target).item(), np.log(np.cosh(e)).mean(), rtol=1e-10)
    t = torch.from_numpy(y)
    assert torch.allclose(gl.smooth_l1(pred, target, beta=beta), F.smooth_l1_loss(pred, t, beta=beta))
    assert torch.allclose(gl.huber(pred, target, delta=delta), F.huber_loss(pred, t, delta=delta))
    if beta > 0:  # huber(δ) = δ·smooth_l1(β = δ)
        assert torch.allclose(gl.huber(pred, target, delta=beta), beta * gl.smooth_l1(pred, target, beta=beta))


def test_log_cosh_is_stable_for_large_errors():
    e = torch.tensor([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=torch.float32, requires_grad=True)
    loss = gl.log_cosh(e, torch.zeros(5), reduction="none")
    expected = torch.tensor([1e4, 100.0, 0.0, 100.0, 1e4]) - np.log(2)
    expected[2] = 0.0
    assert torch.isfinite(loss).all() and torch.allclose(loss, expected, rtol=1e-6, atol=1e-6)
    loss.sum().backward()
    assert torch.allclose(e.grad, torch.tanh(e.detach()))


@pytest.mark.parametrize("seed", SEEDS)
def test_quantile_matches_formula(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 30))
    taus = [[0.5], [0.1], [0.9], [0.1, 0.5, 0.9], [0.05, 0.95]][seed % 5]
    pred, y = rng.normal(size=(n, len(taus))), rng.normal(size=n)
    expected = pinball_reference(pred, y, taus)
    tau = taus[0] if len(taus) == 1 else taus
    target = torch.from_numpy(y).reshape(-1, 1) if seed % 2 else torch.from_numpy(y)
    got = gl.quantile(torch.from_numpy(pred), target, tau=tau)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12)
    assert gl.pinball is gl.quantile
    assert gl.quantile(torch.from_numpy(pred), target, tau=tau, reduction="none").shape == pred.shape
    if len(taus) == 1:  # one τ: same shapes, any layout
        np.testing.assert_allclose(gl.quantile(torch.from_numpy(pred[:, 0]), torch.from_numpy(y), tau=tau).item(),
                                   expected, rtol=1e-12)


@pytest.mark.parametrize("tau", [0.1, 0.25, 0.5, 0.73, 0.9])
def test_quantile_loss_minimizer_is_the_empirical_quantile(tau):
    y = np.random.default_rng(int(tau * 100)).standard_t(3, size=101)  # N·τ is never an integer: one minimizer
    target = torch.from_numpy(y)

    def loss(c: float) -> float:
        return gl.quantile(torch.full((101,), c, dtype=torch.float64), target, tau=tau).item()

    best = minimize_scalar(loss, bounds=(y.min(), y.max()), method="bounded", options={"xatol": 1e-10}).x
    assert abs(best - np.quantile(y, tau, method="inverted_cdf")) < 1e-6


def test_quantile_loss_gradient_descent_reaches_the_quantile():
    y = torch.from_numpy(np.random.default_rng(0).normal(size=1001))
    c = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([c], lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / 400)
    for _ in range(400):
        opt.zero_grad()
        gl.quantile(c.expand(1001, 3), y, tau=[0.1, 0.5, 0.9]).backward()
        opt.step()
        sched.step()
    expected = np.quantile(y.numpy(), [0.1, 0.5, 0.9])
    np.testing.assert_allclose(c.detach().numpy(), expected, atol=0.01)


@pytest.mark.parametrize("fn,options", [("log_cosh", {}), ("quantile", {"tau": 0.3}),
                                         ("quantile", {"tau": [0.2, 0.5, 0.8]}), ("mae", {}),
                                         ("smooth_l1", {"beta": 0.5})])
def test_regression_losses_pass_gradcheck(fn, options):
    torch.manual_seed(0)
    q = len(options["tau"]) if isinstance(options.get("tau"), list) else 1
    pred = torch.randn(6, q, dtype=torch.float64, requires_grad=True)
    target = torch.randn(6, dtype=torch.float64) if q > 1 else torch.randn(6, 1, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: getattr(gl, fn)(p, target, **options), (pred,))


@pytest.mark.parametrize("call,match", [
    (lambda: gl.quantile(torch.zeros(4, 2), torch.zeros(4), tau=[0.1, 0.5, 0.9]), r"shape \(N, 3\)"),
    (lambda: gl.quantile(torch.zeros(4, 3), torch.zeros(4, 3), tau=[0.1, 0.5, 0.9]), r"\(4,\) or \(4, 1\)"),
    (lambda: gl.quantile(torch.zeros(4), torch.zeros(4), tau=1.5), r"\(0, 1\)"),
    (lambda: gl.quantile(torch.zeros(4), torch.zeros(4), tau=[]), r"\(0, 1\)"),
    (lambda: gl.quantile(torch.zeros(4), torch.zeros(5)), r"\(4,\)"),
    (lambda: gl.log_cosh(torch.zeros(4, 2), torch.zeros(4)), r"\(4, 2\)"),
    (lambda: gl.smooth_l1(torch.zeros(4), torch.zeros(4), beta=-1.0), ">= 0"),
    (lambda: gl.huber(torch.zeros(4), torch.zeros(4), delta=0.0), "> 0"),
    (lambda: gl.mae(torch.zeros(4, dtype=torch.long), torch.zeros(4)), "floating-point"),
    (lambda: gl.mse(torch.zeros(4), torch.zeros(4), reduction="avg"), "mean, sum, none"),
])
def test_bad_inputs_raise_value_errors_naming_what_is_expected(call, match):
    with pytest.raises(ValueError, match=match):
        call()
