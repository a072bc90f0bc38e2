"""BNNeck: the pre-BN feature and the logits from the post-BN feature, a frozen BN shift, and training with
a triplet loss on the pre-BN feature plus cross-entropy on the logits."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import goodfit.losses as gl
from goodfit.nn import BNNeck

D, CLASSES = 16, 4


def _neck(seed: int = 0) -> BNNeck:
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, D))
    return BNNeck(backbone, nn.Linear(D, CLASSES, bias=False))


def test_outputs_and_features():
    neck = _neck()
    x = torch.randn(8, 10)
    out = neck(x)
    feature, logits = out  # a NamedTuple: unpacks like a plain tuple
    assert feature.shape == (8, D) and logits.shape == (8, CLASSES)
    assert torch.equal(out.feature, neck.backbone(x))
    assert torch.allclose(logits, neck.classifier(nn.functional.batch_norm(
        feature, None, None, neck.neck.weight, neck.neck.bias, training=True)), atol=1e-6)
    neck.eval()
    f = neck.backbone(x)
    assert torch.equal(neck.features(x, "pre"), f)
    expected = (f - neck.neck.running_mean) / torch.sqrt(neck.neck.running_var + neck.neck.eps) * neck.neck.weight
    assert torch.allclose(neck.features(x), expected, atol=1e-6)
    assert torch.equal(neck.features(x, which="post"), neck.features(x))
    with pytest.raises(ValueError, match="'post' or 'pre'"):
        neck.features(x, "middle")
    with pytest.raises(ValueError, match="features=D"):
        BNNeck(nn.Identity(), nn.Sequential(nn.ReLU(), nn.Linear(D, 2)))
    assert BNNeck(nn.Identity(), nn.Sequential(nn.ReLU(), nn.Linear(D, 2)), features=D).neck.num_features == D


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, 10, generator=g) * 1.5
    y = torch.arange(CLASSES).repeat_interleave(16)  # 4 classes × 16: every anchor has positives and negatives
    return centers[y] + torch.randn(len(y), 10, generator=g), y


def test_bias_frozen_and_triplet_plus_cross_entropy_trains():
    neck = _neck()
    assert not neck.neck.bias.requires_grad and neck.neck.weight.requires_grad
    assert torch.equal(neck.neck.bias, torch.zeros(D))
    x, y = _problem()
    opt = torch.optim.Adam([p for p in neck.parameters() if p.requires_grad], lr=0.01)
    weight_before = neck.neck.weight.detach().clone()
    losses = []
    for _ in range(60):
        feature, logits = neck(x)
        loss = gl.batch_hard_triplet(feature, y, margin=0.3) + nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses[::10]
    assert torch.equal(neck.neck.bias, torch.zeros(D)) and neck.neck.bias.grad is None
    assert not torch.equal(neck.neck.weight, weight_before)
    neck.eval()
    with torch.no_grad():
        assert (neck(x).logits.argmax(1) == y).float().mean() > 0.95
        # retrieval with either feature: the nearest other sample shares the label
        for which in ("pre", "post"):
            f = neck.features(x, which)
            d = torch.cdist(f, f).fill_diagonal_(float("inf"))
            assert (y[d.argmin(1)] == y).float().mean() > 0.95, which
