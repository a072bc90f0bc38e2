"""Plain convolutional nets for images (cnn, 2-D) and sequences (cnn1d, 1-D).

`depth` conv blocks (conv -> norm -> activation), halving the resolution after a block
while it is still at least 4 wide, so one architecture serves 8x8 digits and larger
inputs; channels double every second block; global average pooling and a linear head.
"""
from __future__ import annotations

from torch import nn

from goodfit.errors import UserError
from goodfit.models.layers import conv, global_pool, norm_act, pool
from goodfit.nn.dropout import dropout as make_dropout


class ConvNet(nn.Sequential):
    def __init__(self, input_shape, num_outputs: int, *, dim: int, width=64, depth=3, activation="relu",
                 norm="batch", norm_position="before_activation", dropout=0.0, dropout_kind="standard", kernel_size=3,
                 **_):
        if len(input_shape) != dim + 1:
            kind = "images (C, H, W)" if dim == 2 else "sequences (C, L)"
            raise UserError(
                f"model '{'cnn' if dim == 2 else 'cnn1d'}' takes {kind}, but the data's samples have shape {tuple(input_shape)}",
                "use model.name=mlp for tabular data" if len(input_shape) == 1 else
                f"use model.name={'cnn1d' if dim == 2 else 'cnn'} for this data")
        if depth < 1:
            raise UserError("model.depth must be at least 1 for a convolutional net")
        channels, size = input_shape[0], min(input_shape[1:])
        layers: list[nn.Module] = []
        for i in range(depth):
            out = width * 2 ** (i // 2)
            # a bias right before a batch norm is cancelled by its mean subtraction; after the activation it is not
            layers.append(conv(dim, channels, out, kernel_size,
                               bias=not (norm == "batch" and norm_position == "before_activation")))
            layers += norm_act(norm, norm_position, out, dim, activation)
            if size >= 4:
                layers.append(pool(dim))
                size //= 2
            channels = out
        layers.append(global_pool(dim))
        if dropout:  # on the pooled features (so spatial dropout, which drops channels of maps, is refused)
            layers.append(make_dropout(dropout, dropout_kind, 0))
        layers.append(nn.Linear(channels, num_outputs))
        super().__init__(*layers)
