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


# ---------------------------------------------------------------------------------------------
# More schedules. Same contract as above: a pure function (step, total, *, warmup, min_lr,
# **options) -> multiplier of the base LR. The first `warmup` steps ramp linearly, (step+1)/warmup,
# as in `warmup_cosine`; the schedule then runs on t = step - warmup over T = total - warmup steps.
# With warmup=0, `base_lr * schedule(k, total, ...)` equals torch's scheduler after k `.step()`s.
# Unknown option names and invalid values raise ValueError.
# ---------------------------------------------------------------------------------------------

def _check(name: str, unknown: dict, warmup: int, min_lr: float) -> None:
    if unknown:
        raise ValueError(f"schedule {name!r}: unknown option(s) {sorted(unknown)}; "
                         f"accepted: {sorted(accepted_options(name))}")
    if warmup < 0:
        raise ValueError(f"schedule {name!r}: warmup must be >= 0, got {warmup}")
    if not 0.0 <= min_lr <= 1.0:
        raise ValueError(f"schedule {name!r}: min_lr is a fraction of the base LR in [0, 1], got {min_lr}")


def _positive(name: str, option: str, value, *, integer: bool = False) -> None:
    if value is None:
        raise ValueError(f"schedule {name!r}: option {option!r} is required")
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"schedule {name!r}: {option} must be an integer, got {value!r}")
    if not value > 0:
        raise ValueError(f"schedule {name!r}: {option} must be > 0, got {value!r}")


def step_decay(step: int, total: int, *, warmup: int = 0, min_lr: float = 0.0,
               step_size: int | None = None, gamma: float = 0.1, **unknown) -> float:
    """gamma^floor(t / step_size), floored at min_lr (torch StepLR)."""
    _check("step", unknown, warmup, min_lr)
    _positive("step", "step_size", step_size, integer=True)
    _positive("step", "gamma", gamma)
    if step < warmup:
        return (step + 1) / warmup
    return max(min_lr, gamma ** ((step - warmup) // step_size))


def multistep(step: int, total: int, *, warmup: int = 0, min_lr: float = 0.0,
              milestones=None, gamma: float = 0.1, **unknown) -> float:
    """gamma^(number of milestones <= t), floored at min_lr (torch MultiStepLR). Milestones count
    steps after warmup and must be strictly increasing non-negative integers."""
    _check("multistep", unknown, warmup, min_lr)
    if milestones is None:
        raise ValueError("schedule 'multistep': option 'milestones' is required")
    milestones = list(milestones)
    if any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in milestones):
        raise ValueError(f"schedule 'multistep': milestones must be non-negative integers, got {milestones}")
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ValueError(f"schedule 'multistep': milestones must be strictly increasing, got {milestones}")
    _positive("multistep", "gamma", gamma)
    if step < warmup:
        return (step + 1) / warmup
    t = step - warmup
    return max(min_lr, gamma ** sum(1 for m in milestones if m <= t))


def exponential(step: int, total: int, *, warmup: int = 0, min_lr: float = 0.0,
                gamma: float | None = None, **unknown) -> float:
    """gamma^t, floored at min_lr (torch ExponentialLR)."""
    _check("exponential", unknown, warmup, min_lr)
    _positive("exponential", "gamma", gamma)
    if step < warmup:
        return (step + 1) / warmup
    return max(min_lr, gamma ** (step - warmup))


def cosine_restarts(step: int, total: int, *, warmup: int = 0, min_lr: float = 0.0,
                    t0: int | None = None, t_mult: int = 1, **unknown) -> float:
    """SGDR (Loshchilov & Hutter 2017; torch CosineAnnealingWarmRestarts): cosine from 1 to min_lr
    over a period of t0 steps, restarting at 1; each period t_mult times the previous one."""
    _check("cosine_restarts", unknown, warmup, min_lr)
    _positive("cosine_restarts", "t0", t0, integer=True)
    _positive("cosine_restarts", "t_mult", t_mult, integer=True)
    if step < warmup:
        return (step + 1) / warmup
    t_cur, t_i = step - warmup, t0
    if t_mult == 1:
        t_cur %= t0
    else:
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= t_mult
    return min_lr + (1.0 - min_lr) * (1.0 + math.cos(math.pi * t_cur / t_i)) / 2


def _one_cycle_phases(name: str, T: int, pct_start: float, three_phase: bool, values):
    """torch OneCycleLR's phases: (end_step, start_value, end_value); values = (initial, peak, final)."""
    if not 0.0 < pct_start < 1.0:
        raise ValueError(f"schedule {name!r}: pct_start must be in (0, 1), got {pct_start}")
    initial, peak, final = values
    if three_phase:
        return [(float(pct_start * T) - 1, initial, peak),
                (float(2 * pct_start * T) - 2, peak, initial),
                (T - 1, initial, final)]
    return [(float(pct_start * T) - 1, initial, peak), (T - 1, peak, final)]


def _cycle_value(t: float, phases) -> float:
    start_step = 0.0
    for i, (end_step, start, end) in enumerate(phases):
        if t <= end_step or i == len(phases) - 1:
            pct = 1.0 if end_step <= start_step else min(1.0, (t - start_step) / (end_step - start_step))
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        start_step = end_step
    raise AssertionError("unreachable")


def _check_momenta(name: str, base_momentum: float, max_momentum: float) -> None:
    if not (0.0 <= base_momentum < 1.0 and 0.0 <= max_momentum < 1.0):
        raise ValueError(f"schedule {name!r}: momenta must be in [0, 1), got base_momentum={base_momentum}, "
                         f"max_momentum={max_momentum}")


def one_cycle(step: int, total: int, *, warmup: int = 0, min_lr: float = 0.0, pct_start: float = 0.3,
              div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False,
              base_momentum: float = 0.85, max_momentum: float = 0.95, cycle_momentum: bool = True,
              **unknown) -> float:
    """1cycle (Smith 2018; torch OneCycleLR, anneal_strategy='cos'), relative to the maximum LR (the
    optimizer's LR): cosine from 1/div_factor up to 1 at pct_start of the steps, then down to
    1/(div_factor·final_div_factor) at the last step. min_lr is not used (the floor is set by the
    div factors); the momentum options are accepted so one option set serves `one_cycle_momentum` too
    (the engine cycles momentum with it when cycle_momentum is true)."""
    _check("one_cycle", unknown, warmup, min_lr)
    _positive("one_cycle", "div_factor", div_factor)
    _positive("one_cycle", "final_div_factor", final_div_factor)
    _check_momenta("one_cycle", base_momentum, max_momentum)
    if not isinstance(cycle_momentum, bool):
        raise ValueError(f"schedule 'one_cycle': cycle_momentum must be true or false, got {cycle_momentum!r}")
    T = max(1, total - warmup)
    phases = _one_cycle_phases("one_cycle", T, pct_start, three_phase,
                               (1.0 / div_factor, 1.0, 1.0 / (div_factor * final_div_factor)))
    if step < warmup:
        return (step + 1) / warmup
    return _cycle_value(step - warmup, phases)


def one_cycle_momentum(step: int, total: int, *, warmup: int = 0, min_lr: float = 0.0, pct_start: float = 0.3,
                       div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False,
                       base_momentum: float = 0.85, max_momentum: float = 0.95, cycle_momentum: bool = True,
                       **unknown) -> float:
    """The momentum (SGD momentum or Adam beta1) of 1cycle, an absolute value, not a multiplier:
    cosine from max_momentum down to base_momentum at the LR peak, then back up (torch OneCycleLR,
    cycle_momentum=True). max_momentum during warmup. Takes the same options as `one_cycle`."""
    _check("one_cycle", unknown, warmup, min_lr)
    _check_momenta("one_cycle", base_momentum, max_momentum)
    T = max(1, total - warmup)
    phases = _one_cycle_phases("one_cycle", T, pct_start, three_phase,
                               (max_momentum, base_momentum, max_momentum))
    if step < warmup:
        return max_momentum
    return _cycle_value(step - warmup, phases)


def polynomial(step: int, total: int, *, warmup: int = 0, min_lr: float = 0.0,
               power: float = 1.0, **unknown) -> float:
    """min_lr + (1 - min_lr)·(1 - t/T)^power, reaching min_lr at `total` (torch PolynomialLR with
    total_iters = T when min_lr = 0)."""
    _check("polynomial", unknown, warmup, min_lr)
    _positive("polynomial", "power", power)
    if step < warmup:
        return (step + 1) / warmup
    T = max(1, total - warmup)
    return min_lr + (1.0 - min_lr) * (1.0 - min(step - warmup, T) / T) ** power


def linear(step: int, total: int, *, warmup: int = 0, min_lr: float = 0.0,
           start_factor: float = 1.0, **unknown) -> float:
    """Linear from start_factor to min_lr at `total` (torch LinearLR with end_factor = min_lr,
    total_iters = T)."""
    _check("linear", unknown, warmup, min_lr)
    _positive("linear", "start_factor", start_factor)
    if step < warmup:
        return (step + 1) / warmup
    T = max(1, total - warmup)
    return start_factor + (min_lr - start_factor) * min(step - warmup, T) / T


def cyclic(step: int, total: int, *, warmup: int = 0, min_lr: float = 0.0, base_lr: float | None = None,
           step_size_up: int = 2000, step_size_down: int | None = None, **unknown) -> float:
    """Triangular cyclical LR (Smith 2017; torch CyclicLR mode='triangular'), relative to the maximum
    LR (the optimizer's LR): from base_lr (a fraction of the max; defaults to min_lr) up to 1 over
    step_size_up steps, back down over step_size_down (default step_size_up), repeated."""
    _check("cyclic", unknown, warmup, min_lr)
    base = min_lr if base_lr is None else base_lr
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"schedule 'cyclic': base_lr is a fraction of the max LR in [0, 1], got {base}")
    _positive("cyclic", "step_size_up", step_size_up, integer=True)
    down = step_size_up if step_size_down is None else step_size_down
    _positive("cyclic", "step_size_down", down, integer=True)
    if step < warmup:
        return (step + 1) / warmup
    t = step - warmup
    total_size = float(step_size_up + down)
    step_ratio = step_size_up / total_size
    cycle = math.floor(1 + t / total_size)
    x = 1.0 + t / total_size - cycle
    scale = x / step_ratio if x <= step_ratio else (x - 1) / (step_ratio - 1)
    return base + (1.0 - base) * scale


SCHEDULES.update({
    "step": step_decay, "multistep": multistep, "exponential": exponential,
    "cosine_restarts": cosine_restarts, "one_cycle": one_cycle, "polynomial": polynomial,
    "linear": linear, "cyclic": cyclic,
})


class ReduceOnPlateau:
    """Metric-driven LR reduction (torch ReduceLROnPlateau): after more than `patience` checks without
    improvement by `threshold` (relative or absolute), the multiplier is multiplied by `factor`, not
    below `min_lr`; then `cooldown` checks are ignored. Not a function of the step, so it keeps state:
    `state_dict()` is JSON-able. `eps` applies to the multiplier (torch applies it to the LR). The engine
    multiplies its schedule (a warmup ramp) by `multiplier` and calls `step(summary[monitor])` after
    each epoch's validation."""

    def __init__(self, mode: str = "min", factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0, threshold_mode: str = "rel", eps: float = 1e-8,
                 monitor: str = "val_loss"):
        if mode not in ("min", "max"):
            raise ValueError(f"reduce_on_plateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"reduce_on_plateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"reduce_on_plateau: factor must be in (0, 1), got {factor}")
        for option, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"reduce_on_plateau: {option} must be an integer >= 0, got {value!r}")
        if threshold < 0 or eps < 0:
            raise ValueError(f"reduce_on_plateau: threshold and eps must be >= 0, got {threshold}, {eps}")
        if not 0.0 <= min_lr <= 1.0:
            raise ValueError(f"reduce_on_plateau: min_lr is a fraction of the base LR in [0, 1], got {min_lr}")
        self.mode, self.factor, self.patience, self.threshold = mode, factor, patience, threshold
        self.cooldown, self.min_lr, self.threshold_mode, self.eps = cooldown, min_lr, threshold_mode, eps
        self.monitor = monitor
        self.multiplier = 1.0
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _is_better(self, a: float) -> bool:
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return a < (self.best * (1.0 - self.threshold) if rel else self.best - self.threshold)
        return a > (self.best * (self.threshold + 1.0) if rel else self.best + self.threshold)

    def step(self, metric: float) -> float:
        """Record one metric value; return the multiplier of the base LR to use from now on."""
        current = float(metric)
        if self._is_better(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new = max(self.multiplier * self.factor, self.min_lr)
            if self.multiplier - new > self.eps:
                self.multiplier = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.multiplier

    def state_dict(self) -> dict:
        best = self.best if math.isfinite(self.best) else str(self.best)  # 'inf', '-inf', 'nan': strict JSON
        return {"multiplier": self.multiplier, "best": best, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict) -> None:
        self.multiplier = float(state["multiplier"])
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])


_OTHERS = {"one_cycle_momentum": one_cycle_momentum, "reduce_on_plateau": ReduceOnPlateau}


def accepted_options(name: str) -> dict:
    """{option name: default} a schedule accepts (None: required), including warmup and min_lr."""
    import inspect
    fn = SCHEDULES.get(name) or _OTHERS.get(name)
    if fn is None:
        raise ValueError(f"unknown schedule {name!r}; known: {sorted(SCHEDULES) + sorted(_OTHERS)}")
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.name not in ("step", "total", "self")}


def build_schedule(name: str, **options):
    """SCHEDULES[name] with its options bound and checked now, to be called as the engine does:
    schedule(step, total, warmup=..., min_lr=...)."""
    import functools
    accepted = accepted_options(name)
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; known: {sorted(SCHEDULES)}")
    for option in options:
        if option in ("warmup", "min_lr"):
            raise ValueError(f"schedule {name!r}: {option} is passed by the engine, not bound here")
        if option not in accepted:
            raise ValueError(f"schedule {name!r}: unknown option {option!r}; accepted: {sorted(accepted)}")
    fn = functools.partial(SCHEDULES[name], **options)
    fn(0, 2)  # validates the values
    return fn


def build_plateau(**options) -> ReduceOnPlateau:
    """ReduceOnPlateau from a recipe's options (plus min_lr), unknown names rejected as in `build_schedule`."""
    accepted = accepted_options("reduce_on_plateau")
    for option in options:
        if option not in accepted:
            raise ValueError(f"schedule 'reduce_on_plateau': unknown option {option!r}; accepted: {sorted(accepted)}")
    return ReduceOnPlateau(**options)
