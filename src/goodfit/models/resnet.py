"""A small pre-activation residual network (He et al. 2016, "Identity Mappings in Deep Residual Networks").

Stem conv, then `depth` residual blocks in stages of two; the first block of each later
stage doubles the channels and halves the resolution (a 1x1 projection on the skip path).
Each block: norm -> act -> conv -> norm -> act -> conv, added to the skip path.
"""
from __future__ import annotations

from torch import Tensor, nn

from goodfit.errors import UserError
from goodfit.models.layers import activation as make_activation
from goodfit.models.layers import conv, global_pool, norm as make_norm


class PreActBlock(nn.Module):
    def __init__(self, dim, c_in, c_out, stride, kernel, norm, act, dropout):
        super().__init__()
        self.norm1, self.act1 = make_norm(norm, c_in, dim), make_activation(act)
        self.conv1 = conv(dim, c_in, c_out, kernel, stride=stride, bias=False)
        self.norm2, self.act2 = make_norm(norm, c_out, dim), make_activation(act)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.conv2 = conv(dim, c_out, c_out, kernel, bias=False)
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else conv(dim, c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act1(self.norm1(x))
        out = self.conv1(h)
        out = self.conv2(self.drop(self.act2(self.norm2(out))))
        # the projection sees the pre-activated input, as in the paper's full pre-activation unit
        return out + (x if isinstance(self.skip, nn.Identity) else self.skip(h))


class ResNet(nn.Module):
    def __init__(self, input_shape, num_outputs: int, *, width=32, depth=4, activation="relu", norm="batch",
                 dropout=0.0, kernel_size=3, **_):
        super().__init__()
        if len(input_shape) not in (2, 3):
            raise UserError(f"model 'resnet' takes images (C, H, W) or sequences (C, L); samples have shape {tuple(input_shape)}",
                            "use model.name=mlp for tabular data")
        dim = len(input_shape) - 1
        self.stem = conv(dim, input_shape[0], width, kernel_size, bias=False)
        blocks, channels, size = [], width, min(input_shape[1:])
        for i in range(depth):
            downsample = i > 0 and i % 2 == 0 and size >= 4
            out = channels * 2 if downsample else channels
            blocks.append(PreActBlock(dim, channels, out, 2 if downsample else 1, kernel_size, norm, activation, dropout))
            size = size // 2 if downsample else size
            channels = out
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Sequential(make_norm(norm, channels, dim), make_activation(activation), global_pool(dim))
        self.head = nn.Linear(channels, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.final(self.blocks(self.stem(x))))
