"""Schedules equal their closed forms and torch's schedulers."""
import math

import pytest
import torch

from goodfit.optim.schedules import constant, warmup_cosine


def test_cosine_equals_torch_cosine_annealing():
    total, base = 50, 0.1
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    for step in range(total):
        assert base * warmup_cosine(step, total) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
        opt.step()
        sched.step()


def test_warmup_is_linear_then_cosine():
    assert [warmup_cosine(s, 100, warmup=4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(4, 100, warmup=4) == 1.0
    assert warmup_cosine(52, 100, warmup=4) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, warmup=4, min_lr=0.1) == pytest.approx(0.1)


def test_constant_with_warmup():
    assert [constant(s, 10, warmup=2) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert math.isclose(constant(0, 10), 1.0)
