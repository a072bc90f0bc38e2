"""Learning-rate schedules: pure functions (step, total_steps) -> multiplier of the base LR.

Being pure functions of the step, they need no state to resume: the step counter is the state.
"""
from __future__ import annotations

import math


def constant(step: int, total: int, *, warmup: int = 0, min_lr: float = 0.0) -> float:
    """1, after an optional linear warmup."""
    return (step + 1) / warmup if step < warmup else 1.0


def warmup_cosine(step: int, total: int, *, warmup: int = 0, min_lr: float = 0.0) -> float:
    """Linear warmup over `warmup` steps, then min_lr + (1 - min_lr)·(1 + cos(π·t))/2, t from 0 to 1
    (Loshchilov & Hutter 2017, SGDR, without restarts)."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + (1.0 - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


SCHEDULES = {"constant": constant, "cosine": warmup_cosine}
