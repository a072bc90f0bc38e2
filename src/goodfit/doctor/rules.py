"""Evidence -> findings. Pure functions of what the monitor and the loop recorded.

Differential diagnosis: a symptom (a loss that does not fall; a loss that jumps) has
competing explanations, and the evidence decides between them. A flat loss with most units
dead is `dead_units`, not `lr_too_low`; with saturated sigmoids it is `saturated_activations`;
with a tiny first/last gradient ratio `vanishing_gradients`; only with none of those and tiny
updates is it `lr_too_low`; and with normal updates it is a `plateau` (at the saddle around
zero when the weights are tiny). Units alive at the start and killed by large steps point at
the LR; a train/val gap with an imbalanced training split is the class prior, not memorizing.
The thresholds start from the published ones (AutoTrainer, ICSE'21: vanishing below a 1e-3
first/last gradient ratio, exploding above 70, dying ReLU at >= 70% zeros) and are calibrated
on benchmarks/doctor_suite, seeds 0 and 1 (seed 2 held out; the "healthy runs" ranges in the
comments are its healthy controls'). THRESHOLDS below is what the code uses.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import lfilter

from goodfit.doctor.findings import Finding
from goodfit.doctor.monitor import Sample

DEFAULT_WEIGHT_SCALE = 3 ** -0.5  # a unit's weight-vector norm / sqrt(units) under torch's default init (kaiming_uniform, a=sqrt 5)

THRESHOLDS: dict[str, float] = {
    "vanishing_ratio": 1e-3,      # first-layer / last-layer gradient norm below this: vanishing
    "exploding_ratio": 70.0,      # ... above this: exploding
    "persistent_share": 0.3,      # a condition present in this share of the samples is reported even if it passed,
    "persistent_samples": 3,      # ... or on this many samples (an early stretch of a long run)
    "grad_growth": 1e3,           # total gradient norm grown this much since the first samples ...
    "grad_weight_high": 3.0,      # ... or a gradient this many times the weights' norm (healthy runs: <= 0.3): exploding
    "dead_fraction": 0.7,         # share of a ReLU layer's units that never fire on a batch
    "dying_rise": 0.1,            # dead share risen this much since the start: units are dying (no state to return to)
    "saturation": 0.7,            # share of a sigmoid/tanh layer's outputs within 1% of a bound
    "update_ratio_low": 1e-4,     # median ‖Δw‖/‖w‖ per step below this: the LR is too low (healthy runs: >= 1e-3)
    "update_ratio_high": 0.1,     # ... above this, with an unstable loss: too high
    "first_update_high": 0.3,     # the very first step moved the weights by this much of their norm
    "tiny_weights": 0.05,         # a unit's weight vector this short (default init: 0.58): the net sits at the zero saddle
    "flat_progress": 0.05,        # the loss fell by less than this fraction of its start: it does not train
    "unstable": 0.35,             # share of steps whose smoothed loss rises while far from converged
    "initial_loss_factor": 2.0,   # first loss above this multiple of the chance-level loss: bad init
    "baseline_margin": 1.1,       # regression: val loss within this multiple of a linear model's is no underfit
    "plateau_epochs": 3,          # epochs without relative improvement of...
    "plateau_change": 0.01,       # ... this much in the training loss
    "improving": 0.05,            # the training loss fell this much (relative) over the run's last fifth: still improving
    "far_from_fit": 0.3,          # train loss above this fraction of the chance-level loss: not fitted yet
    "far_with_cause": 0.1,        # ... or above this fraction when a training fault was found (its effect, confirmed)
    "overfit_rise": 0.1,          # val loss this far above its minimum (relative) in the delivered model
    "overfit_gap": 0.15,          # delivered val − train loss, as a fraction of the chance-level loss
    "min_batch_batchnorm": 8,     # BatchNorm with fewer samples per batch than this
}


@dataclass
class Context:
    """What the rules need to know about the run besides its measurements."""

    task: str = "classification"
    num_classes: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    steps_per_epoch: int | None = None
    restore_best: bool = True
    grad_clip: bool = False
    weight_decay: float | None = None  # the optimizer's (largest group's), read when the fit starts
    label_smoothing: float = 0.0       # raises the lowest reachable cross-entropy above 0
    penalized: bool = False            # the logged loss includes an L1/L2 weight penalty
    width: int | None = None           # the recipe model's width (sizes the "wider model" prescription)
    baseline_loss: float | None = None  # regression with MSE: a linear model's out-of-fold loss (the data's noise level)

    def floor_loss(self) -> float:
        """The lowest reachable loss: 0, or with label smoothing ε the entropy of the smoothed target,
        H = −(1−ε+ε/K)·ln(1−ε+ε/K) − (K−1)·(ε/K)·ln(ε/K)."""
        eps, k = self.label_smoothing, self.num_classes
        if not eps or self.task != "classification" or not k:
            return 0.0
        hit, miss = 1 - eps + eps / k, eps / k
        return -hit * math.log(hit) - (k - 1) * miss * math.log(miss)

    def fit_bar(self, fraction: float) -> float | None:
        """A loss this far (as a fraction) from the reachable floor up to the chance level: above it, not fitted."""
        chance = self.chance_loss()
        if chance is None:
            return None
        floor = self.floor_loss()
        return floor + fraction * (chance - floor)

    def chance_loss(self) -> float | None:
        """The loss of a constant, uninformed prediction: ln K (classification), ln 2 (binary),
        1 (MSE on standardized targets)."""
        if self.task == "classification" and self.num_classes:
            return math.log(self.num_classes)
        if self.task in ("binary", "multilabel"):
            return math.log(2)
        if self.task == "regression":
            return 1.0
        return None

    def decay_patch(self, epochs: int) -> dict[str, Any]:
        """Weight decay strong enough to act within the run: lr · wd · steps ≈ 1 (the weights' e-folding time is the
        run; AdamW and SGD both shrink w by lr · wd per step), and at least 10x the current one."""
        steps = (self.steps_per_epoch or 0) * epochs
        wd = max(1 / (self.lr * steps) if self.lr and steps else 0.1, 10 * (self.weight_decay or 0.0))
        return {"optimizer.weight_decay": float(f"{wd:.2g}")}

    def lr_patch(self, factor: float) -> dict[str, Any]:
        return {"optimizer.lr": float(f"{self.lr * factor:.3g}")} if self.lr else {}


def _median(xs):
    xs = [x for x in xs if x == x and not math.isinf(x)]
    return statistics.median(xs) if xs else float("nan")


def _recent(samples: list[Sample], frac: float = 0.5) -> list[Sample]:
    """The later part of the samples (the run's state once past its first steps), at least one."""
    return samples[int(len(samples) * (1 - frac)):] or samples[-1:]


def _ema(xs, alpha: float = 0.1) -> np.ndarray:
    """m_0 = x_0, m_t = (1 − α)·m_{t−1} + α·x_t, as one linear filter (the doctor runs it every epoch)."""
    x = np.asarray(xs, dtype=np.float64)
    if not len(x):
        return x
    return lfilter([alpha], [1.0, alpha - 1.0], x, zi=[(1.0 - alpha) * x[0]])[0]


# ---------------------------------------------------------------- structural causes

def grad_to_weight(sample: Sample) -> float:
    """‖∇W‖ / ‖W‖ over all sampled layers: the relative change one SGD step at LR 1 would make."""
    w = math.sqrt(sum(v * v for v in sample.weight_norm.values()))
    return sample.total_grad_norm / w if w > 0 else 0.0


def gradient_findings(samples: list[Sample], ctx: Context) -> list[Finding]:
    """vanishing_gradients / exploding_gradients from the first/last layer gradient ratio and growth."""
    out: list[Finding] = []
    usable = [s for s in samples if len(s.grad_norm) >= 2]
    if not usable:
        return out
    first, last = list(usable[0].grad_norm)[0], list(usable[0].grad_norm)[-1]
    ratios = [s.grad_norm[first] / s.grad_norm[last] if s.grad_norm[last] > 0 else float("nan") for s in usable]
    recent = _median(ratios[len(ratios) // 2:] or ratios)
    t = THRESHOLDS
    low = [(s, r) for s, r in zip(usable, ratios) if r < t["vanishing_ratio"]]
    share = len(low) / len(usable)

    def persistent(hits: list) -> bool:
        return len(hits) / len(usable) >= t["persistent_share"] or len(hits) >= t["persistent_samples"]

    # vanishing for a good part of the run, even if the optimizer later escaped it, or still at the end
    if low and (persistent(low) or recent < t["vanishing_ratio"]):
        s = low[0][0]
        worst = _median(r for _, r in low)
        out.append(Finding(
            "vanishing_gradients", "warning", layer=first, epoch=s.epoch, step=s.step,
            evidence={"first_last_grad_ratio": worst, "share_of_samples": share,
                      "first_layer_grad_norm": s.grad_norm[first]},
            thresholds={"first_last_grad_ratio": f"< {t['vanishing_ratio']:g}",
                        "share_of_samples": f">= {t['persistent_share']:g} (or {t['persistent_samples']:g} samples, "
                                            "or at the end)"},
            message=f"The first layer's gradient was {worst:.1e} of the last layer's on {share:.0%} of the sampled steps: "
                    "the early layers barely learned. "
                    "Use ReLU-family activations with He initialization, normalization layers or residual connections.",
            prescription=[{"action": "use ReLU with He initialization", "recipe_patch": {"model.activation": "relu",
                                                                                     "model.init": "he"}},
                          {"action": "add batch normalization", "recipe_patch": {"model.norm": "batch"}}]))
    growth = usable[-1].total_grad_norm / usable[0].total_grad_norm if usable[0].total_grad_norm > 0 else 0.0
    high = [(s, r) for s, r in zip(usable, ratios) if r > t["exploding_ratio"]]
    # the same for exploding: at the end, or for a good part of the run (a chaotic start the optimizer later tamed)
    exploding_ratio = recent > t["exploding_ratio"] or bool(high) and persistent(high)
    # a gradient larger than the weights it updates (one sample is enough: such a step overshoots at once);
    # growth only counts up to such a size: from a near-zero start (a tiny init) it is the network waking up
    big = [s for s in usable if grad_to_weight(s) > t["grad_weight_high"]]
    last = usable[-1]
    grown = growth > t["grad_growth"] and (not last.weight_norm or grad_to_weight(last) > t["grad_weight_high"] / 3)
    if exploding_ratio or big or grown or not math.isfinite(usable[-1].total_grad_norm):
        s = high[0][0] if exploding_ratio else big[0] if big else usable[-1]
        ratio = recent if recent > t["exploding_ratio"] else _median(r for _, r in high) if high else recent
        out.append(Finding(
            "exploding_gradients", "warning", layer=first if exploding_ratio else None, epoch=s.epoch, step=s.step,
            evidence={"first_last_grad_ratio": ratio, "share_of_samples": len(high) / len(usable),
                      "grad_norm_growth": growth, "grad_norm": s.total_grad_norm, "grad_to_weight_norm": grad_to_weight(s)},
            thresholds={"first_last_grad_ratio": f"> {t['exploding_ratio']:g}", "grad_norm_growth": f"> {t['grad_growth']:g}",
                        "grad_to_weight_norm": f"> {t['grad_weight_high']:g}"},
            message=f"Gradient norms are exploding (first/last ratio {ratio:.3g} on {len(high) / len(usable):.0%} of the "
                    f"sampled steps, growth {growth:.3g}x since the start, gradient {grad_to_weight(s):.3g}x the weights' "
                    "norm). "
                    "Clip gradients and lower the learning rate; check the initialization scale.",
            prescription=[{"action": "clip gradients by norm", "recipe_patch": {"train.grad_clip": {"norm": 1.0}}},
                          {"action": "lower the learning rate", "recipe_patch": ctx.lr_patch(0.3)}]))
    return out


def activation_findings(samples: list[Sample], ctx: Context) -> list[Finding]:
    """dead_units (ReLU layers whose units never fire) and saturated_activations (sigmoid/tanh at their bounds)."""
    out: list[Finding] = []
    recent = _recent(samples)
    t = THRESHOLDS
    for kind, key, thr in (("dead_units", "dead_fraction", t["dead_fraction"]), ("saturated_activations", "saturation",
                                                                                 t["saturation"])):
        names = list(recent[-1].__dict__[key]) if recent else []
        if not names:
            continue
        per_layer = {n: _median(getattr(s, key).get(n, float("nan")) for s in recent) for n in names}
        share = {n: sum(getattr(s, key).get(n, 0) >= thr for s in samples) / len(samples) for n in names}
        worst = max(names, key=lambda n: (max(per_layer[n], -1) if per_layer[n] == per_layer[n] else -1, share[n]))
        if per_layer[worst] < thr:  # not at the end: was it for a good part of the run?
            worst = max(names, key=lambda n: share[n])
        value = _median(getattr(s, key).get(worst, float("nan")) for s in samples if getattr(s, key).get(worst, 0) >= thr) \
            if share[worst] else per_layer[worst]
        if per_layer[worst] >= thr or share[worst] >= t["persistent_share"]:
            first = next((s for s in samples if getattr(s, key).get(worst, 0) >= thr), recent[-1])
            if kind == "dead_units":
                msg = (f"{value:.0%} of the units after '{worst}' never fire (ReLU outputs zero for every example): "
                       "they get no gradient and stop learning. Lower the LR, use LeakyReLU/GELU, He init or normalization.")
                rx = [{"action": "use a leaky activation", "recipe_patch": {"model.activation": "leaky_relu"}},
                      {"action": "lower the learning rate", "recipe_patch": ctx.lr_patch(0.3)}]
            else:
                msg = (f"{value:.0%} of the outputs of '{worst}' sit at the activation's bounds, where its gradient "
                       "vanishes. Use ReLU-family activations, or normalize before the activation.")
                rx = [{"action": "use ReLU with He initialization", "recipe_patch": {"model.activation": "relu",
                                                                                  "model.init": "he"}},
                      {"action": "normalize before the activation", "recipe_patch": {"model.norm": "batch"}}]
            out.append(Finding(kind, "warning", layer=worst, epoch=first.epoch, step=first.step,
                               evidence={key: value, "share_of_samples": share[worst],
                                         "layers_over_threshold": sum(v >= thr for v in per_layer.values())},
                               thresholds={key: f">= {thr:g}"}, message=msg, prescription=rx))
    return out


# ---------------------------------------------------------------- the loss curve per step

def loss_features(losses: list[float]) -> dict[str, float]:
    """Progress (fraction of the starting loss removed, smoothed), instability (share of steps where the
    smoothed loss rises), and the start/end levels."""
    x = np.asarray(losses, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if len(finite) < 4:
        return {"progress": float("nan"), "instability": float("nan"), "start": float("nan"), "end": float("nan")}
    k = max(1, len(finite) // 10)
    start, end = float(finite[:k].mean()), float(finite[-k:].mean())
    smooth = _ema(finite, alpha=min(0.3, 10 / len(finite)))
    rises = int(np.count_nonzero(smooth[1:] > smooth[:-1]))
    return {"progress": (start - end) / start if start > 0 else float("nan"),
            "instability": rises / (len(smooth) - 1), "start": start, "end": end}


def killed_units(samples: list[Sample]) -> float | None:
    """ReLU units alive at the first sample and dead at a later one, after steps that moved the weights by more
    than update_ratio_high: the largest such update ratio (Lu et al. 2019: large updates kill ReLUs), else None."""
    thr = THRESHOLDS["dead_fraction"]
    if not samples or max(samples[0].dead_fraction.values(), default=0.0) >= thr:
        return None  # dead from the start: the initialization, not the updates
    for i, s in enumerate(samples):
        if max(s.dead_fraction.values(), default=0.0) >= thr:
            biggest = max(_median(x.update_ratio.values()) for x in samples[:i + 1])
            return biggest if biggest > THRESHOLDS["update_ratio_high"] else None
    return None


def exploding_at_start(samples: list[Sample]) -> bool:
    """The first sample (gradients of the initial weights) already shows an exploding first/last ratio or a
    gradient larger than the weights: the initialization, not the updates, made them explode."""
    if not samples or len(samples[0].grad_norm) < 2:
        return False
    g = list(samples[0].grad_norm.values())
    ratio = g[0] / g[-1] if g[-1] > 0 else 0.0
    return ratio > THRESHOLDS["exploding_ratio"] or grad_to_weight(samples[0]) > THRESHOLDS["grad_weight_high"]


def weight_scale(samples: list[Sample]) -> float:
    """The median over layers of a unit's weight-vector norm at the last sample (nan before any sample)."""
    return _median(samples[-1].weight_scale.values()) if samples and samples[-1].weight_scale else float("nan")


def loss_findings(losses: list[float], steps: list[int], samples: list[Sample], ctx: Context,
                  structural: list[Finding], epoch: int) -> list[Finding]:
    """lr_too_high / lr_too_low / plateau, weighed against the structural explanations."""
    out: list[Finding] = []
    f = loss_features(losses)
    t = THRESHOLDS
    chance = ctx.chance_loss()
    upd = _median(_median(s.update_ratio.values()) for s in _recent(samples)) if samples else float("nan")
    far = chance is None or not math.isfinite(f["end"]) or f["end"] > ctx.fit_bar(t["far_from_fit"])
    explained = {x.id for x in structural} & {"dead_units", "saturated_activations", "vanishing_gradients",
                                              "exploding_gradients", "softmax_before_loss", "missing_zero_grad",
                                              "parameters_not_training"}
    evidence = {"loss_progress": f["progress"], "loss_instability": f["instability"], "median_update_ratio": upd,
                "loss_start": f["start"], "loss_end": f["end"]}
    first_upd = _median(samples[0].update_ratio.values()) if samples else float("nan")
    evidence["first_update_ratio"] = first_upd
    # too high: the loss does not settle (or rises) with large steps while far from a fit; or a first step so
    # large that it wrecked the model (units died, the loss stopped moving) - the cause behind those symptoms
    unsettled = f["instability"] > t["unstable"] and (upd > t["update_ratio_high"] or f["progress"] < -t["flat_progress"])
    wrecked = first_upd > t["first_update_high"] and ({"dead_units"} & explained or f["progress"] < t["flat_progress"])
    # units the updates killed: the cause is the step size even when the loss still ends near a fit
    killed = killed_units(samples) if "dead_units" in explained else None
    if killed is not None:
        evidence["update_ratio_before_units_died"] = killed
    # gradients that explode from the first sample on come from the initialization and explain an unstable loss;
    # an explosion that grew during training is what too large steps do: it does not excuse the LR
    excused = "missing_zero_grad" in explained or "exploding_gradients" in explained and exploding_at_start(samples)
    if (far and (unsettled or wrecked) or killed is not None) and not excused:
        if far and unsettled:
            message = (f"The training loss oscillates instead of falling (it rises on {f['instability']:.0%} of steps, "
                       f"updates change weights by {upd:.2g} of their norm per step). Lower the learning rate.")
        elif killed is not None:
            message = (f"ReLU units alive at the start died after steps that changed the weights by up to {killed:.2g} of "
                       "their norm (healthy steps: about 0.01): the learning rate is too high for this model.")
        else:
            message = (f"The first step changed the weights by {first_upd:.2g} of their norm and training never recovered "
                       f"(loss progress {f['progress']:.1%}). Lower the learning rate.")
        out.append(Finding(
            "lr_too_high", "warning", epoch=epoch, step=steps[-1] if steps else None, evidence=evidence,
            thresholds={"loss_instability": f"> {t['unstable']:g}", "median_update_ratio": f"> {t['update_ratio_high']:g}",
                        "first_update_ratio": f"> {t['first_update_high']:g}",
                        "update_ratio_before_units_died": f"> {t['update_ratio_high']:g}"},
            message=message,
            prescription=[{"action": "lower the learning rate 3x", "recipe_patch": ctx.lr_patch(1 / 3)},
                          {"action": "add warmup", "recipe_patch": {"schedule.warmup": 1}}]))
    elif f["progress"] < t["flat_progress"] and far and not explained:
        if upd < t["update_ratio_low"]:
            out.append(Finding(
                "lr_too_low", "warning", epoch=epoch, step=steps[-1] if steps else None, evidence=evidence,
                thresholds={"loss_progress": f"< {t['flat_progress']:g}", "median_update_ratio": f"< {t['update_ratio_low']:g}"},
                message=f"The loss has barely moved ({f['progress']:.1%} of its start) and each step changes the weights "
                        f"by only {upd:.1e} of their norm. Raise the learning rate (try `goodfit lr-find`).",
                prescription=[{"action": "raise the learning rate 10x", "recipe_patch": ctx.lr_patch(10)}]))
        else:
            scale = weight_scale(samples)
            evidence["weight_scale"] = scale
            if scale < t["tiny_weights"]:  # every unit's weights near zero: the saddle point at the origin
                message = (f"The loss is stuck ({f['progress']:.1%} progress) and the weights are tiny (a unit's weight "
                           f"vector has norm {scale:.2g}; the default initialization gives 0.58): the network sits at the "
                           "saddle point around zero, where every gradient is small. Initialize at the standard scale.")
                rx = [{"action": "use the default initialization", "recipe_patch": {"model.init": "default"}}]
            else:
                message = (f"The loss is stuck ({f['progress']:.1%} progress) although the weights move normally "
                           f"({upd:.1e} per step): a plateau. Lower the LR on plateaus, or change the model's capacity.")
                rx = [{"action": "reduce the LR on plateaus", "recipe_patch": {"schedule.name": "reduce_on_plateau"}}]
            out.append(Finding(
                "plateau", "warning", epoch=epoch, step=steps[-1] if steps else None, evidence=evidence,
                thresholds={"loss_progress": f"< {t['flat_progress']:g}", "weight_scale": f"< {t['tiny_weights']:g} (saddle)"},
                message=message, prescription=rx))
    return out


def initial_loss_finding(first_loss: float, ctx: Context) -> Finding | None:
    chance = ctx.chance_loss()
    if ctx.penalized:  # the first logged loss includes the weight penalty: it says nothing about the outputs
        return None
    if chance is None or not math.isfinite(first_loss) or first_loss <= THRESHOLDS["initial_loss_factor"] * chance:
        return None
    return Finding("bad_initial_loss", "warning", epoch=0, step=1,
                   evidence={"initial_loss": first_loss, "chance_loss": chance},
                   thresholds={"initial_loss": f"> {THRESHOLDS['initial_loss_factor']:g} x chance"},
                   message=f"The first loss {first_loss:.3g} is far above the {chance:.3g} of an uninformed prediction: "
                           "the initial outputs are too large or confidently wrong (initialization scale, a missing "
                           "normalization, or labels that do not match the outputs).",
                   prescription=[{"action": "use the default initialization", "recipe_patch": {"model.init": "default"}}])


# ---------------------------------------------------------------- curves after validation

# in-flight findings whose effect is a model that does not fit (they explain an underfit)
TRAINING_FAULTS = frozenset({"lr_too_high", "lr_too_low", "dead_units", "saturated_activations", "vanishing_gradients",
                             "exploding_gradients", "plateau", "softmax_before_loss", "missing_zero_grad",
                             "parameters_not_training"})


def curve_findings(history: list[dict[str, Any]], ctx: Context, best_epoch: int | None,
                   explained: frozenset[str] | set[str] = frozenset()) -> list[Finding]:
    """overfitting (with its onset epoch) / underfitting from the train and validation curves. Overfitting needs
    a model that fits its training data; a train/val gap alone is not one when the training split is imbalanced
    (`explained` holds class_imbalance): the validation split does not share its class prior. With a training
    fault among `explained` (the LR, dead units...) a smaller shortfall already counts as its underfit."""
    t = THRESHOLDS
    rows = [h for h in history if math.isfinite(h.get("train_loss", float("nan")))]
    if not rows or "val_loss" not in rows[0]:
        return []
    val = [h["val_loss"] for h in rows]
    train = [h["train_loss"] for h in rows]
    chance = ctx.chance_loss() or max(val[0], 1e-12)
    onset = min(range(len(val)), key=val.__getitem__)
    delivered = (best_epoch - 1) if (ctx.restore_best and best_epoch) else len(rows) - 1
    delivered = min(max(delivered, 0), len(rows) - 1)
    rise = (val[-1] - val[onset]) / max(val[onset], 1e-12)
    gap = (val[delivered] - train[delivered]) / chance
    out = []
    decay = {"action": "weight decay that acts within the run (lr x wd x steps ~ 1)", "recipe_patch": ctx.decay_patch(len(rows))}
    train_fell = train[-1] < train[onset]
    fits = chance is not None and train[-1] < ctx.fit_bar(t["far_from_fit"])  # else a rising val loss is broken training
    if rise > t["overfit_rise"] and train_fell and fits and onset < len(val) - 1:
        delivered_rise = (val[delivered] - val[onset]) / max(val[onset], 1e-12)
        severity = "warning" if delivered_rise > t["overfit_rise"] or gap > t["overfit_gap"] else "info"
        out.append(Finding(
            "overfitting", severity, epoch=onset + 1,
            evidence={"onset_epoch": onset + 1, "val_loss_min": val[onset], "val_loss_last": val[-1],
                      "val_rise": rise, "delivered_epoch": delivered + 1, "generalization_gap": gap},
            thresholds={"val_rise": f"> {t['overfit_rise']:g}", "generalization_gap": f"> {t['overfit_gap']:g} (warning)"},
            message=(f"Validation loss bottomed at epoch {onset + 1} and then rose {rise:.0%} while the training loss kept "
                     "falling. " + ("The delivered model is the best epoch's (early stopping cut the overfit off)."
                                    if severity == "info" else "The delivered model is overfit: regularize, or get more data.")),
            prescription=[decay,
                          {"action": "dropout", "recipe_patch": {"model.dropout": 0.3}}]))
    elif gap > t["overfit_gap"] and train[delivered] < 0.5 * val[delivered] and "class_imbalance" not in explained:
        out.append(Finding(
            "overfitting", "warning", epoch=delivered + 1,
            evidence={"generalization_gap": gap, "train_loss": train[delivered], "val_loss": val[delivered]},
            thresholds={"generalization_gap": f"> {t['overfit_gap']:g}"},
            message=f"The delivered model fits the training data far better than the validation data (gap {gap:.2f} of "
                    "the chance-level loss): it memorized. Regularize, augment, or get more data.",
            prescription=[decay,
                          {"action": "dropout", "recipe_patch": {"model.dropout": 0.3}}]))
    cause = sorted(TRAINING_FAULTS & set(explained))
    bar = ctx.fit_bar(t["far_with_cause"] if cause else t["far_from_fit"]) if ctx.chance_loss() else \
        (t["far_with_cause"] if cause else t["far_from_fit"]) * chance
    # a model as good as a linear fit of the same data is not underfitting: what remains is (about) noise
    beaten = ctx.baseline_loss is not None and val[delivered] <= t["baseline_margin"] * ctx.baseline_loss
    if train[delivered] > bar and val[delivered] > bar and not beaten:
        # still improving over the last fifth of the run: more time helps; stalled: more capacity does
        tail = max(2, len(rows) // 5)
        improving = len(rows) > tail and train[-1] < (1 - t["improving"]) * train[-tail]
        longer = {"action": "train longer", "recipe_patch": {"train.epochs": 2 * len(rows)}}
        wider = {"action": "a wider model", "recipe_patch": {"model.width": 4 * ctx.width if ctx.width else 256}}
        out.append(Finding(
            "underfitting", "warning", epoch=delivered + 1,
            evidence={"train_loss": train[delivered], "val_loss": val[delivered], "chance_loss": chance,
                      **({"linear_baseline_loss": ctx.baseline_loss} if ctx.baseline_loss is not None else {})},
            thresholds={"train_loss": f"> {t['far_with_cause' if cause else 'far_from_fit']:g} x chance"
                                      + (f" (with {', '.join(cause)})" if cause else ""),
                        **({"val_loss": f"> {t['baseline_margin']:g} x linear_baseline_loss"}
                           if ctx.baseline_loss is not None else {})},
            message=f"Training and validation loss both stay high ({train[delivered]:.3g} / {val[delivered]:.3g}, chance "
                    f"level {chance:.3g}): the model does not fit the data. "
                    + (f"Fix {' and '.join(cause)} first." if cause else
                       "It was still improving at the end: train longer." if improving else
                       "It had stopped improving: more capacity, or a higher LR."),
            prescription=[longer, wider] if improving else [wider, longer]))
    return out


# ---------------------------------------------------------------- code faults (any training loop)

def code_findings(samples: list[Sample], ctx: Context) -> list[Finding]:
    """softmax_before_loss, missing_zero_grad, parameters_not_training: bugs in the training code."""
    out: list[Finding] = []
    samples = [s for s in samples if s.probed]  # the probes run on the first samples, then one in four
    if not samples:
        return out
    probs = [s for s in samples if s.outputs_are_probabilities]
    if ctx.task == "classification" and len(probs) >= max(1, len(samples) // 2):
        out.append(Finding(
            "softmax_before_loss", "warning", epoch=probs[0].epoch, step=probs[0].step,
            evidence={"share_of_samples": len(probs) / len(samples)},
            thresholds={"share_of_samples": ">= 0.5 with every output row in [0, 1] summing to 1"},
            message="The model outputs probabilities (a softmax), but cross-entropy expects logits and applies its own "
                    "softmax: the loss cannot fall far and gradients are squashed. Return logits from the model.",
            prescription=[{"action": "remove the final softmax from the model"}]))
    stale = [s for s in samples[1:] if s.stale_grad > 0.1]  # step 1 has no previous gradient to leak
    if len(stale) >= max(1, (len(samples) - 1) // 2):
        out.append(Finding(
            "missing_zero_grad", "error", epoch=stale[0].epoch, step=stale[0].step,
            evidence={"stale_gradient_share": _median(s.stale_grad for s in stale),
                      "share_of_samples": len(stale) / max(1, len(samples) - 1)},
            thresholds={"stale_gradient_share": "> 0.1"},
            message="Each step's gradient still contains the previous steps' gradients: optimizer.zero_grad() is not "
                    "called before backward(), so the updates grow and point the wrong way.",
            prescription=[{"action": "call optimizer.zero_grad() before loss.backward() every step"}]))
    untrained = samples[-1].untrained
    if untrained:
        out.append(Finding(
            "parameters_not_training", "warning", epoch=samples[-1].epoch, step=samples[-1].step,
            layer=untrained[0].split(" (")[0], evidence={"layers": untrained, "count": len(untrained)},
            thresholds={"count": "> 0"},
            message=f"{len(untrained)} weight(s) never change: {', '.join(untrained[:4])}. If that is not a deliberate "
                    "freeze, set requires_grad=True and pass every parameter to the optimizer.",
            prescription=[{"action": "optimize all of model.parameters()"}]))
    return out
