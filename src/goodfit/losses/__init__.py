"""Losses: functions first, by family, and the registry recipes name them by.

Every loss is a function (`goodfit.losses.focal(logits, target, gamma=2.0)`) living in a module of
its family — `classification`, `regression`, `segmentation`, `generative`, `metric_learning` — and
wraps torch's built-in wherever one exists. `LOSSES[name](**options)` binds keyword options into an
`nn.Module` (`Loss`) whose forward takes the function's positional inputs; `build_loss` adds the
checks a recipe needs (known name, accepted options in range, a loss that fits the task, class
weights). Bad inputs raise `ValueError` naming the expected shape, dtype or range; bad recipe
options raise `UserError`.
"""
from __future__ import annotations

import difflib
import functools
import inspect

import torch
from torch import Tensor, nn

from goodfit.errors import UserError
from goodfit.losses._checks import is_number as _is_number
from goodfit.losses._checks import match_shape as _match_shape  # noqa: F401  (kept for older imports)
from goodfit.losses.classification import (bce_with_logits, binary_focal, class_balanced_weights, cross_entropy,
                                           distillation, focal, kl_div, multi_margin)
from goodfit.losses.generative import (GAN_KINDS, gan_discriminator, gan_generator, gradient_penalty, perplexity,
                                       token_cross_entropy, vae_elbo)
from goodfit.losses.metric_learning import batch_hard_triplet, contrastive, info_nce, triplet
from goodfit.losses.regression import huber, l1, log_cosh, mae, mse, pinball, quantile, smooth_l1
from goodfit.losses.segmentation import bce_dice, ce_dice, dice, focal_tversky, jaccard, tversky

__all__ = [
    "LOSSES", "LOSS_TASKS", "TASK_DEFAULT_LOSS", "Loss", "build_loss", "accepted_options",
    # classification
    "cross_entropy", "bce_with_logits", "focal", "binary_focal", "class_balanced_weights", "multi_margin",
    "kl_div", "distillation",
    # regression
    "mse", "mae", "l1", "huber", "smooth_l1", "log_cosh", "quantile", "pinball",
    # segmentation
    "dice", "jaccard", "tversky", "focal_tversky", "ce_dice", "bce_dice",
    # generation
    "token_cross_entropy", "perplexity", "vae_elbo", "gan_generator", "gan_discriminator", "gradient_penalty",
    "GAN_KINDS",
    # metric learning
    "contrastive", "triplet", "batch_hard_triplet", "info_nce",
]

TASK_DEFAULT_LOSS = {"classification": "cross_entropy", "binary": "bce_with_logits", "regression": "mse",
                     "multilabel": "bce_with_logits", "segmentation": "cross_entropy"}

_FUNCTIONS = {
    "cross_entropy": cross_entropy, "bce_with_logits": bce_with_logits, "focal": focal,
    "binary_focal": binary_focal, "multi_margin": multi_margin, "kl_div": kl_div, "distillation": distillation,
    "mse": mse, "mae": mae, "l1": l1, "huber": huber, "smooth_l1": smooth_l1, "log_cosh": log_cosh,
    "quantile": quantile, "pinball": pinball,
    "dice": dice, "jaccard": jaccard, "tversky": tversky, "focal_tversky": focal_tversky,
    "ce_dice": ce_dice, "bce_dice": bce_dice,
    "token_cross_entropy": token_cross_entropy, "vae_elbo": vae_elbo, "gan_generator": gan_generator,
    "gan_discriminator": gan_discriminator, "gradient_penalty": gradient_penalty,
    "contrastive": contrastive, "triplet": triplet, "batch_hard_triplet": batch_hard_triplet, "info_nce": info_nce,
}

_REGRESSION = ("mse", "mae", "l1", "huber", "smooth_l1", "log_cosh", "quantile", "pinball")
_SEGMENTATION = ("dice", "jaccard", "tversky", "focal_tversky", "ce_dice", "bce_dice")
LOSS_TASKS: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("classification", "segmentation"),
    "bce_with_logits": ("binary", "multilabel", "segmentation"),
    "focal": ("classification", "segmentation"),
    "binary_focal": ("binary", "multilabel", "segmentation"),
    "multi_margin": ("classification",),
    **{name: ("regression",) for name in _REGRESSION},
    **{name: ("segmentation",) for name in _SEGMENTATION},
    # need inputs a recipe's (output, target) does not provide: functions and modules only
    **{name: () for name in ("kl_div", "distillation", "token_cross_entropy", "vae_elbo", "gan_generator",
                             "gan_discriminator", "gradient_penalty", "contrastive", "triplet",
                             "batch_hard_triplet", "info_nce")},
}

# Options holding tensors: checked finite and non-negative, kept as buffers that follow .to(device).
_TENSOR_OPTIONS = {"weight", "pos_weight", ("focal", "alpha"), ("gradient_penalty", "eps")}


def _number(low=None, high=None, low_open=False, high_open=False):
    def check(v):
        return (_is_number(v) and (low is None or (v > low if low_open else v >= low))
                and (high is None or (v < high if high_open else v <= high)))
    return check


_NON_NEGATIVE = (_number(0), "a non-negative number")
_POSITIVE = (_number(0, low_open=True), "a positive number")
_UNIT = (_number(0, 1), "a number in [0, 1]")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
_OPTION_RULES = {
    "label_smoothing": _UNIT,
    "delta": _POSITIVE,
    "beta": _NON_NEGATIVE,
    "alpha": _NON_NEGATIVE,
    "gamma": _NON_NEGATIVE,
    "margin": _NON_NEGATIVE,
    "smooth": _NON_NEGATIVE,
    "dice_weight": _NON_NEGATIVE,
    "lambda_gp": _NON_NEGATIVE,
    "temperature": _POSITIVE,
    "p": _POSITIVE,
    "tau": (lambda v: (_number(0, 1, True, True)(v) or isinstance(v, (list, tuple)) and len(v) > 0
                       and all(_number(0, 1, True, True)(t) for t in v)),
            "a number in (0, 1) or a list of them"),
    "ignore_index": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "kind": (lambda v: v in GAN_KINDS, "one of " + ", ".join(GAN_KINDS)),
    "reconstruction": (lambda v: v in ("bce", "mse"), "one of bce, mse"),
    "normalize": _BOOL, "symmetric": _BOOL, "swap": _BOOL, "return_terms": _BOOL,
    "reduction": (lambda v: v in ("mean", "sum", "none"), "one of mean, sum, none"),
}
_LOSS_OPTION_RULES = {  # where one loss reads an option differently
    ("binary_focal", "alpha"): (lambda v: v is None or _UNIT[0](v), "a number in [0, 1] or null"),
    ("distillation", "alpha"): _UNIT,
    ("focal_tversky", "gamma"): _POSITIVE,
    ("multi_margin", "p"): (lambda v: v in (1, 2) and not isinstance(v, bool), "1 or 2"),
}


def _did_you_mean(name: str, choices) -> str:
    """A hint naming the closest choice, or listing them all."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else "choose from: " + ", ".join(choices)


def accepted_options(name: str) -> tuple[str, ...]:
    """The keyword options the loss `name` accepts."""
    params = inspect.signature(_FUNCTIONS[name]).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _check_option(loss: str, key: str, value):
    """The option's value, as a tensor for weights; UserError when it is out of range."""
    if key in _TENSOR_OPTIONS or (loss, key) in _TENSOR_OPTIONS:
        if value is None:
            return None
        try:
            tensor = torch.as_tensor(value, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            tensor = None
        if tensor is None or not bool(torch.isfinite(tensor).all()) or bool((tensor < 0).any()):
            raise UserError(f"loss {loss!r}: option {key!r} must hold finite non-negative numbers, got {value!r}")
        return tensor
    rule = _LOSS_OPTION_RULES.get((loss, key), _OPTION_RULES.get(key))
    if rule is not None and not rule[0](value):
        raise UserError(f"loss {loss!r}: option {key!r} must be {rule[1]}, got {value!r}")
    return value


class Loss(nn.Module):
    """A registered loss as a module: its functional form with the options bound.

    forward(*inputs) calls the function with the same positional inputs, e.g. (output, target) for
    recipe losses, (student_logits, teacher_logits, target) for distillation, (critic, real, fake)
    for gradient_penalty.
    """

    def __init__(self, name: str, **options):
        super().__init__()
        accepted = accepted_options(name)
        for key in options:
            if key not in accepted:
                raise UserError(
                    f"loss {name!r} does not accept option {key!r}; it accepts: {', '.join(accepted)}",
                    _did_you_mean(key, accepted),
                )
        self.name = name
        self.fn = _FUNCTIONS[name]
        self.options = {}
        for key, value in options.items():
            value = _check_option(name, key, value)
            if isinstance(value, Tensor):  # a buffer follows the module through .to(device)
                self.register_buffer(key, value, persistent=False)
            else:
                self.options[key] = value

    def forward(self, *inputs):
        """The loss of the inputs, typically `output` against `target`."""
        return self.fn(*inputs, **self.options, **dict(self.named_buffers(recurse=False)))

    def extra_repr(self) -> str:
        """The name and options, as printed by print(module)."""
        shown = {**self.options, **{k: v.tolist() for k, v in self.named_buffers(recurse=False)}}
        return ", ".join([repr(self.name)] + [f"{k}={v!r}" for k, v in shown.items()])


LOSSES: dict[str, callable] = {name: functools.partial(Loss, name) for name in _FUNCTIONS}


def build_loss(name: str, task: str, *, class_weights: Tensor | None = None, **options) -> nn.Module:
    """The loss module a recipe asks for, checked against the task; class_weights (one per class)
    become the loss's own class weighting: CE's, multi_margin's and ce_dice's weight, focal's alpha;
    for the binary losses, two values (class 0, class 1) become BCE's pos_weight w1/w0 or
    binary_focal's alpha w1/(w0 + w1)."""
    if name not in LOSSES:
        raise UserError(f"unknown loss {name!r}; available: {', '.join(LOSSES)}", _did_you_mean(name, LOSSES))
    if task not in TASK_DEFAULT_LOSS:
        raise UserError(f"no losses for task {task!r}; tasks: {', '.join(TASK_DEFAULT_LOSS)}",
                        _did_you_mean(task, TASK_DEFAULT_LOSS))
    if task not in LOSS_TASKS[name]:
        fitting = [loss for loss, tasks in LOSS_TASKS.items() if task in tasks]
        hint = f"use {TASK_DEFAULT_LOSS[task]!r} (the default), or one of: {', '.join(fitting)}"
        if not LOSS_TASKS[name]:
            raise UserError(f"loss {name!r} has no recipe task: its inputs are not a model output and a target, "
                            f"so it does not fit task {task!r}; call goodfit.losses.{_FUNCTIONS[name].__name__} "
                            f"or LOSSES[{name!r}] from your own training step", hint)
        raise UserError(f"loss {name!r} does not fit task {task!r}", hint)
    if class_weights is not None:
        options = _with_class_weights(name, options, class_weights)
    return LOSSES[name](**options)


_CLASS_WEIGHT_OPTION = {"cross_entropy": "weight", "multi_margin": "weight", "ce_dice": "weight", "focal": "alpha",
                        "bce_with_logits": "pos_weight", "bce_dice": "pos_weight", "binary_focal": "alpha"}


def _with_class_weights(name: str, options: dict, class_weights) -> dict:
    """Options with per-class weights mapped onto the loss's own weighting option."""
    if name not in _CLASS_WEIGHT_OPTION:
        raise UserError(f"class_weights apply to classification losses ({', '.join(_CLASS_WEIGHT_OPTION)}), "
                        f"not to {name!r}", "set data.balance to none or sampler")
    weights = torch.as_tensor(class_weights, dtype=torch.float32).reshape(-1)
    key = _CLASS_WEIGHT_OPTION[name]
    if name in ("bce_with_logits", "bce_dice", "binary_focal"):
        if weights.numel() != 2:
            raise UserError(f"binary class_weights need two values (class 0, class 1), got {weights.numel()}")
        if name == "binary_focal":  # α_t = α for positives, 1 − α for negatives: α ∝ w1, 1 − α ∝ w0
            value = float(weights[1] / weights.sum())
        else:
            # BCE weighs only positives: w1/w0 gives the same gradients as weighing both, up to the factor w0.
            value = weights[1] / weights[0]
    else:
        value = weights
    if options.get(key) is not None:
        raise UserError(f"loss {name!r}: give either class_weights or option {key!r}, not both")
    return {**options, key: value}
