"""Losses against independent float64 NumPy formulas; shape and recipe errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from goodfit import losses as gl
from goodfit.errors import UserError

SEEDS = range(60)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    shifted = x - x.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def ce_reference(x, y, smoothing, weight) -> float:
    """Mean weighted, label-smoothed cross-entropy of class indices (torch's normalization: sum of target weights)."""
    n, k = x.shape
    w = np.ones(k) if weight is None else weight
    logp = log_softmax(x)
    nll = -logp[np.arange(n), y]
    smooth = -(logp * w).sum(1)
    return float(((1 - smoothing) * (w[y] * nll).sum() + smoothing / k * smooth.sum()) / w[y].sum())


def bce_reference(x, y, pos_weight) -> float:
    """Mean binary cross-entropy on logits, using log σ(x) = -log(1 + e^-x)."""
    log_p, log_not_p = -np.logaddexp(0, -x), -np.logaddexp(0, x)
    return float(np.mean(-(pos_weight * y * log_p + (1 - y) * log_not_p)))


def huber_reference(p, y, delta) -> float:
    """Mean Huber loss: quadratic inside delta, linear outside."""
    e = np.abs(p - y)
    return float(np.mean(np.where(e <= delta, 0.5 * e**2, delta * (e - 0.5 * delta))))


@pytest.mark.parametrize("seed", SEEDS)
def test_cross_entropy_matches_formula(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 40)), int(rng.integers(2, 8))
    x, y = rng.normal(size=(n, k)) * 3, rng.integers(0, k, size=n)
    smoothing = [0.0, 0.1, 0.35][seed % 3]
    weight = rng.uniform(0.2, 3, size=k) if seed % 2 else None
    expected = ce_reference(x, y, smoothing, weight)
    w = None if weight is None else torch.from_numpy(weight)
    got = gl.cross_entropy(torch.from_numpy(x), torch.from_numpy(y), label_smoothing=smoothing, weight=w)
    assert abs(got.item() - expected) <= 1e-10
    module = gl.build_loss("cross_entropy", "classification", label_smoothing=smoothing,
                           class_weights=None if weight is None else weight.tolist())
    assert abs(module(torch.from_numpy(x).float(), torch.from_numpy(y)).item() - expected) <= 1e-5


@pytest.mark.parametrize("seed", SEEDS)
def test_cross_entropy_soft_targets_match_formula(seed):
    rng = np.random.default_rng(100 + seed)
    n, k = int(rng.integers(1, 40)), int(rng.integers(2, 8))
    x, t = rng.normal(size=(n, k)), rng.dirichlet(np.ones(k), size=n)  # mixup-style targets
    smoothing = [0.0, 0.2][seed % 2]
    t_smooth = t * (1 - smoothing) + smoothing / k
    expected = float(np.mean(-(t_smooth * log_softmax(x)).sum(1)))
    got = gl.cross_entropy(torch.from_numpy(x), torch.from_numpy(t), label_smoothing=smoothing)
    assert abs(got.item() - expected) <= 1e-10


@pytest.mark.parametrize("seed", SEEDS)
def test_bce_with_logits_matches_formula(seed):
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(1, 50))
    x, y = rng.normal(size=n) * 4, rng.integers(0, 2, size=n)
    pos_weight = [1.0, 0.3, 4.0][seed % 3]
    expected = bce_reference(x, y, pos_weight)
    logits = torch.from_numpy(x).reshape(-1, 1) if seed % 2 else torch.from_numpy(x)
    target = [torch.from_numpy(y), torch.from_numpy(y).bool(), torch.from_numpy(y).float(),
              torch.from_numpy(y).reshape(-1, 1)][seed % 4]
    got = gl.bce_with_logits(logits, target, pos_weight=torch.tensor(pos_weight, dtype=torch.float64))
    assert abs(got.item() - expected) <= 1e-10


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_losses_match_formulas(seed):
    rng = np.random.default_rng(300 + seed)
    n, d = int(rng.integers(1, 50)), [1, 1, 3][seed % 3]
    p, y = rng.normal(size=(n, d)) * 2, rng.normal(size=(n, d)) * 2
    delta = [1.0, 0.3, 2.5][seed % 3]
    expected = {"mse": np.mean((p - y) ** 2), "l1": np.mean(np.abs(p - y)), "huber": huber_reference(p, y, delta)}
    pred, target = torch.from_numpy(p), torch.from_numpy(y)
    if d == 1 and seed % 2:  # (N, 1) predictions against (N,) targets must not broadcast to (N, N)
        target = target.reshape(-1)
    assert abs(gl.mse(pred, target).item() - expected["mse"]) <= 1e-10
    assert abs(gl.l1(pred, target).item() - expected["l1"]) <= 1e-10
    assert abs(gl.huber(pred, target, delta=delta).item() - expected["huber"]) <= 1e-10
    if d == 1:  # and the other way round
        assert abs(gl.mse(pred.reshape(-1), target.reshape(-1, 1)).item() - expected["mse"]) <= 1e-10


def test_reduction_none_gives_per_sample_losses():
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 4, (6,))
    per_sample = gl.cross_entropy(x, y, reduction="none")
    assert per_sample.shape == (6,)
    assert torch.allclose(per_sample.mean(), gl.cross_entropy(x, y))


@pytest.mark.parametrize("call,match", [
    (lambda: gl.cross_entropy(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long)), r"shape \(4,\), got \(5,\)"),
    (lambda: gl.cross_entropy(torch.zeros(4), torch.zeros(4, dtype=torch.long)), r"\(N, K\)"),
    (lambda: gl.cross_entropy(torch.zeros(4, 3), torch.zeros(4)), "integers"),
    (lambda: gl.bce_with_logits(torch.zeros(4, 1), torch.zeros(5)), r"\(4, 1\)"),
    (lambda: gl.bce_with_logits(torch.zeros(4, 2), torch.zeros(4)), r"\(4, 2\)"),
    (lambda: gl.mse(torch.zeros(4, 2), torch.zeros(4)), r"\(4, 2\)"),
    (lambda: gl.huber(torch.zeros(3), torch.zeros(4)), r"\(3,\)"),
])
def test_shape_mismatch_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_unknown_loss_is_a_user_error_with_a_hint():
    with pytest.raises(UserError, match="unknown loss 'cross_entropie'") as info:
        gl.build_loss("cross_entropie", "classification")
    assert "did you mean 'cross_entropy'" in info.value.hint


def test_unknown_option_names_the_accepted_ones():
    with pytest.raises(UserError, match="accepts: label_smoothing, weight, reduction") as info:
        gl.build_loss("cross_entropy", "classification", label_smothing=0.1)
    assert "did you mean 'label_smoothing'" in info.value.hint
    with pytest.raises(UserError, match="does not accept option 'label_smoothing'"):
        gl.build_loss("mse", "regression", label_smoothing=0.1)


def test_option_values_are_checked():
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        gl.build_loss("cross_entropy", "classification", label_smoothing=1.5)
    with pytest.raises(UserError, match="positive"):
        gl.build_loss("huber", "regression", delta=0)
    with pytest.raises(UserError, match="non-negative"):
        gl.build_loss("cross_entropy", "classification", weight=[1.0, -2.0])


@pytest.mark.parametrize("name,task", [("mse", "classification"), ("cross_entropy", "regression"),
                                       ("cross_entropy", "binary"), ("bce_with_logits", "classification")])
def test_loss_unsuited_to_the_task_is_a_user_error(name, task):
    with pytest.raises(UserError, match=f"'{name}' does not fit task '{task}'") as info:
        gl.build_loss(name, task)
    assert gl.TASK_DEFAULT_LOSS[task] in info.value.hint


def test_default_losses_build_as_modules():
    for task, name in gl.TASK_DEFAULT_LOSS.items():
        module = gl.build_loss(name, task)
        assert isinstance(module, nn.Module) and module.name == name
    assert isinstance(gl.LOSSES["huber"](delta=0.5), nn.Module)


def test_binary_class_weights_become_a_relative_pos_weight():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.integers(0, 2, size=30)
    module = gl.build_loss("bce_with_logits", "binary", class_weights=torch.tensor([2.0, 6.0]))
    got = module(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert abs(got - bce_reference(x, y, 3.0)) <= 1e-6
    with pytest.raises(UserError, match="two values"):
        gl.build_loss("bce_with_logits", "binary", class_weights=[1.0, 2.0, 3.0])
    with pytest.raises(UserError, match="not both"):
        gl.build_loss("bce_with_logits", "binary", class_weights=[1.0, 2.0], pos_weight=2.0)
    with pytest.raises(UserError, match="classification losses"):
        gl.build_loss("mse", "regression", class_weights=[1.0, 2.0])


def test_weights_follow_the_module_across_dtypes():
    module = gl.build_loss("cross_entropy", "classification", class_weights=[1.0, 2.0, 3.0]).double()
    assert module.weight.dtype == torch.float64
    assert module.state_dict() == {}  # derived from the data, so not part of a checkpoint
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 3, (5,))
    assert abs(module(x, y).item() - ce_reference(x.numpy(), y.numpy(), 0.0, np.array([1.0, 2.0, 3.0]))) <= 1e-10
