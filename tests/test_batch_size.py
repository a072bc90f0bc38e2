"""Batch-size toolkit: LR scaling rules, mini-batch gradient noise and the noise scale against closed-form
per-example gradients, the saved-activation memory model against a hand count, the recommendation and its CLI."""
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from goodfit.errors import UserError
from goodfit.optim.batch_size import (critical_batch_size, full_gradient, gradient_noise_scale, gradient_stats,
                                      largest_batch, linear_scaled_lr, nearest_power_of_two, noise_scale_from_norms,
                                      optimizer_slots, parameter_bytes, recommend, saved_activation_bytes,
                                      scaled_lr, scaling_rule, search_largest, sqrt_scaled_lr)

# ---------------------------------------------------------------- scaling rules


def test_linear_and_sqrt_rules():
    assert linear_scaled_lr(0.1, 256, 1024) == pytest.approx(0.4)        # Goyal et al.: 0.1 per 256
    assert linear_scaled_lr(0.1, 256, 64) == pytest.approx(0.025)
    assert sqrt_scaled_lr(0.01, 64, 256) == pytest.approx(0.02)
    assert sqrt_scaled_lr(0.01, 64, 16) == pytest.approx(0.005)
    assert scaling_rule("sgd")[0] == "linear" and scaling_rule("adamw")[0] == "sqrt"
    assert scaled_lr("sgd", 0.1, 32, 128) == pytest.approx(0.4)
    assert scaled_lr("adam", 0.1, 32, 128) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        linear_scaled_lr(0.1, 0, 8)


# ---------------------------------------------------------------- the noise-scale formula


def test_noise_scale_formula_recovers_synthetic_norms():
    # E|G_B|² = |G|² + tr Σ / B exactly: feed the formula those expectations
    grad_sq, trace = 2.0, 30.0
    ns = noise_scale_from_norms(4, grad_sq + trace / 4, 64, grad_sq + trace / 64)
    assert ns.grad_sq == pytest.approx(grad_sq, rel=1e-12)
    assert ns.trace_cov == pytest.approx(trace, rel=1e-12)
    assert ns.b_simple == pytest.approx(15.0, rel=1e-12)
    assert critical_batch_size(ns) == ns.b_simple
    # noise larger than the signal's estimate: |G|² <= 0, B_simple unbounded
    assert noise_scale_from_norms(4, 1.0, 64, 0.01).b_simple == math.inf
    with pytest.raises(ValueError):
        noise_scale_from_norms(64, 1.0, 64, 1.0)


# ---------------------------------------------------------------- against closed-form per-example gradients


def linear_regression(n=256, d=20, seed=0):
    """x, y and an nn.Linear away from the optimum (float64), with MSE's closed-form per-example gradients."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, 1, generator=g, dtype=torch.float64)
    y = x @ w + 0.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.fill_(0.3)
    r = (model(x) - y).detach()
    per_example = 2 * r * torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1)  # ∇(w·x + b − y)² = 2r[x, 1]
    G = per_example.mean(0)
    trace = ((per_example - G) ** 2).sum(1).mean().item()  # tr Σ, Σ = (1/N) Σ_i (g_i − G)(g_i − G)ᵀ
    return model, x, y, G, trace


def test_full_gradient_and_variance_match_per_example_gradients():
    model, x, y, G, trace = linear_regression()
    n = len(x)
    assert torch.allclose(full_gradient(model, nn.MSELoss(), x, y, chunk=100), G, rtol=1e-12, atol=1e-12)
    for batch in (8, 64):
        with_r = gradient_stats(model, nn.MSELoss(), x, y, batch, 2000, torch.Generator().manual_seed(1))
        without = gradient_stats(model, nn.MSELoss(), x, y, batch, 2000, torch.Generator().manual_seed(1),
                                 replacement=False)
        assert with_r.full_sq_norm == pytest.approx(G.dot(G).item(), rel=1e-12)
        # 2000 draws: the relative standard error of these means is below 1.5 % here; tolerance 6 %
        assert with_r.variance == pytest.approx(trace / batch, rel=0.06)
        assert with_r.mean_sq_norm == pytest.approx(G.dot(G).item() + trace / batch, rel=0.06)
        # without replacement the finite-population factor (N − B)/(N − 1) appears (0.75 at B = 64)
        assert without.variance == pytest.approx(trace / batch * (n - batch) / (n - 1), rel=0.06)
    assert without.variance < 0.85 * trace / 64


def test_two_batch_noise_scale_matches_the_exact_one():
    model, x, y, G, trace = linear_regression()
    grad_sq = G.dot(G).item()
    ns = gradient_noise_scale(model, nn.MSELoss(), x, y, 8, 64, 4000, torch.Generator().manual_seed(0))
    # over 20 seeds at 2000 draws the relative errors had sd 1.6 % (|G|²), 2.9 % (tr Σ), 4.3 % (B_simple);
    # at 4000 draws about 0.7× that: these tolerances are ≥ 4.5 sd
    assert ns.grad_sq == pytest.approx(grad_sq, rel=0.06)
    assert ns.trace_cov == pytest.approx(trace, rel=0.10)
    assert ns.b_simple == pytest.approx(trace / grad_sq, rel=0.15)
    assert (ns.b_small, ns.b_big, ns.draws) == (8, 64, 4000)


def test_measurement_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)).train()
    x, y = torch.randn(100, 6), torch.randint(0, 3, (100,))
    nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    a = gradient_stats(model, nn.CrossEntropyLoss(), x, y, 8, 5, torch.Generator().manual_seed(3))
    b = gradient_stats(model, nn.CrossEntropyLoss(), x, y, 8, 5, torch.Generator().manual_seed(3))
    assert model.training
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    # dropout is off while measuring: the same draws give the same numbers, and no global random number is used
    assert a == b and torch.equal(torch.get_rng_state(), rng)


def test_variance_falls_as_one_over_batch_on_digits():
    """The issue's demonstration: mini-batch gradient variance of digits-mlp at initialization ∝ 1/B."""
    from goodfit.recipe import load_recipe
    from goodfit.runner import build, resolve

    parts = build(resolve(load_recipe("digits-mlp", ["train.threads=1"])), progress=False)
    model, loss_fn = parts.trainer.model, parts.trainer.loss_fn
    x, y = parts.data.x_train, parts.data.y_train
    full = full_gradient(model, loss_fn, x, y)
    batches = [4, 8, 16, 32, 64]
    # with replacement, so E|G_B − G|² = tr Σ / B exactly; without it the factor (N − B)/(N − 1) would bend the
    # line down by up to 5 % at B = 64 (N = 1258)
    variances = [gradient_stats(model, loss_fn, x, y, b, 64, torch.Generator().manual_seed(b), full=full).variance
                 for b in batches]
    slope = np.polyfit(np.log(batches), np.log(variances), 1)[0]
    assert -1.2 <= slope <= -0.8, (slope, variances)
    assert all(a > b for a, b in zip(variances, variances[1:]))


# ---------------------------------------------------------------- memory


def test_saved_activations_of_an_mlp_equal_a_hand_count():
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    for batch in (1, 3, 10):
        # the first Linear saves its input x (B·5 floats); ReLU saves its output (B·7), which the second Linear
        # saves again: the same storage, counted once; the weights are parameters, not activations
        assert saved_activation_bytes(model, torch.zeros(batch, 5)) == 4 * batch * (5 + 7)
    wide = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 9), nn.Sigmoid(), nn.Linear(9, 2)).double()
    assert saved_activation_bytes(wide, torch.zeros(4, 5, dtype=torch.float64)) == 8 * 4 * (5 + 7 + 9)


def test_largest_batch_solves_the_budget_exactly_and_is_monotone():
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    fixed = parameter_bytes(model) * (2 + 2)  # weights, gradients, Adam's two moments
    assert fixed == 4 * (5 * 7 + 7 + 7 * 3 + 3) * 4
    previous = 0
    for budget in (fixed + 48, fixed + 1000, fixed + 48 * 300 + 47, fixed + 10**5, 10**6):
        fit = largest_batch(model, (5,), budget, slots=2)
        assert fit.batch_size == (budget - fixed) // 48 and fit.bytes_per_sample == 48
        assert fit.bytes_at_batch == fixed + 48 * fit.batch_size <= budget
        assert fit.power_of_two == 1 << (fit.batch_size.bit_length() - 1)
        assert fit.batch_size >= previous
        previous = fit.batch_size
    assert largest_batch(model, (5,), 10**6, refine=False).batch_size == 16384
    capped = largest_batch(model, (5,), 10**6, max_batch=100)
    assert capped.batch_size == 100 and capped.capped
    with pytest.raises(UserError, match="does not fit one training example"):
        largest_batch(model, (5,), fixed + 47)


def test_memory_probe_leaves_batch_norm_statistics_and_mode_alone():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    fit = largest_batch(model, (4,), 2**20, slots=optimizer_slots("sgd", momentum=0.9))
    assert fit.batch_size > 1000 and not model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_search_by_doubling_then_bisection():
    calls = []

    def fits(b):
        calls.append(b)
        return b <= 37

    assert search_largest(fits, 1000) == (37, 32)
    assert len(calls) <= 1 + 7 + 6  # 1, doublings to 64, then bisection of (32, 64)
    assert search_largest(lambda b: True, 100) == (100, 64)
    assert search_largest(lambda b: b <= 37, 1000, refine=False) == (32, 32)
    assert search_largest(lambda b: False, 100) == (0, 0)
    assert optimizer_slots("adamw") == 2 and optimizer_slots("sgd") == 0 and optimizer_slots("rmsprop", 0.9, True) == 3
    assert [nearest_power_of_two(v) for v in (0.3, 1, 5.9, 90, 95)] == [1, 1, 8, 64, 128]


# ---------------------------------------------------------------- recommendation and CLI


def test_recommend_picks_the_binding_limit_and_scales_the_lr():
    threads = torch.get_num_threads()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    # a memory budget that binds: 0.4 MB of AdamW state and weights + ~3.3 KB per example
    r = recommend("digits-mlp", ["train.threads=1"], budget_mb=0.5, draws=16, warmup_steps=0)
    assert r.fit.batch_size < min(r.max_by_steps, nearest_power_of_two(r.critical_batch))
    assert r.batch_size == r.fit.batch_size >= 1 and "fits" in r.reason
    assert r.rule == "sqrt" and r.lr == pytest.approx(0.003 * math.sqrt(r.batch_size / 64))
    assert r.recipe_patch == {"train.batch_size": r.batch_size, "optimizer.lr": pytest.approx(r.lr, rel=5e-3)}
    assert r.noise_warm is None and r.critical_batch == r.noise.b_simple > 1
    assert r.train_size == 1258 and r.max_by_steps == 1258 // 8
    # global state is as it was: build() seeds every RNG and sets the thread count
    assert torch.get_num_threads() == threads
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])

    # SGD, and a recipe that accumulates 2 × 32: its batch per optimizer step, 64, is the base of the scaling
    sgd = recommend("digits-mlp", ["train.threads=1", "optimizer.name=sgd", "optimizer.lr=0.05", "train.batch_size=32",
                                   "train.accumulate=2"], draws=16, warmup_steps=50)
    assert sgd.rule == "linear" and sgd.base_batch == 64 and sgd.lr == pytest.approx(0.05 * sgd.batch_size / 64)
    assert sgd.recipe_patch["train.accumulate"] == 1
    assert sgd.batch_size == min(sgd.fit.batch_size, sgd.max_by_steps, nearest_power_of_two(sgd.critical_batch))
    assert sgd.noise_warm is not None and sgd.critical_batch == sgd.noise_warm.b_simple


def test_batch_size_command(cli, tmp_path):
    target = tmp_path / "tuned.yaml"
    code, output = cli("batch-size", "digits-mlp", "--set", "train.threads=1", "--draws", "16", "--apply", "-o", target)
    assert code == 0, output
    assert "critical batch" in output and "recommended LR (sqrt rule)" in output
    assert "recommendation: --set train.batch_size=" in output and f"wrote {target}" in output
    from goodfit.recipe import load_recipe

    tuned = load_recipe(target)  # the recipe as written, with its --set overrides and the recommendation
    assert tuned.train.threads == 1 and tuned.name == "digits-mlp"
    assert f"--set train.batch_size={tuned.train.batch_size} --set optimizer.lr={tuned.optimizer.lr:g}" in output
    assert tuned.optimizer.lr == pytest.approx(0.003 * math.sqrt(tuned.train.batch_size / 64), rel=5e-3)

    code, output = cli("batch-size", "no-such-recipe")
    assert code == 2 and "Traceback" not in output and "unknown recipe" in output, output
    code, output = cli("batch-size", "digits-mlp", "--set", "train.threads=1", "--budget-mb", "0.1")
    assert code == 2 and "does not fit one training example" in output, output
