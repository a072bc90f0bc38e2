"""Building blocks shared by the models: activations, normalization layers, conv by dimension."""
from __future__ import annotations

import difflib

from torch import nn

from goodfit.errors import UserError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        close = difflib.get_close_matches(name, list(ACTIVATIONS), n=1)
        raise UserError(f"model.activation: unknown activation '{name}'",
                        f"did you mean '{close[0]}'?" if close else "available: " + ", ".join(ACTIVATIONS))
    return ACTIVATIONS[name]()


def _groups(channels: int) -> int:
    """Largest divisor of `channels` not above 32 (GroupNorm's usual group count, Wu & He 2018) with at least
    two channels per group, so that a narrow layer's group norm does not collapse into instance norm."""
    return max((g for g in range(1, min(32, channels // 2) + 1) if channels % g == 0), default=1)


def norm(kind: str, features: int, dim: int) -> nn.Module:
    """A normalization layer for `features` channels; dim 0 = feature vectors, 1 = sequences, 2 = images."""
    if kind == "none":
        return nn.Identity()
    if dim == 0:
        if kind == "batch":
            return nn.BatchNorm1d(features)
        if kind == "layer":
            return nn.LayerNorm(features)
        raise UserError(f"model.norm: '{kind}' norm needs spatial axes; a fully-connected layer has none",
                        "use batch, layer or none for an mlp")
    if kind == "batch":
        return (nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d)(features)
    if kind == "layer":  # LayerNorm over (C, *spatial) per sample = GroupNorm with one group
        return nn.GroupNorm(1, features)
    if kind == "instance":
        return nn.GroupNorm(features, features)  # one group per channel = instance norm, with affine
    if kind == "group":
        return nn.GroupNorm(_groups(features), features)
    raise UserError(f"model.norm: unknown norm '{kind}'", "use batch, layer, instance, group or none")


def conv(dim: int, c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Module:
    cls = nn.Conv1d if dim == 1 else nn.Conv2d
    return cls(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias)


def pool(dim: int) -> nn.Module:
    return nn.MaxPool1d(2) if dim == 1 else nn.MaxPool2d(2)


def global_pool(dim: int) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool1d(1) if dim == 1 else nn.AdaptiveAvgPool2d(1), nn.Flatten())


def norm_act(kind: str, position: str, features: int, dim: int, act: str) -> list[nn.Module]:
    """[norm, act] or [act, norm] according to `norm_position`."""
    layers = [norm(kind, features, dim), activation(act)]
    return layers if position == "before_activation" else layers[::-1]
