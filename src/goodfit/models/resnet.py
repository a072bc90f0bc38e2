"""Small residual networks for images and sequences, in either block order (He et al. 2015; 2016).

Stem conv, then `depth` residual blocks in stages of two; the first block of each later stage
doubles the channels and halves the resolution (a 1x1 projection on the skip path).

- `residual: pre` (default), the pre-activation block of "Identity Mappings in Deep Residual
  Networks": x + conv(act(norm(conv(act(norm(x)))))). The skip path is an identity from the stem
  to the final norm, as in pre-LN transformers.
- `residual: post`, the original block of "Deep Residual Learning": act(norm(conv(act(norm(conv(x)))))
  + skip(x)). Normalization follows each conv and the activation follows the addition, so the
  trunk passes a nonlinearity at every block: the ResNet counterpart of post-LN.

`norm_position: after_activation` swaps the norm/activation pairs inside the branch (the post
block's last norm stays before the addition, its activation after it). `dropout` (of
`dropout_kind`) sits between a block's two convs (Zagoruyko & Komodakis 2016); `drop_path` is
stochastic depth on each block's branch, its rate rising linearly to `drop_path` at the last block.
"""
from __future__ import annotations

from torch import Tensor, nn

from goodfit.errors import UserError
from goodfit.models.layers import activation as make_activation
from goodfit.models.layers import conv, global_pool, norm_act
from goodfit.models.layers import norm as make_norm
from goodfit.nn.drop_path import DropPath, depth_rates
from goodfit.nn.dropout import dropout as make_dropout


class _Block(nn.Module):
    """The parts both block orders share: two convs, two norm/act pairs, dropout, drop-path."""

    def __init__(self, dim, c_in, c_out, stride, kernel, norm, act, dropout, *, norm_position="before_activation",
                 dropout_kind="standard", drop_path=0.0, pre=True):
        super().__init__()
        self.norm1, self.act1 = make_norm(norm, c_in if pre else c_out, dim), make_activation(act)
        self.conv1 = conv(dim, c_in, c_out, kernel, stride=stride, bias=False)
        self.norm2, self.act2 = make_norm(norm, c_out, dim), make_activation(act)
        self.drop = make_dropout(dropout, dropout_kind, dim)
        self.conv2 = conv(dim, c_out, c_out, kernel, bias=False)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()
        self.norm_first = norm_position == "before_activation"

    def pair(self, norm: nn.Module, act: nn.Module, x: Tensor) -> Tensor:
        return act(norm(x)) if self.norm_first else norm(act(x))


class PreActBlock(_Block):
    def __init__(self, dim, c_in, c_out, stride, kernel, norm, act, dropout, **options):
        super().__init__(dim, c_in, c_out, stride, kernel, norm, act, dropout, pre=True, **options)
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else conv(dim, c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pair(self.norm1, self.act1, x)
        out = self.conv2(self.drop(self.pair(self.norm2, self.act2, self.conv1(h))))
        # the projection sees the pre-activated input, as in the paper's full pre-activation unit
        return self.drop_path(out) + (x if isinstance(self.skip, nn.Identity) else self.skip(h))


class PostActBlock(_Block):
    def __init__(self, dim, c_in, c_out, stride, kernel, norm, act, dropout, **options):
        super().__init__(dim, c_in, c_out, stride, kernel, norm, act, dropout, pre=False, **options)
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else  # projection with its norm ("option B")
                     nn.Sequential(conv(dim, c_in, c_out, 1, stride=stride, bias=False), make_norm(norm, c_out, dim)))

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.drop(self.pair(self.norm1, self.act1, self.conv1(x))))
        return self.act2(self.drop_path(self.norm2(out)) + self.skip(x))


class ResNet(nn.Module):
    def __init__(self, input_shape, num_outputs: int, *, width=32, depth=4, activation="relu", norm="batch",
                 norm_position="before_activation", dropout=0.0, dropout_kind="standard", drop_path=0.0,
                 residual="pre", kernel_size=3, **_):
        super().__init__()
        if len(input_shape) not in (2, 3):
            raise UserError(f"model 'resnet' takes images (C, H, W) or sequences (C, L); samples have shape {tuple(input_shape)}",
                            "use model.name=mlp for tabular data")
        if residual not in ("pre", "post"):
            raise UserError(f"model.residual: unknown block order '{residual}'", "use pre or post")
        dim = len(input_shape) - 1
        pre = residual == "pre"
        stem = conv(dim, input_shape[0], width, kernel_size, bias=False)
        # a post-activation net normalizes the stem's output; a pre-activation one leaves it to the first block
        self.stem = stem if pre else nn.Sequential(stem, make_norm(norm, width, dim), make_activation(activation))
        block = PreActBlock if pre else PostActBlock
        blocks, channels, size = [], width, min(input_shape[1:])
        for i, rate in enumerate(depth_rates(drop_path, depth)):
            downsample = i > 0 and i % 2 == 0 and size >= 4
            out = channels * 2 if downsample else channels
            blocks.append(block(dim, channels, out, 2 if downsample else 1, kernel_size, norm, activation, dropout,
                                norm_position=norm_position, dropout_kind=dropout_kind, drop_path=rate))
            size = size // 2 if downsample else size
            channels = out
        self.blocks = nn.Sequential(*blocks)
        # pre-activation blocks end on a raw sum: normalize and activate it once before pooling
        self.final = (nn.Sequential(*norm_act(norm, norm_position, channels, dim, activation), global_pool(dim))
                      if pre else global_pool(dim))
        self.head = nn.Linear(channels, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.final(self.blocks(self.stem(x))))
