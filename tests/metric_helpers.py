"""Helpers shared by the metric tests: feeding accumulators in uneven batches."""
import numpy as np
import torch


def batches(n: int, rng: np.random.Generator) -> list[slice]:
    """Uneven consecutive slices covering range(n), sometimes including empty ones."""
    cuts = np.sort(rng.integers(0, n + 1, size=rng.integers(0, 5)))
    edges = [0, *cuts.tolist(), n]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def streamed(acc, output: torch.Tensor, target: torch.Tensor, rng: np.random.Generator) -> dict[str, float]:
    """Feed an accumulator in uneven batches and compute once."""
    for part in batches(output.shape[0], rng):
        acc.update(output[part], target[part])
    return acc.compute()
