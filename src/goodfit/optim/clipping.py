"""Gradient clipping by global norm or by value (torch's), as callables on an iterable of parameters."""
from __future__ import annotations

from functools import partial

import torch


def build_clip(cfg):
    """The recipe's `train.grad_clip` -> a callable(params) or None."""
    if cfg is None:
        return None
    if cfg.norm is not None:
        return partial(torch.nn.utils.clip_grad_norm_, max_norm=cfg.norm)
    return partial(torch.nn.utils.clip_grad_value_, clip_value=cfg.value)
