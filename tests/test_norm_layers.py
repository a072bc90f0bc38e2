"""Normalization by name (`model.norm`) equals torch's functional references, and `model.norm_position`
really changes the order of the layers in mlp, cnn and cnn1d."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from goodfit.errors import UserError
from goodfit.models.convnet import ConvNet
from goodfit.models.layers import norm
from goodfit.models.mlp import MLP

C = 12
SHAPES = {0: (7, C), 1: (5, C, 9), 2: (4, C, 6, 5)}  # feature vectors, sequences, images


def _random_affine(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(layer.weight.shape, generator=g) + 0.5)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g))
    return layer.weight.detach(), layer.bias.detach()


def _per_channel(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, *([1] * (x.dim() - 2)))


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_batch_norm_is_f_batch_norm(dim):
    layer = norm("batch", C, dim)
    w, b = _random_affine(layer)
    x = torch.randn(*SHAPES[dim]) * 2 + 1
    assert torch.allclose(layer(x), F.batch_norm(x, None, None, w, b, training=True), atol=1e-6)
    layer.eval()
    rm, rv = layer.running_mean.clone(), layer.running_var.clone()
    assert torch.allclose(layer(x), F.batch_norm(x, rm, rv, w, b, training=False), atol=1e-6)


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_layer_norm_is_f_layer_norm_over_every_axis_but_the_batch(dim):
    layer = norm("layer", C, dim)
    w, b = _random_affine(layer)
    x = torch.randn(*SHAPES[dim]) * 3 - 1
    # the affine part is per channel (one γ, β per feature map), applied after normalizing over (C, *spatial)
    expected = F.layer_norm(x, x.shape[1:]) * _per_channel(w, x) + _per_channel(b, x)
    assert torch.allclose(layer(x), expected, atol=1e-5)


@pytest.mark.parametrize("dim", [1, 2])
def test_instance_norm_is_f_instance_norm(dim):
    layer = norm("instance", C, dim)
    w, b = _random_affine(layer)
    x = torch.randn(*SHAPES[dim]) * 2 + 3
    assert torch.allclose(layer(x), F.instance_norm(x, weight=w, bias=b), atol=1e-5)


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("channels, groups", [(12, 6), (16, 8), (64, 32), (96, 32), (6, 3), (7, 1), (2, 1)])
def test_group_norm_is_f_group_norm_with_two_or_more_channels_per_group(dim, channels, groups):
    layer = norm("group", channels, dim)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == groups
    w, b = _random_affine(layer)
    x = torch.randn(3, channels, *SHAPES[dim][2:])
    assert torch.allclose(layer(x), F.group_norm(x, groups, w, b), atol=1e-5)


def test_none_is_identity_and_unknown_or_impossible_norms_are_user_errors():
    x = torch.randn(*SHAPES[2])
    assert torch.equal(norm("none", C, 2)(x), x)
    for kind in ("instance", "group"):
        with pytest.raises(UserError, match="needs spatial axes"):
            norm(kind, C, 0)
    with pytest.raises(UserError, match="unknown norm"):
        norm("batchnorm", C, 2)


def _kinds(model: nn.Module) -> list[str]:
    """The model's layers as a string of letters: W weight layer, N norm, A activation (pooling etc. left out)."""
    letters = []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            letters.append("W")
        elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
            letters.append("N")
        elif isinstance(m, (nn.ReLU, nn.GELU)):
            letters.append("A")
    return "".join(letters)


MODELS = {
    "mlp": (lambda n, p: MLP((10,), 3, width=8, depth=2, norm=n, norm_position=p), (4, 10)),
    "cnn": (lambda n, p: ConvNet((1, 8, 8), 3, dim=2, width=4, depth=2, norm=n, norm_position=p), (4, 1, 8, 8)),
    "cnn1d": (lambda n, p: ConvNet((2, 16), 3, dim=1, width=4, depth=2, norm=n, norm_position=p), (4, 2, 16)),
}


# instance and group norms need spatial axes: not for the mlp
COMBOS = [(name, kind) for name in MODELS for kind in ("batch", "layer", "instance", "group")
          if name != "mlp" or kind in ("batch", "layer")]


@pytest.mark.parametrize("name, kind", COMBOS)
def test_norm_position_changes_the_layer_order(name, kind):
    make, shape = MODELS[name]
    before, after = make(kind, "before_activation"), make(kind, "after_activation")
    assert _kinds(before) == "WNAWNAW" and _kinds(after) == "WANWANW"
    torch.manual_seed(0)
    x = torch.randn(*shape)
    after.load_state_dict(before.state_dict(), strict=False)
    # same weights where they exist, a different function: the order is real, not only in the names
    assert not torch.allclose(before(x), after(x))
    # a bias right before batch norm is redundant (and dropped); after the activation it is not
    biases = [m.bias is not None for m in before.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))][:-1]
    assert all(biases) == (kind != "batch")
    biases = [m.bias is not None for m in after.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    assert all(biases)
