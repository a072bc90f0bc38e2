"""Dropout kinds, inverted scaling, MC dropout, stochastic depth, and the residual block orders."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from goodfit.errors import UserError
from goodfit.models.resnet import PostActBlock, PreActBlock, ResNet
from goodfit.nn.drop_path import DropPath, depth_rates, drop_path
from goodfit.nn.dropout import dropout, mc_predict


# ---------------------------------------------------------------- dropout by kind

def test_dropout_kinds_are_torch_s_modules():
    assert isinstance(dropout(0.2), nn.Dropout)
    assert isinstance(dropout(0.2, "spatial", dim=1), nn.Dropout1d)
    assert isinstance(dropout(0.2, "spatial", dim=2), nn.Dropout2d)
    assert isinstance(dropout(0.2, "alpha"), nn.AlphaDropout)
    assert isinstance(dropout(0.0, "spatial", dim=2), nn.Identity)
    with pytest.raises(UserError, match="no channels|has none"):
        dropout(0.2, "spatial", dim=0)
    with pytest.raises(UserError, match="unknown kind"):
        dropout(0.2, "gaussian")


def test_spatial_dropout_drops_whole_channels():
    torch.manual_seed(0)
    x = torch.ones(64, 16, 5, 5)
    out = dropout(0.5, "spatial", dim=2).train()(x)
    per_channel = out.flatten(2)
    # each (sample, channel) map is either all zero or all 1/(1 − p)
    assert torch.all((per_channel == 0).all(-1) | (per_channel == 2.0).all(-1))
    dropped = (per_channel == 0).all(-1).float().mean().item()
    assert abs(dropped - 0.5) < 4 * math.sqrt(0.25 / (64 * 16))


def test_alpha_dropout_keeps_selu_s_zero_mean_unit_variance():
    torch.manual_seed(0)
    x = torch.randn(200_000)
    out = dropout(0.2, "alpha").train()(x)
    _, counts = out.unique(return_counts=True)
    assert counts.max().item() / len(x) == pytest.approx(0.2, abs=0.005)  # dropped units share one value
    assert abs(out.mean().item()) < 0.01 and out.var().item() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("kind, dim", [("standard", 0), ("spatial", 2)])
def test_inverted_dropout_mean_of_train_outputs_matches_eval_output(kind, dim):
    """E[train-mode output] = eval-mode output, checked within 4 standard errors for every output.
    (Alpha dropout keeps the mean and variance of a standardized input as a whole, not of each unit.)"""
    torch.manual_seed(0)
    shape = (1, 6, 4, 4) if dim == 2 else (1, 32)
    layer = dropout(0.5, kind, dim)
    head = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))
    model = nn.Sequential(layer, head)
    x = torch.randn(shape)
    with torch.no_grad():
        expected = model.eval()(x)[0]
        model.train()
        outs = torch.cat([model(x.expand(4000, *shape[1:])) for _ in range(5)])
    mean, se = outs.mean(0), outs.std(0) / math.sqrt(len(outs))
    assert torch.all((mean - expected).abs() < 4 * se), ((mean - expected) / se)
    if kind == "standard":
        # the check can fail: without the 1/(1 − p) scaling the mean is (1 − p) × eval, hundreds of SEs away
        mask_only = outs - head[1].bias  # linear head: remove the bias, then undo the inverted scaling
        unscaled = mask_only.mean(0) * 0.5 + head[1].bias
        assert torch.any((unscaled - expected).abs() > 20 * se)


# ---------------------------------------------------------------- MC dropout

def _mc_model():
    return nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 4))


def test_mc_predict_keeps_batch_norm_in_eval_and_restores_modes():
    torch.manual_seed(0)
    model = _mc_model()
    model.train()
    model(torch.randn(64, 8) * 3 + 1)  # running statistics away from their initial values
    bn = model[1]
    stats = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()
    modes = []
    bn.register_forward_hook(lambda m, i, o: modes.append(m.training))
    x = torch.randn(5, 8)
    mean, var = mc_predict(model, x, samples=200)
    assert modes == [False] * 200  # normalization used its running statistics on every pass
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert bn.num_batches_tracked == stats[2]
    assert model.training and bn.training and model[3].training
    assert mean.shape == var.shape == (5, 4)
    assert torch.allclose(mean.sum(1), torch.ones(5))
    assert torch.all(var > 0)
    # one sample's MC mean equals the mean of the same passes run by hand (eval + dropout on)
    model.eval()
    model[3].train()
    torch.manual_seed(3)
    mean1, _ = mc_predict(model, x[:1], samples=50)
    torch.manual_seed(3)
    with torch.no_grad():
        by_hand = torch.stack([model(x[:1]).softmax(1) for _ in range(50)]).mean(0)
    assert torch.allclose(mean1, by_hand)
    assert not model.training and model[3].training  # the caller's mixed modes are restored too


def test_mc_predict_variance_shrinks_with_the_dropout_rate():
    torch.manual_seed(0)
    model = _mc_model()
    x = torch.randn(50, 8)
    spread = {}
    for p in (0.1, 0.5):
        model[3].p = p
        spread[p] = mc_predict(model, x, samples=100)[1].sum(1).mean().item()
    assert spread[0.1] < spread[0.5]
    model[3].p = 0.0
    with pytest.raises(ValueError, match="no active dropout"):
        mc_predict(model, x)


# ---------------------------------------------------------------- stochastic depth

def test_drop_path_drops_whole_samples_and_is_inverted():
    torch.manual_seed(0)
    x = torch.randn(20_000, 3, 4)
    out = drop_path(x, 0.3)
    kept = (out != 0).flatten(1).any(1)
    assert torch.allclose(out[kept], x[kept] / 0.7) and torch.all(out[~kept] == 0)
    assert abs((~kept).float().mean().item() - 0.3) < 4 * math.sqrt(0.21 / 20_000)
    assert torch.equal(drop_path(x, 0.3, training=False), x)
    layer = DropPath(0.3).eval()
    assert torch.equal(layer(x), x)
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_drop_path_mean_matches_the_input():
    torch.manual_seed(0)
    x = torch.randn(1, 10)
    outs = torch.cat([drop_path(x.expand(50_000, 10), 0.5) for _ in range(2)])
    se = outs.std(0) / math.sqrt(len(outs))
    assert torch.all((outs.mean(0) - x[0]).abs() < 4 * se)


def test_resnet_drop_rates_rise_linearly_with_depth():
    assert depth_rates(0.2, 4) == pytest.approx([0.05, 0.1, 0.15, 0.2])
    model = ResNet((1, 8, 8), 10, width=4, depth=4, drop_path=0.2)
    assert [b.drop_path.p for b in model.blocks] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert all(isinstance(b.drop_path, nn.Identity) for b in ResNet((1, 8, 8), 10, width=4, depth=4).blocks)
    x = torch.randn(6, 1, 8, 8)
    model.eval()
    assert torch.equal(model(x), model(x))  # identity in eval: deterministic


def test_a_dropped_branch_leaves_only_the_skip_path():
    torch.manual_seed(0)
    block = PreActBlock(2, 4, 4, 1, 3, "batch", "relu", 0.0, drop_path=0.999999)
    x = torch.randn(8, 4, 5, 5)
    assert torch.equal(block.train()(x), x)


# ---------------------------------------------------------------- residual orders

@pytest.mark.parametrize("norm_position", ["before_activation", "after_activation"])
def test_pre_activation_trunk_is_an_identity_and_post_activation_trunk_is_not(norm_position):
    """With the branch's last conv zeroed, a pre-activation block returns x and a post-activation one act(x)."""
    torch.manual_seed(0)
    x = torch.randn(4, 6, 5, 5)
    pre = PreActBlock(2, 6, 6, 1, 3, "batch", "relu", 0.0, norm_position=norm_position)
    post = PostActBlock(2, 6, 6, 1, 3, "batch", "relu", 0.0, norm_position=norm_position)
    for block in (pre, post):
        nn.init.zeros_(block.conv2.weight)
    assert torch.equal(pre(x), x)
    assert torch.allclose(post(x), torch.relu(x))


@pytest.mark.parametrize("residual", ["pre", "post"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 16)])
def test_resnet_orders_run_on_images_and_sequences(residual, shape):
    model = ResNet(shape, 5, width=4, depth=4, residual=residual, norm="group", dropout=0.1, dropout_kind="spatial")
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 5)
    blocks = list(model.blocks)
    assert all(isinstance(b, PreActBlock if residual == "pre" else PostActBlock) for b in blocks)
    assert isinstance(blocks[0].drop, nn.Dropout2d if len(shape) == 3 else nn.Dropout1d)
    with pytest.raises(UserError, match="block order"):
        ResNet(shape, 5, residual="middle")
