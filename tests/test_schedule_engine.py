"""The loop drives the LR toolkit as torch does: 1cycle's LR and momentum per step (OneCycleLR),
per-epoch schedules (a torch scheduler stepped once per epoch), ReduceOnPlateau from the monitored
value (ReduceLROnPlateau fed the same values), composed with warmup; recipes reach them, AutoClip
and the LR multipliers."""
import functools

import pytest
import torch
from torch import nn

import goodfit
from goodfit.data import TensorLoader
from goodfit.engine import Trainer
from goodfit.engine.loop import set_momentum
from goodfit.errors import UserError
from goodfit.optim.clipping import AutoClip
from goodfit.optim.optimizers import build_optimizer
from goodfit.optim.schedules import (ReduceOnPlateau, build_schedule, constant, one_cycle, one_cycle_momentum)
from goodfit.recipe import load_recipe
from goodfit.runner import build

ONE_CYCLE = dict(pct_start=0.3, div_factor=10.0, final_div_factor=100.0, base_momentum=0.8, max_momentum=0.93)


def _data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, :3].argmax(1) + (torch.rand(n, generator=g) < 0.1).long()) % 3
    return x, y


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def _momentum(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


class Record:
    """Each optimizer step's (lr, momentum) per group, as the step used them."""

    def __init__(self):
        self.steps = []

    def on_step_end(self, trainer, state, loss):
        self.steps.append([(g["lr"], _momentum(g)) for g in trainer.optimizer.param_groups])


def _optimizer(name, model):
    cfg = type("Cfg", (), dict(name=name, lr=0.05, momentum=0.9, weight_decay=0.01, decay_norm_and_bias=False,
                               betas=(0.9, 0.99)))
    return build_optimizer(model, cfg, lr_multipliers=[("0", 0.2)])  # groups with different LRs


@pytest.mark.parametrize("name", ["sgd", "adamw", "rmsprop"])
def test_one_cycle_lr_and_momentum_equal_torch_one_cycle_lr(name):
    x, y = _data()
    epochs, batch = 4, 32
    model = _model()
    opt = _optimizer(name, model)
    rec = Record()
    Trainer(model, nn.functional.cross_entropy, opt, TensorLoader(x, y, batch, seed=3), epochs=epochs,
            schedule=functools.partial(one_cycle, **ONE_CYCLE),
            momentum=functools.partial(one_cycle_momentum, **ONE_CYCLE), callbacks=[rec]).fit()

    ref_model = _model()
    ref_opt = _optimizer(name, ref_model)
    loader = TensorLoader(x, y, batch, seed=3)
    total = epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=[g["lr"] for g in ref_opt.param_groups],
                                                total_steps=total, **{k: v for k, v in ONE_CYCLE.items()})
    ref = []
    for epoch in range(epochs):
        for xb, yb in loader.epoch(epoch):
            ref_opt.zero_grad()
            nn.functional.cross_entropy(ref_model(xb), yb).backward()
            ref_opt.step()
            ref.append([(g["lr"], _momentum(g)) for g in ref_opt.param_groups])
            if len(ref) < total:
                sched.step()
    assert len(rec.steps) == len(ref) == total and len(ref[0]) == 4  # 2 LR multipliers x decay / no decay
    for k, (ours, theirs) in enumerate(zip(rec.steps, ref)):
        for (lr, m), (lr_t, m_t) in zip(ours, theirs):
            assert lr == pytest.approx(lr_t, rel=1e-12) and m == pytest.approx(m_t, rel=1e-12), k
    momenta = [s[0][1] for s in rec.steps]
    assert min(momenta) == pytest.approx(0.8, abs=0.01) and momenta[0] == 0.93  # it did cycle
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_set_momentum_refuses_an_optimizer_without_momentum():
    opt = torch.optim.Adagrad([nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="neither momentum nor betas"):
        set_momentum(opt, 0.9)


EPOCH_CASES = [
    ("step", dict(step_size=2, gamma=0.5), lambda o, E: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5)),
    ("multistep", dict(milestones=[1, 4], gamma=0.3),
     lambda o, E: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[1, 4], gamma=0.3)),
    ("exponential", dict(gamma=0.7), lambda o, E: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.7)),
    ("cosine", {}, lambda o, E: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=E)),
    ("polynomial", dict(power=2.0), lambda o, E: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=E, power=2.0)),
]


@pytest.mark.parametrize("name, options, make", EPOCH_CASES, ids=[c[0] for c in EPOCH_CASES])
def test_interval_epoch_equals_torch_scheduler_stepped_per_epoch(name, options, make):
    x, y = _data()
    epochs, base = 7, 0.05
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=base, momentum=0.9)
    rec = Record()
    loader = TensorLoader(x, y, 32, seed=1)
    Trainer(model, nn.functional.cross_entropy, opt, loader, epochs=epochs, schedule=build_schedule(name, **options),
            interval="epoch", callbacks=[rec]).fit()
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    sched = make(ref_opt, epochs)
    per_epoch = len(loader)
    for epoch in range(epochs):
        lrs = {s[0][0] for s in rec.steps[epoch * per_epoch:(epoch + 1) * per_epoch]}
        assert len(lrs) == 1, f"the LR changed within epoch {epoch}"
        assert lrs.pop() == pytest.approx(sched.get_last_lr()[0], rel=1e-9, abs=1e-15), epoch
        ref_opt.step()
        sched.step()
    assert len(rec.steps) == epochs * per_epoch


def test_interval_epoch_warmup_counts_epochs():
    x, y = _data()
    model = _model()
    rec = Record()
    loader = TensorLoader(x, y, 50)
    Trainer(model, nn.functional.cross_entropy, torch.optim.SGD(model.parameters(), lr=1.0), loader, epochs=4,
            schedule=constant, warmup_epochs=2, interval="epoch", callbacks=[rec]).fit()
    assert [s[0][0] for s in rec.steps] == [0.5] * 4 + [1.0] * 12


@pytest.mark.parametrize("warmup, patience, threshold", [(0, 1, 0.05), (4, 0, 0.3)])
def test_plateau_in_the_loop_equals_torch_reduce_lr_on_plateau(warmup, patience, threshold):
    x, y = _data(300)
    xv, yv = _data(200, seed=1)
    epochs, base = 10, 0.05
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=base, momentum=0.9)
    opts = dict(mode="min", factor=0.5, patience=patience, threshold=threshold, cooldown=1)
    plateau = ReduceOnPlateau(**opts, min_lr=0.05)
    rec = Record()
    loader = TensorLoader(x, y, 32, seed=2)
    state = Trainer(model, nn.functional.cross_entropy, opt, loader, TensorLoader(xv, yv, 100, shuffle=False),
                    epochs=epochs, warmup_epochs=warmup, plateau=plateau, callbacks=[rec]).fit()
    val = [h["val_loss"] for h in state.history]
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, **opts, min_lr=0.05 * base)
    per_epoch, warmup_steps = len(loader), warmup * len(loader)
    reductions, during_warmup = 0, 0
    for epoch in range(epochs):
        plateau_lr = ref_opt.param_groups[0]["lr"]
        reductions += plateau_lr < base
        during_warmup += plateau_lr < base and epoch < warmup
        for i in range(per_epoch):
            step = epoch * per_epoch + i
            ramp = (step + 1) / warmup_steps if step < warmup_steps else 1.0  # warmup x plateau multiplier
            assert rec.steps[step][0][0] == pytest.approx(ramp * plateau_lr, rel=1e-9), (epoch, i)
        ref.step(val[epoch])
    assert reductions >= 2 and (during_warmup >= 2 or not warmup)  # it acted, within the warmup too
    assert plateau.multiplier * base == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9)


def test_plateau_monitor_train_loss_without_validation():
    x, y = _data()
    model = _model()
    plateau = ReduceOnPlateau(factor=0.5, patience=0, threshold=0.5, monitor="train_loss")
    state = Trainer(model, nn.functional.cross_entropy, torch.optim.SGD(model.parameters(), lr=0.1),
                    TensorLoader(x, y, 50), epochs=4, plateau=plateau).fit()
    ref = ReduceOnPlateau(factor=0.5, patience=0, threshold=0.5)
    for h in state.history:
        ref.step(h["train_loss"])
    assert plateau.state_dict() == ref.state_dict() and plateau.multiplier < 1


# ---------------------------------------------------------------- recipes

FAST = ["train.epochs=3", "train.threads=1", "train.early_stopping.patience=null"]


def test_recipe_reduce_on_plateau_builds_with_resolved_mode_and_warmup():
    parts = build(load_recipe("digits-mlp", ["schedule={name: reduce_on_plateau, factor: 0.2, patience: 2, "
                                             "monitor: val_accuracy, cooldown: 1}", "schedule.warmup=1",
                                             "schedule.min_lr=0.01"]), progress=False)
    t = parts.trainer
    assert t.plateau.mode == "max" and t.plateau.monitor == "val_accuracy" and t.plateau.factor == 0.2
    assert t.plateau.patience == 2 and t.plateau.cooldown == 1 and t.plateau.min_lr == 0.01
    assert t.schedule is constant and t.warmup_epochs == 1 and t.momentum is None
    default = build(load_recipe("digits-mlp", ["schedule.name=reduce_on_plateau"]), progress=False).trainer.plateau
    assert default.mode == "min" and default.monitor == "val_loss"


@pytest.mark.parametrize("overrides, key, hint", [
    (["schedule={name: reduce_on_plateau, monitor: val_acc}"], "schedule.monitor", "val_accuracy"),
    (["schedule={name: reduce_on_plateau, monitor: train_loss, patiense: 2}"], "patiense", "reduce_on_plateau"),
    (["schedule={name: reduce_on_plateau, mode: avg}"], "mode", "auto, min or max"),
    (["schedule={name: reduce_on_plateau}", "data.split.val=0", "train.early_stopping.monitor=train_loss"],
     "reduce_on_plateau", "schedule.monitor=train_loss"),
    (["schedule={name: one_cycle}", "optimizer.name=adagrad"], "cycle_momentum", "cycle_momentum=false"),
    (["schedule={name: one_cycle, cycle_momentum: maybe}"], "cycle_momentum", "accepted_options"),
    (["schedule={name: step, step_size: 2, interval: epoch, warmup: 0.5}"], "schedule.warmup", "integer"),
    (["schedule.interval=epochs"], "schedule.interval", None),
    (["optimizer.lr_multipliers={body: 0.1}"], "matches no trainable parameter", "1.weight"),
    (["optimizer.lr_multipliers={'1': 0}"], "optimizer.lr_multipliers", None),
    (["optimizer.layer_decay=1.5"], "optimizer.layer_decay", None),
    (["optimizer.layer_decay=0"], "optimizer.layer_decay", None),
    (["train.grad_clip={auto: 101}"], "train.grad_clip.auto", None),
    (["train.grad_clip={auto: 10, history: 0}"], "train.grad_clip.history", None),
    (["train.grad_clip={norm: 1.0, history: 5}"], "history applies to {auto", None),
    (["train.grad_clip={norm: 1.0, auto: 5}"], "exactly one", None),
])
def test_bad_schedule_clip_and_lr_group_settings_are_user_errors(tmp_path, overrides, key, hint):
    with pytest.raises(UserError) as e:
        goodfit.run("digits-mlp", FAST + overrides, out=tmp_path, progress=False)
    assert key in e.value.message, e.value.message
    if hint is not None:
        assert hint in (e.value.hint or ""), e.value.hint
    assert not list(tmp_path.glob("*/*"))  # refused before any run directory was made


def test_recipe_lr_multipliers_and_layer_decay_reach_the_param_groups():
    recipe = load_recipe("digits-mlp", ["optimizer.lr=0.01", "optimizer.weight_decay=0.05", "regularization.l2=0.001",
                                        "optimizer.lr_multipliers={'9': 10, '1.*': 0.5, '*.bias': 0.1}",
                                        "optimizer.layer_decay=0.5"])
    assert list(recipe.optimizer.lr_multipliers) == ["9", "1.*", "*.bias"]  # order kept: first match wins
    parts = build(recipe, progress=False)
    opt, model = parts.trainer.optimizer, parts.trainer.model
    got = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    # digits-mlp is Sequential(...): Linear layers at 1, 5, 9; depth from the last: 9 x1, 5 x0.5, 1 x0.25
    expect = {"1.weight": (0.01 * 0.5 * 0.25, 0.05), "1.bias": (0.01 * 0.5 * 0.25, 0.0),
              "5.weight": (0.01 * 0.5, 0.05), "5.bias": (0.01 * 0.1 * 0.5, 0.0),
              "9.weight": (0.01 * 10, 0.05), "9.bias": (0.01 * 10, 0.0)}
    names = dict(model.named_parameters())
    assert set(names) == set(expect)
    for n, (lr, wd) in expect.items():
        assert got[id(names[n])][0] == pytest.approx(lr, rel=1e-12) and got[id(names[n])][1] == wd, n
    # the L2 penalty covers every decayed weight, whichever group it landed in
    assert {id(p) for p in parts.trainer.penalty.params} == {id(names[n]) for n in ("1.weight", "5.weight", "9.weight")}


def test_recipe_lr_multipliers_train_and_schedule_each_group(tmp_path):
    r = goodfit.run("digits-mlp", FAST + ["optimizer.lr_multipliers={'9': 0.1}", "schedule={name: step, step_size: 1, "
                                          "gamma: 0.5, interval: epoch}", "optimizer.lr=0.004"],
                    out=tmp_path, progress=False)
    opt = build(r.recipe, progress=False).trainer.optimizer
    assert [h["lr"] for h in r.history] == pytest.approx([0.004, 0.002, 0.001])
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([0.0004, 0.004])


def test_recipe_one_cycle_cycles_momentum_and_autoclip_clips(tmp_path):
    rec = Record()
    r = goodfit.run("digits-mlp", FAST + ["optimizer.name=sgd", "optimizer.lr=0.1",
                                          "schedule={name: one_cycle, base_momentum: 0.8, max_momentum: 0.9}",
                                          "train.grad_clip={auto: 20, history: 30}"],
                    out=tmp_path, progress=False, callbacks=[rec])
    t = build(r.recipe, progress=False).trainer
    assert isinstance(t.clip, AutoClip) and t.clip.percentile == 20 and t.clip.history == 30
    total = len(rec.steps)
    want = [one_cycle_momentum(k, total, base_momentum=0.8, max_momentum=0.9) for k in range(total)]
    assert [s[0][1] for s in rec.steps] == want
    assert [s[0][0] for s in rec.steps] == pytest.approx([0.1 * one_cycle(k, total) for k in range(total)], rel=1e-12)
    assert all(0.5 < h["clipped_fraction"] <= 1.0 for h in r.history[1:])  # the 20th percentile clips ~80 % of steps
    off = goodfit.run("digits-mlp", FAST + ["optimizer.name=sgd", "schedule={name: one_cycle, cycle_momentum: false}"],
                      out=tmp_path, progress=False, callbacks=[rec2 := Record()])
    assert {s[0][1] for s in rec2.steps} == {0.9} and off.history
