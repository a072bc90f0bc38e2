"""Deterministic mode (`train.deterministic: true`): the same recipe and seed give bit-identical runs on a GPU too.

On CPU a run is already bit-reproducible for a given seed and thread count (tested). On CUDA three
things vary from run to run: kernels that accumulate with atomics (index_add, scatter_add,
embedding and some pooling backwards), cuDNN's autotuner choosing a different convolution
algorithm per run, and cuBLAS reductions split over several workspaces. `enable()` turns all
three off: torch.use_deterministic_algorithms(True, warn_only=True) (deterministic kernels where
they exist; an op with none warns instead of stopping a long run), cudnn.deterministic = True and
cudnn.benchmark = False, and CUBLAS_WORKSPACE_CONFIG=:4096:8 (cuBLAS reads it when its handle is
created, so it is set before the model's first matmul; an existing value is kept). The cost is
speed: autotuned and atomic kernels are usually the fast ones. The flags are process-wide;
`settings()` / `restore()` let a run put them back as it found them.
"""
from __future__ import annotations

import os

import torch


def settings() -> tuple[bool, bool, bool, bool]:
    """The process-wide flags deterministic mode changes, to hand back to restore()."""
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)


def enable() -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def restore(saved: tuple[bool, bool, bool, bool]) -> None:
    algorithms, warn_only, cudnn_deterministic, cudnn_benchmark = saved
    torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
    torch.backends.cudnn.deterministic = cudnn_deterministic
    torch.backends.cudnn.benchmark = cudnn_benchmark
