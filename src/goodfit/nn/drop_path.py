"""Stochastic depth (Huang et al. 2016): drop a residual branch for whole samples while training."""
from __future__ import annotations

from torch import Tensor, nn


def drop_path(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each sample's branch output with probability p and scale the kept ones by 1/(1 − p):
    the expectation is unchanged (inverted scaling), so evaluation is the identity."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop_path: p must be in [0, 1), got {p}")
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def depth_rates(rate: float, blocks: int) -> list[float]:
    """Huang et al.'s linear rule: block l of L (1-based) drops with probability rate·l/L, the last with `rate`."""
    return [rate * (i + 1) / blocks for i in range(blocks)]


class DropPath(nn.Module):
    """`drop_path` as a module: active in train mode, the identity in eval mode."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"
