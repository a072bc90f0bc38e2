"""Batches by slicing pre-stacked tensors: one gather per epoch, no per-sample Python."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import Tensor


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed that is a pure function of (seed, epoch), well mixed for nearby values."""
    return int(np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)[0] >> 1)


class TensorLoader:
    """Mini-batches of (x, y) whose order is a pure function of (seed, epoch), so resume is exact."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, sample_weights: Tensor | None = None):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if sample_weights is not None and len(sample_weights) != len(x):
            raise ValueError(f"sample_weights has {len(sample_weights)} entries for {len(x)} rows")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.sample_weights = None if sample_weights is None else sample_weights.detach().double().cpu()

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> Tensor | None:
        """Row indices of this epoch (CPU), or None for the natural order."""
        if self.sample_weights is None and not self.shuffle:
            return None
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        if self.sample_weights is not None:
            # balance: sampler: n draws with replacement, each row with probability ∝ its weight
            return torch.multinomial(self.sample_weights, len(self.x), replacement=True, generator=g)
        return torch.randperm(len(self.x), generator=g)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield the batches of `epoch`, skipping the first `start` (an exact mid-epoch resume)."""
        first, stop = start * self.batch_size, len(self) * self.batch_size
        idx = self.order(epoch)
        if idx is None:
            x, y = self.x[first:stop], self.y[first:stop]
        else:
            idx = idx[first:stop].to(self.x.device)  # one gather of what remains of the epoch
            x, y = self.x[idx], self.y[idx.to(self.y.device)]
        for b in range(0, len(x), self.batch_size):
            yield x[b:b + self.batch_size], y[b:b + self.batch_size]
