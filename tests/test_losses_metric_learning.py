"""Metric-learning losses (contrastive, triplet, batch-hard triplet, InfoNCE) against float64 NumPy loops
written from the papers, torch's triplet_margin_loss, and gradcheck."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from goodfit import losses as gl

SEEDS = range(16)


@pytest.mark.parametrize("seed", SEEDS)
def test_contrastive_matches_hadsell(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(1, 20)), int(rng.integers(1, 6))
    a, b, same = rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng.integers(0, 2, size=n)
    margin = [1.0, 2.0, 4.0][seed % 3]
    total = 0.0
    for i in range(n):
        dist = np.sqrt(((a[i] - b[i]) ** 2).sum())
        total += 0.5 * dist**2 if same[i] else 0.5 * max(0.0, margin - dist) ** 2
    labels = [torch.from_numpy(same), torch.from_numpy(same).bool(), torch.from_numpy(same).double()][seed % 3]
    got = gl.contrastive(torch.from_numpy(a), torch.from_numpy(b), labels, margin=margin)
    np.testing.assert_allclose(got.item(), total / n, rtol=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
def test_triplet_matches_formula_and_torch(seed):
    rng = np.random.default_rng(100 + seed)
    n, d = int(rng.integers(1, 20)), int(rng.integers(1, 6))
    a, p, neg = (rng.normal(size=(n, d)) for _ in range(3))
    margin, norm = [1.0, 0.2, 3.0][seed % 3], [2.0, 1.0][seed % 2]
    dist = lambda u, v: (np.abs(u - v + 1e-6) ** norm).sum(-1) ** (1 / norm)  # noqa: E731  torch adds eps=1e-6
    expected = np.mean(np.maximum(0, dist(a, p) - dist(a, neg) + margin))
    args = [torch.from_numpy(t) for t in (a, p, neg)]
    got = gl.triplet(*args, margin=margin, p=norm)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10)
    assert torch.allclose(got, F.triplet_margin_loss(*args, margin=margin, p=norm))


def batch_hard_reference(x, y, margin):
    """Hermans et al. 2017, anchor by anchor: hardest positive and hardest negative by explicit search."""
    losses = []
    for i in range(len(x)):
        pos = [np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if j != i and y[j] == y[i]]
        neg = [np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if y[j] != y[i]]
        if pos and neg:
            losses.append(max(0.0, margin + max(pos) - min(neg)))
    return np.mean(losses) if losses else 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_hard_triplet_matches_hermans(seed):
    rng = np.random.default_rng(200 + seed)
    n, d = int(rng.integers(2, 16)), int(rng.integers(1, 6))
    x, y = rng.normal(size=(n, d)), rng.integers(0, [2, 3, 5][seed % 3], size=n)
    margin = [0.5, 1.0, 3.0][seed % 3]
    got = gl.batch_hard_triplet(torch.from_numpy(x), torch.from_numpy(y), margin=margin)
    np.testing.assert_allclose(got.item(), batch_hard_reference(x, y, margin), rtol=1e-8, atol=1e-12)


def test_batch_hard_triplet_leaves_out_anchors_without_positive_or_negative():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]], dtype=torch.float64)
    per = gl.batch_hard_triplet(x, torch.tensor([0, 0, 1]), margin=10.0, reduction="none")
    assert per[2] == 0 and per[0] > 0 and per[1] > 0  # anchor 2 has no positive
    assert gl.batch_hard_triplet(x, torch.tensor([1, 1, 1])).item() == 0  # no negatives anywhere


def info_nce_reference(q, k, temperature, normalize, symmetric):
    if normalize:
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        k = k / np.linalg.norm(k, axis=1, keepdims=True)
    s = q @ k.T / temperature
    n = len(q)
    forward = [-(s[i, i] - np.log(np.exp(s[i]).sum())) for i in range(n)]
    if not symmetric:
        return np.mean(forward)
    backward = [-(s[i, i] - np.log(np.exp(s[:, i]).sum())) for i in range(n)]
    return np.mean((np.array(forward) + np.array(backward)) / 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_info_nce_matches_oord(seed):
    rng = np.random.default_rng(300 + seed)
    n, d = int(rng.integers(1, 12)), int(rng.integers(1, 8))
    q, k = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    temperature, normalize, symmetric = [0.07, 0.5, 1.0][seed % 3], bool(seed % 2), bool(seed % 4 < 2)
    got = gl.info_nce(torch.from_numpy(q), torch.from_numpy(k), temperature=temperature, normalize=normalize,
                      symmetric=symmetric)
    np.testing.assert_allclose(got.item(), info_nce_reference(q, k, temperature, normalize, symmetric), rtol=1e-10)


@pytest.mark.parametrize("case", ["contrastive", "batch_hard_triplet", "info_nce", "info_nce_symmetric", "triplet"])
def test_metric_losses_pass_gradcheck(case):
    torch.manual_seed(3)
    r = lambda *s: torch.randn(*s, dtype=torch.float64, requires_grad=True)  # noqa: E731
    if case == "contrastive":
        same = torch.tensor([1, 0, 1, 0, 0])
        assert torch.autograd.gradcheck(lambda a, b: gl.contrastive(a, b, same, margin=3.0), (r(5, 3), r(5, 3)))
    elif case == "batch_hard_triplet":
        y = torch.tensor([0, 0, 1, 1, 2, 2])
        assert torch.autograd.gradcheck(lambda x: gl.batch_hard_triplet(x, y, margin=5.0), (r(6, 3),))
    elif case == "triplet":
        assert torch.autograd.gradcheck(lambda a, p, n: gl.triplet(a, p, n, margin=5.0), (r(4, 3), r(4, 3), r(4, 3)))
    else:
        sym = case.endswith("symmetric")
        assert torch.autograd.gradcheck(lambda q, k: gl.info_nce(q, k, temperature=0.5, symmetric=sym),
                                        (r(5, 4), r(5, 4)))


@pytest.mark.parametrize("call,match", [
    (lambda: gl.contrastive(torch.zeros(4, 2), torch.zeros(4, 3), torch.zeros(4)), r"\(4, 2\)"),
    (lambda: gl.contrastive(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(3)), r"shape \(4,\)"),
    (lambda: gl.contrastive(torch.zeros(4, 2), torch.zeros(4, 2), torch.full((4,), 2)), r"\[0, 1\]"),
    (lambda: gl.contrastive(torch.zeros(4), torch.zeros(4), torch.zeros(4)), r"\(N, D\)"),
    (lambda: gl.triplet(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(3, 2)), r"\(4, 2\)"),
    (lambda: gl.batch_hard_triplet(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long)), r"shape \(4,\)"),
    (lambda: gl.batch_hard_triplet(torch.zeros(4, 2), torch.zeros(4)), "integer tensor"),
    (lambda: gl.info_nce(torch.zeros(4, 2), torch.zeros(5, 2)), r"\(4, 2\)"),
    (lambda: gl.info_nce(torch.zeros(4, 2), torch.zeros(4, 2), temperature=0.0), "> 0"),
])
def test_bad_inputs_raise_value_errors_naming_what_is_expected(call, match):
    with pytest.raises(ValueError, match=match):
        call()
