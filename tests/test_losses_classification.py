"""Classification losses (focal, binary focal, class-balanced weights, hinge, KL, distillation, CE with
ignore_index) against float64 NumPy formulas written from the papers, torch's built-ins, and gradcheck."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from goodfit import losses as gl

SEEDS = range(16)


def log_softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = x - x.max(axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis, keepdims=True))


def focal_reference(x, y, gamma, alpha, ignore_index):
    """Lin et al. 2017, softmax form, one position at a time: −α_y (1 − p_y)^γ log p_y, mean Σ/Σα."""
    n, k = x.shape[:2]
    flat_x = np.moveaxis(x, 1, -1).reshape(-1, k)
    flat_y = y.reshape(-1)
    total, norm = 0.0, 0.0
    for row, cls in zip(flat_x, flat_y):
        if cls == ignore_index:
            continue
        logp = log_softmax(row[None])[0][cls]
        a = 1.0 if alpha is None else alpha[cls]
        total += -a * (1 - np.exp(logp)) ** gamma * logp
        norm += a
    return total / norm


@pytest.mark.parametrize("seed", SEEDS)
def test_focal_matches_formula(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 12)), int(rng.integers(2, 6))
    spatial = [(), (3,), (2, 3)][seed % 3]
    x = rng.normal(size=(n, k, *spatial)) * 3
    y = rng.integers(0, k, size=(n, *spatial))
    ignore = -100 if seed % 2 else 7
    y.reshape(-1)[rng.random(y.size) < 0.2] = ignore
    y.reshape(-1)[0] = 0  # at least one position counts
    gamma = [0.0, 0.5, 1.0, 2.0, 5.0][seed % 5]
    alpha = rng.uniform(0.1, 2, size=k) if seed % 4 < 2 else None
    expected = focal_reference(x, y, gamma, alpha, ignore)
    got = gl.focal(torch.from_numpy(x), torch.from_numpy(y), gamma=gamma, ignore_index=ignore,
                   alpha=None if alpha is None else torch.from_numpy(alpha))
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10)
    per = gl.focal(torch.from_numpy(x), torch.from_numpy(y), gamma=gamma, ignore_index=ignore, reduction="none")
    assert per.shape == y.shape and bool((per[torch.from_numpy(y == ignore)] == 0).all())


@pytest.mark.parametrize("seed", range(8))
def test_focal_with_gamma_zero_is_cross_entropy(seed):
    rng = np.random.default_rng(50 + seed)
    x = torch.from_numpy(rng.normal(size=(9, 4, 3)))
    y = torch.from_numpy(rng.integers(0, 4, size=(9, 3)))
    y[0, 0] = -100
    w = torch.from_numpy(rng.uniform(0.2, 3, size=4)) if seed % 2 else None
    expected = F.cross_entropy(x, y, weight=w, ignore_index=-100)
    assert torch.allclose(gl.focal(x, y, gamma=0.0, alpha=w), expected, rtol=1e-12, atol=0)
    assert torch.allclose(gl.cross_entropy(x, y, weight=w), expected, rtol=1e-12, atol=0)


def binary_focal_reference(x, y, gamma, alpha):
    """Sigmoid focal loss with soft labels, as torchvision writes it: BCE·(1 − p_t)^γ·α_t."""
    log_p, log_not_p = -np.logaddexp(0, -x), -np.logaddexp(0, x)
    ce = -(y * log_p + (1 - y) * log_not_p)
    p = np.exp(log_p)
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = loss * (alpha * y + (1 - alpha) * (1 - y))
    return loss.mean()


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_focal_matches_formula(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 30))
    shape = [(n,), (n, 1), (n, 4)][seed % 3]  # binary, binary column, multilabel
    x = rng.normal(size=shape) * 3
    y = rng.integers(0, 2, size=shape).astype(float) if seed % 4 else rng.uniform(size=shape)
    gamma, alpha = [0.0, 1.0, 2.0, 3.5][seed % 4], [None, 0.25, 0.8][seed % 3]
    got = gl.binary_focal(torch.from_numpy(x), torch.from_numpy(y), gamma=gamma, alpha=alpha)
    np.testing.assert_allclose(got.item(), binary_focal_reference(x, y, gamma, alpha), rtol=1e-10)
    if gamma == 0 and alpha is None:
        assert torch.allclose(got, gl.bce_with_logits(torch.from_numpy(x), torch.from_numpy(y)), rtol=1e-12)


def test_binary_focal_takes_integer_and_bool_targets_and_n_by_1_logits():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=20), rng.integers(0, 2, size=20)
    expected = binary_focal_reference(x, y.astype(float), 2.0, 0.25)
    for target in (torch.from_numpy(y), torch.from_numpy(y).bool(), torch.from_numpy(y).reshape(-1, 1)):
        got = gl.binary_focal(torch.from_numpy(x).reshape(-1, 1), target, alpha=0.25)
        np.testing.assert_allclose(got.item(), expected, rtol=1e-10)


@pytest.mark.parametrize("seed", range(10))
def test_class_balanced_weights_match_formula(seed):
    rng = np.random.default_rng(200 + seed)
    counts = rng.integers(1, 5000, size=int(rng.integers(2, 9)))
    beta = [0.0, 0.9, 0.99, 0.999, 0.9999][seed % 5]
    raw = np.array([(1 - beta) / (1 - beta ** float(c)) for c in counts])
    expected = raw / raw.sum() * len(counts)
    got = gl.class_balanced_weights(torch.from_numpy(counts), beta)
    assert got.dtype == torch.float32 and got.shape == (len(counts),)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert abs(got.sum().item() - len(counts)) < 1e-4
    rarest, commonest = counts.argmin(), counts.argmax()
    assert got[rarest] >= got[commonest]


def test_class_balanced_weights_limits():
    counts = [500, 50, 5]
    assert torch.allclose(gl.class_balanced_weights(counts, 0.0), torch.ones(3))
    inverse = 1 / np.array(counts, dtype=float)
    inverse = inverse / inverse.sum() * 3
    np.testing.assert_allclose(gl.class_balanced_weights(counts, 1.0).numpy(), inverse, rtol=1e-6)
    np.testing.assert_allclose(gl.class_balanced_weights(counts, 1 - 1e-9).numpy(), inverse, rtol=1e-4)
    gaps = [np.abs(gl.class_balanced_weights(counts, b).numpy() - inverse).max() for b in (0.9, 0.99, 0.999, 0.9999)]
    assert all(a > b for a, b in zip(gaps, gaps[1:]))  # approaches inverse frequency as β → 1


def test_class_balanced_weights_work_with_ce_and_focal():
    rng = np.random.default_rng(7)
    x, y = torch.from_numpy(rng.normal(size=(40, 3))), torch.from_numpy(rng.integers(0, 3, size=40))
    w = gl.class_balanced_weights(torch.bincount(y, minlength=3), 0.99).double()
    ce = gl.cross_entropy(x, y, weight=w)
    ref = -(w[y] * torch.log_softmax(x, 1)[torch.arange(40), y]).sum() / w[y].sum()
    assert torch.allclose(ce, ref, rtol=1e-12)
    assert torch.allclose(gl.focal(x, y, gamma=0.0, alpha=w), ce, rtol=1e-12)
    module = gl.build_loss("focal", "classification", class_weights=w, gamma=2.0)
    np.testing.assert_allclose(module(x, y).item(), focal_reference(x.numpy(), y.numpy(), 2.0, w.numpy(), -100),
                               rtol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_multi_margin_matches_formula_and_torch(seed):
    rng = np.random.default_rng(300 + seed)
    n, k = int(rng.integers(1, 20)), int(rng.integers(2, 6))
    x, y = rng.normal(size=(n, k)), rng.integers(0, k, size=n)
    p, margin = [1, 2][seed % 2], [1.0, 0.5, 2.0][seed % 3]
    w = rng.uniform(0.2, 2, size=k) if seed % 3 == 0 else None
    total = 0.0
    for i in range(n):
        s = sum(max(0.0, margin - x[i, y[i]] + x[i, j]) ** p for j in range(k) if j != y[i]) / k
        total += s * (1.0 if w is None else w[y[i]])
    wt = None if w is None else torch.from_numpy(w)
    got = gl.multi_margin(torch.from_numpy(x), torch.from_numpy(y), p=p, margin=margin, weight=wt)
    np.testing.assert_allclose(got.item(), total / n, rtol=1e-10)
    torch_ = F.multi_margin_loss(torch.from_numpy(x), torch.from_numpy(y), p=p, margin=margin, weight=wt)
    assert torch.allclose(got, torch_)


@pytest.mark.parametrize("seed", SEEDS)
def test_kl_div_matches_formula_and_torch(seed):
    rng = np.random.default_rng(400 + seed)
    n, k = int(rng.integers(1, 20)), int(rng.integers(2, 6))
    x, t = rng.normal(size=(n, k)) * 2, rng.dirichlet(np.ones(k), size=n)
    t[0, 0] = 0.0  # 0·log 0 = 0
    t[0] /= t[0].sum()
    logq = log_softmax(x)
    per = np.array([sum(t[i, j] * (np.log(t[i, j]) - logq[i, j]) for j in range(k) if t[i, j] > 0) for i in range(n)])
    got = gl.kl_div(torch.from_numpy(x), torch.from_numpy(t))
    np.testing.assert_allclose(got.item(), per.mean(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(gl.kl_div(torch.from_numpy(x), torch.from_numpy(t), reduction="none").numpy(), per,
                               rtol=1e-10, atol=1e-14)
    builtin = F.kl_div(torch.log_softmax(torch.from_numpy(x), 1), torch.from_numpy(t), reduction="batchmean")
    assert torch.allclose(got, builtin, rtol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_distillation_matches_hinton(seed):
    rng = np.random.default_rng(500 + seed)
    n, k = int(rng.integers(1, 20)), int(rng.integers(2, 6))
    s, t, y = rng.normal(size=(n, k)) * 2, rng.normal(size=(n, k)) * 2, rng.integers(0, k, size=n)
    temperature, alpha = [1.0, 2.0, 4.0, 10.0][seed % 4], [1.0, 0.5, 0.9, 0.0][(seed // 4) % 4]
    pt = np.exp(log_softmax(t / temperature))
    kl = (pt * (np.log(pt) - log_softmax(s / temperature))).sum(1)
    ce = -log_softmax(s)[np.arange(n), y]
    expected = np.mean(alpha * temperature**2 * kl + (1 - alpha) * ce)
    got = gl.distillation(torch.from_numpy(s), torch.from_numpy(t), torch.from_numpy(y),
                          temperature=temperature, alpha=alpha)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10, atol=1e-14)


def test_distillation_treats_the_teacher_as_constant_and_needs_labels_to_mix():
    s = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    gl.distillation(s, t, alpha=1.0).backward()
    assert s.grad is not None and t.grad is None
    with pytest.raises(ValueError, match=r"target, class indices of shape \(N,\)"):
        gl.distillation(s, t, alpha=0.5)
    module = gl.LOSSES["distillation"](temperature=3.0, alpha=0.7)
    y = torch.randint(0, 3, (5,))
    assert torch.allclose(module(s, t, y), gl.distillation(s, t, y, temperature=3.0, alpha=0.7))


def test_cross_entropy_ignore_index_matches_formula():
    rng = np.random.default_rng(9)
    x, y, w = rng.normal(size=(30, 4)), rng.integers(0, 4, size=30), rng.uniform(0.5, 2, size=4)
    y[::3] = 255
    keep = y != 255
    logp = log_softmax(x[keep])
    expected = (w[y[keep]] * -logp[np.arange(keep.sum()), y[keep]]).sum() / w[y[keep]].sum()
    got = gl.cross_entropy(torch.from_numpy(x), torch.from_numpy(y), weight=torch.from_numpy(w), ignore_index=255)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10)
    module = gl.build_loss("cross_entropy", "segmentation", ignore_index=255)
    seg_x = torch.from_numpy(rng.normal(size=(2, 4, 3, 3)))
    seg_y = torch.from_numpy(rng.integers(0, 4, size=(2, 3, 3)))
    assert torch.allclose(module(seg_x, seg_y), F.cross_entropy(seg_x, seg_y))


@pytest.mark.parametrize("fn,args", [
    ("focal", lambda: (torch.randn(6, 4, dtype=torch.float64, requires_grad=True), torch.randint(0, 4, (6,)))),
    ("focal_spatial", lambda: (torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True),
                                 torch.randint(0, 3, (2, 4)))),
    ("binary_focal", lambda: (torch.randn(7, 3, dtype=torch.float64, requires_grad=True),
                                torch.rand(7, 3, dtype=torch.float64))),
    ("distillation", lambda: (torch.randn(5, 4, dtype=torch.float64, requires_grad=True),
                                torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 4, (5,)))),
    ("kl_div", lambda: (torch.randn(5, 4, dtype=torch.float64, requires_grad=True),
                          torch.softmax(torch.randn(5, 4, dtype=torch.float64), 1))),
])
@pytest.mark.parametrize("gamma", [1.0, 2.0, 0.5])
def test_hand_written_classification_losses_pass_gradcheck(fn, args, gamma):
    torch.manual_seed(int(gamma * 10))
    inputs = args()
    options = {"focal": {"gamma": gamma, "alpha": torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)},
               "focal_spatial": {"gamma": gamma},
               "binary_focal": {"gamma": gamma, "alpha": 0.3},
               "distillation": {"temperature": 1 + gamma, "alpha": 0.6},
               "kl_div": {}}[fn]
    f = getattr(gl, fn.replace("_spatial", ""))
    assert torch.autograd.gradcheck(lambda first: f(first, *inputs[1:], **options), (inputs[0],))


@pytest.mark.parametrize("call,match", [
    (lambda: gl.focal(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long)), r"shape \(4,\), got \(5,\)"),
    (lambda: gl.focal(torch.zeros(4, 3), torch.zeros(4)), "integer tensor"),
    (lambda: gl.focal(torch.zeros(4, 3), torch.tensor([0, 1, 2, 3])), r"\[0, 2\]"),
    (lambda: gl.focal(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), alpha=torch.ones(2)), r"shape \(3,\)"),
    (lambda: gl.focal(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), gamma=-1), r">= 0"),
    (lambda: gl.focal(torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long)), "floating-point"),
    (lambda: gl.binary_focal(torch.zeros(4), torch.tensor([0.0, 1.0, 2.0, 0.0])), r"\[0, 1\]"),
    (lambda: gl.binary_focal(torch.zeros(4, 1), torch.zeros(3)), r"\(4, 1\)"),
    (lambda: gl.binary_focal(torch.zeros(4), torch.zeros(4), alpha=1.5), r"alpha must be a number in \[0, 1\]"),
    (lambda: gl.bce_with_logits(torch.zeros(3), torch.tensor([0.0, -1.0, 1.0])), r"\[0, 1\]"),
    (lambda: gl.cross_entropy(torch.zeros(4, 3), torch.tensor([0, 1, 5, 2])), r"\[0, 2\]"),
    (lambda: gl.cross_entropy(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), weight=torch.ones(4)),
     r"shape \(3,\)"),
    (lambda: gl.class_balanced_weights([[1, 2]], 0.9), r"shape \(K,\)"),
    (lambda: gl.class_balanced_weights([10, 0], 0.9), ">= 1"),
    (lambda: gl.class_balanced_weights([10, 3], 1.5), r"\[0, 1\]"),
    (lambda: gl.multi_margin(torch.zeros(4, 3, 2), torch.zeros(4, 2, dtype=torch.long)), r"\(N, K\)"),
    (lambda: gl.multi_margin(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), p=3), "1 or 2"),
    (lambda: gl.kl_div(torch.zeros(4, 3), torch.full((4, 2), 0.5)), r"shape \(4, 3\)"),
    (lambda: gl.kl_div(torch.zeros(2, 3), torch.ones(2, 3) * 0.5), "sum to 1"),
    (lambda: gl.distillation(torch.zeros(4, 3), torch.zeros(4, 2), alpha=1.0), r"shape \(4, 3\)"),
    (lambda: gl.distillation(torch.zeros(4, 3), torch.zeros(4, 3), temperature=0, alpha=1.0), "> 0"),
])
def test_bad_inputs_raise_value_errors_naming_what_is_expected(call, match):
    with pytest.raises(ValueError, match=match):
        call()
