"""Multilayer perceptron: flatten, `depth` hidden layers of `width` units, a linear head."""
from __future__ import annotations

import math

from torch import nn

from goodfit.models.layers import norm_act
from goodfit.nn.dropout import dropout as make_dropout


class MLP(nn.Sequential):
    def __init__(self, input_shape, num_outputs: int, *, width=128, depth=2, activation="relu",
                 norm="none", norm_position="before_activation", dropout=0.0, dropout_kind="standard", **_):
        layers: list[nn.Module] = [nn.Flatten()]
        features = math.prod(input_shape)
        for _i in range(depth):
            # a bias before a batch norm is cancelled by its mean subtraction
            layers.append(nn.Linear(features, width, bias=not (norm == "batch" and norm_position == "before_activation")))
            layers += norm_act(norm, norm_position, width, 0, activation)
            if dropout:  # standard or alpha (SELU nets); spatial needs feature maps and is refused
                layers.append(make_dropout(dropout, dropout_kind, 0))
            features = width
        layers.append(nn.Linear(features, num_outputs))
        super().__init__(*layers)
