"""Optimizers with sound parameter groups, and learning-rate schedules as pure functions of the step."""
from goodfit.optim.optimizers import build_optimizer, param_groups
from goodfit.optim.schedules import SCHEDULES, constant, warmup_cosine

__all__ = ["build_optimizer", "param_groups", "SCHEDULES", "constant", "warmup_cosine"]
