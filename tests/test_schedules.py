"""Schedules equal their closed forms and torch's schedulers."""
import json
import math

import pytest
import torch

from goodfit.optim.schedules import (SCHEDULES, ReduceOnPlateau, accepted_options, build_schedule, constant,
                                     cosine_restarts, cyclic, exponential, linear, multistep, one_cycle,
                                     one_cycle_momentum, polynomial, step_decay, warmup_cosine)


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


# --- the other schedules: closed forms, torch's schedulers step by step, warmup, options ------------

BASE = 0.1


def _opt(lr=BASE, momentum=0.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=momentum)


def _assert_matches_torch(schedule, make_sched, steps, base=BASE, momentum=0.0, opt=None):
    opt = opt or _opt(base, momentum)
    sched = make_sched(opt)
    for k in range(steps):
        assert base * schedule(k) == pytest.approx(sched.get_last_lr()[0], rel=1e-9, abs=1e-15), k
        opt.step()
        sched.step()


def test_step_decay():
    assert [step_decay(s, 100, step_size=3, gamma=0.5) for s in (0, 2, 3, 5, 6, 9)] == [1, 1, 0.5, 0.5, 0.25, 0.125]
    _assert_matches_torch(lambda k: step_decay(k, 40, step_size=7, gamma=0.3),
                          lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.3), 40)


def test_multistep():
    f = lambda s: multistep(s, 100, milestones=[3, 10, 11], gamma=0.1)
    assert [f(s) for s in (0, 2, 3, 9, 10, 11, 50)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 1e-3, 1e-3])
    _assert_matches_torch(lambda k: multistep(k, 30, milestones=[4, 9, 20], gamma=0.5),
                          lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[4, 9, 20], gamma=0.5), 30)


def test_exponential():
    assert exponential(10, 100, gamma=0.9) == pytest.approx(0.9 ** 10)
    _assert_matches_torch(lambda k: exponential(k, 60, gamma=0.93),
                          lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.93), 60)


@pytest.mark.parametrize("t0, t_mult, min_lr", [(10, 1, 0.0), (5, 2, 0.05), (3, 3, 0.0)])
def test_cosine_restarts(t0, t_mult, min_lr):
    f = lambda k: cosine_restarts(k, 100, t0=t0, t_mult=t_mult, min_lr=min_lr)
    assert f(0) == 1.0 and f(t0) == 1.0 and f(t0 + t0 * t_mult) == 1.0  # restarts
    assert f(t0 // 2) == pytest.approx(min_lr + (1 - min_lr) * (1 + math.cos(math.pi * (t0 // 2) / t0)) / 2)
    _assert_matches_torch(f, lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=t0, T_mult=t_mult, eta_min=min_lr * BASE), 80)


@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_lr_and_momentum(three_phase):
    total, opts = 100, dict(pct_start=0.25, div_factor=10.0, final_div_factor=100.0, three_phase=three_phase)
    if not three_phase:  # closed form: start, peak, end, middle of the descent
        assert one_cycle(0, total, **opts) == pytest.approx(0.1)
        assert one_cycle(24, total, **opts) == pytest.approx(1.0)
        assert one_cycle(99, total, **opts) == pytest.approx(1e-3)
        pct = (62 - 24) / (99 - 24)
        assert one_cycle(62, total, **opts) == pytest.approx(1e-3 + (1 - 1e-3) * (1 + math.cos(math.pi * pct)) / 2)
        assert one_cycle(12, total, **opts) == pytest.approx(1 - 0.9 * (1 + math.cos(math.pi * 12 / 24)) / 2)
        assert one_cycle_momentum(0, total, **opts) == 0.95 and one_cycle_momentum(24, total, **opts) == 0.85
    opt = _opt(BASE, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=BASE, total_steps=total, pct_start=0.25,
                                                div_factor=10.0, final_div_factor=100.0, three_phase=three_phase,
                                                base_momentum=0.85, max_momentum=0.95)
    for k in range(total):
        assert BASE * one_cycle(k, total, **opts) == pytest.approx(sched.get_last_lr()[0], rel=1e-9)
        assert one_cycle_momentum(k, total, **opts) == pytest.approx(opt.param_groups[0]["momentum"], rel=1e-9)
        opt.step()
        if k < total - 1:
            sched.step()


def test_one_cycle_momentum_with_adam_betas():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=BASE)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=BASE, total_steps=20, base_momentum=0.8, max_momentum=0.9)
    for k in range(20):
        assert one_cycle_momentum(k, 20, base_momentum=0.8, max_momentum=0.9) == pytest.approx(
            opt.param_groups[0]["betas"][0], rel=1e-9)
        opt.step()
        if k < 19:
            sched.step()


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_polynomial(power):
    assert polynomial(25, 100, power=power) == pytest.approx(0.75 ** power)
    assert polynomial(100, 100, power=power, min_lr=0.1) == pytest.approx(0.1)
    assert polynomial(50, 100, power=2.0, min_lr=0.2) == pytest.approx(0.2 + 0.8 * 0.25)
    _assert_matches_torch(lambda k: polynomial(k, 40, power=power),
                          lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=40, power=power), 45)


@pytest.mark.parametrize("min_lr, start", [(0.1, 1.0), (0.0, 1.0), (0.05, 0.5)])
def test_linear(min_lr, start):
    assert linear(25, 100, min_lr=min_lr, start_factor=start) == pytest.approx(start + (min_lr - start) * 0.25)
    assert linear(120, 100, min_lr=min_lr, start_factor=start) == pytest.approx(min_lr)
    _assert_matches_torch(lambda k: linear(k, 30, min_lr=min_lr, start_factor=start),
                          lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=start, end_factor=min_lr,
                                                                      total_iters=30), 35)


@pytest.mark.parametrize("up, down", [(5, None), (4, 7)])
def test_cyclic(up, down):
    f = lambda k: cyclic(k, 100, base_lr=0.2, step_size_up=up, step_size_down=down)
    if down is None:  # Smith 2017's closed form for the symmetric triangle
        for k in range(40):
            c = math.floor(1 + k / (2 * up))
            x = abs(k / up - 2 * c + 1)
            assert f(k) == pytest.approx(0.2 + 0.8 * max(0.0, 1 - x))
    assert f(0) == pytest.approx(0.2) and f(up) == pytest.approx(1.0)
    _assert_matches_torch(f, lambda o: torch.optim.lr_scheduler.CyclicLR(
        o, base_lr=0.2 * BASE, max_lr=BASE, step_size_up=up, step_size_down=down, mode="triangular",
        cycle_momentum=False), 40)
    assert cyclic(3, 100, min_lr=0.3, step_size_up=10) == pytest.approx(0.3 + 0.7 * 0.3)  # base_lr from min_lr


@pytest.mark.parametrize("name, options", [
    ("step", dict(step_size=5)), ("multistep", dict(milestones=[3, 8])), ("exponential", dict(gamma=0.9)),
    ("cosine_restarts", dict(t0=7, t_mult=2)), ("one_cycle", {}), ("polynomial", dict(power=2.0)),
    ("linear", {}), ("cyclic", dict(base_lr=0.1, step_size_up=6)), ("constant", {}), ("cosine", {})])
def test_warmup_composition(name, options):
    fn, total, warmup = SCHEDULES[name], 50, 4
    assert [fn(s, total, warmup=warmup, **options) for s in range(warmup)] == [0.25, 0.5, 0.75, 1.0]
    for s in range(warmup, total):  # after warmup: the schedule shifted by `warmup` over total - warmup steps
        assert fn(s, total, warmup=warmup, **options) == fn(s - warmup, total - warmup, **options)


@pytest.mark.parametrize("mode, threshold_mode, cooldown, patience", [
    ("min", "rel", 0, 2), ("max", "abs", 2, 1), ("min", "abs", 1, 0), ("max", "rel", 0, 3)])
def test_reduce_on_plateau_equals_torch(mode, threshold_mode, cooldown, patience):
    g = torch.Generator().manual_seed(0)
    metrics = (torch.rand(60, generator=g, dtype=torch.float64) + torch.linspace(1, 0, 60, dtype=torch.float64)
               * (1 if mode == "min" else -1)).tolist()
    metrics[10:20] = [metrics[9]] * 10  # an exact plateau
    opts = dict(mode=mode, factor=0.5, patience=patience, threshold=0.01, threshold_mode=threshold_mode,
                cooldown=cooldown, min_lr=0.01)
    ours = ReduceOnPlateau(**opts)
    opt = _opt()
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **{**opts, "min_lr": 0.01 * BASE})
    reductions = 0
    for k, m in enumerate(metrics):
        mult = ours.step(m)
        theirs.step(m)
        assert BASE * mult == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), k
        reductions += mult < 1.0
        if k == 30:  # resume from a JSON round trip mid-way
            state = json.loads(json.dumps(ours.state_dict()))
            ours = ReduceOnPlateau(**opts)
            ours.load_state_dict(state)
    assert reductions > 0


def test_reduce_on_plateau_state_is_strict_json_before_any_metric():
    r = ReduceOnPlateau()
    state = json.loads(json.dumps(r.state_dict(), allow_nan=False))
    r2 = ReduceOnPlateau()
    r2.load_state_dict(state)
    assert r2.best == math.inf and r2.step(1.0) == 1.0


@pytest.mark.parametrize("call, message", [
    (lambda: step_decay(0, 10, step_size=2, gamma=-0.1), "gamma"),
    (lambda: exponential(0, 10, gamma=-0.5), "gamma"),
    (lambda: multistep(0, 10, milestones=[5, 3]), "strictly increasing"),
    (lambda: multistep(0, 10, milestones=[3, 3]), "strictly increasing"),
    (lambda: step_decay(0, 10, step_size=2, gama=0.1), "unknown option"),
    (lambda: SCHEDULES["one_cycle"](0, 10, max_lr=1.0), "unknown option"),
    (lambda: step_decay(0, 10), "step_size"),
    (lambda: cosine_restarts(0, 10, t0=0), "t0"),
    (lambda: cosine_restarts(0, 10, t0=5, t_mult=1.5), "t_mult"),
    (lambda: one_cycle(0, 10, pct_start=1.5), "pct_start"),
    (lambda: cyclic(0, 10, base_lr=2.0), "base_lr"),
    (lambda: polynomial(0, 10, min_lr=-1.0), "min_lr"),
    (lambda: ReduceOnPlateau(factor=1.5), "factor"),
    (lambda: ReduceOnPlateau(mode="avg"), "mode"),
    (lambda: build_schedule("step", step_size=3, gama=0.5), "unknown option"),
    (lambda: build_schedule("nope"), "unknown schedule"),
    (lambda: accepted_options("nope"), "unknown schedule"),
])
def test_invalid_options_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_accepted_options_and_build_schedule():
    assert accepted_options("step") == {"warmup": 0, "min_lr": 0.0, "step_size": None, "gamma": 0.1}
    assert accepted_options("cosine") == {"warmup": 0, "min_lr": 0.0}
    assert set(accepted_options("one_cycle")) == set(accepted_options("one_cycle_momentum"))
    assert accepted_options("reduce_on_plateau")["patience"] == 10
    fn = build_schedule("multistep", milestones=[2], gamma=0.5)
    assert [fn(s, 10, warmup=0, min_lr=0.0) for s in range(4)] == [1, 1, 0.5, 0.5]
