"""Snapshot a model, its optimizer and the RNGs, to put them back bit-exactly after a probe
(an LR range test, an overfit-one-batch check) has trained on them."""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch


def snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Callable[[], None]:
    """Copy the states now; the returned function restores them (weights, buffers, optimizer
    moments and param groups, CPU/CUDA/numpy RNGs, train/eval modes) and clears the gradients."""
    model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    np_rng = np.random.get_state()
    modes = [m.training for m in model.modules()]

    def restore() -> None:
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(model_state[k])
        if optimizer is not None:
            optimizer.load_state_dict(optimizer_state)  # replaces the whole state, moments included
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        np.random.set_state(np_rng)
        for m, training in zip(model.modules(), modes):
            m.training = training
        for p in model.parameters():
            p.grad = None

    return restore
