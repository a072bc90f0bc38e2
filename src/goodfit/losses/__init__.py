"""Losses: torch's built-ins behind clear shape checks, and the registry recipes name them by.

Each loss is a function first (`cross_entropy`, `bce_with_logits`, `mse`, `l1`, `huber`);
`LOSSES[name](**options)` binds options into an `nn.Module`, and `build_loss` adds the checks a
recipe needs (known name, accepted options, a loss that fits the task, class weights).
"""
from __future__ import annotations

import difflib
import functools
import inspect

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from goodfit.errors import UserError

__all__ = [
    "LOSSES", "LOSS_TASKS", "TASK_DEFAULT_LOSS", "Loss", "build_loss",
    "cross_entropy", "bce_with_logits", "mse", "l1", "huber",
]

TASK_DEFAULT_LOSS = {"classification": "cross_entropy", "binary": "bce_with_logits", "regression": "mse"}


def _match_shape(name: str, output: Tensor, target: Tensor) -> Tensor:
    """The target reshaped to the output's shape when they differ only by (N,) vs (N, 1)."""
    if output.shape == target.shape:
        return target
    if output.ndim == 2 and output.shape[1] == 1 and target.shape == output.shape[:1]:
        return target.unsqueeze(1)
    if output.ndim == 1 and target.ndim == 2 and target.shape == (output.shape[0], 1):
        return target.reshape(-1)
    raise ValueError(f"{name}: output of shape {tuple(output.shape)} needs a target of the same shape "
                     f"(or (N,) with (N, 1)), got {tuple(target.shape)}")


def cross_entropy(logits: Tensor, target: Tensor, *, label_smoothing: float = 0.0,
                  weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy of logits (N, K, *) against class indices (N, *) or probabilities (N, K, *)."""
    if logits.ndim < 2:
        raise ValueError(f"cross_entropy: logits must have shape (N, K), got {tuple(logits.shape)}")
    if target.is_floating_point():  # soft targets, as mixup and cutmix produce
        if target.shape != logits.shape:
            raise ValueError(f"cross_entropy: probability targets must have the logits' shape "
                             f"{tuple(logits.shape)}, got {tuple(target.shape)}; class indices must be integers")
        target = target.to(logits.dtype)
    else:
        expected = (logits.shape[0], *logits.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(f"cross_entropy: logits of shape {tuple(logits.shape)} need integer class "
                             f"targets of shape {expected}, got {tuple(target.shape)}")
        target = target.long()
    if weight is not None:
        weight = weight.to(logits)
    return F.cross_entropy(logits, target, weight=weight, label_smoothing=label_smoothing, reduction=reduction)


def bce_with_logits(logits: Tensor, target: Tensor, *, pos_weight: Tensor | None = None,
                    reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on logits (N,) or (N, 1), targets of any numeric dtype in [0, 1]."""
    target = _match_shape("bce_with_logits", logits, target).to(logits.dtype)
    if pos_weight is not None:
        pos_weight = pos_weight.to(logits)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction=reduction)


def mse(pred: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """Mean squared error; (N,) and (N, 1) are matched to each other."""
    return F.mse_loss(pred, _match_shape("mse", pred, target).to(pred.dtype), reduction=reduction)


def l1(pred: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """Mean absolute error; (N,) and (N, 1) are matched to each other."""
    return F.l1_loss(pred, _match_shape("l1", pred, target).to(pred.dtype), reduction=reduction)


def huber(pred: Tensor, target: Tensor, *, delta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Huber loss: squared below `delta`, linear above, so outliers pull less than with MSE."""
    target = _match_shape("huber", pred, target).to(pred.dtype)
    return F.huber_loss(pred, target, delta=delta, reduction=reduction)


_FUNCTIONS = {"cross_entropy": cross_entropy, "bce_with_logits": bce_with_logits,
              "mse": mse, "l1": l1, "huber": huber}

LOSS_TASKS: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("classification",), "bce_with_logits": ("binary",),
    "mse": ("regression",), "l1": ("regression",), "huber": ("regression",),
}

_TENSOR_OPTIONS = ("weight", "pos_weight")
_OPTION_RULES = {
    "label_smoothing": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "delta": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "reduction": (lambda v: v in ("mean", "sum", "none"), "one of mean, sum, none"),
}


def _is_number(value) -> bool:
    """A real number, not a bool (YAML `true` is not a smoothing factor)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    if key in _TENSOR_OPTIONS:
        if value is None:
            return None
        try:
            tensor = torch.as_tensor(value, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            tensor = None
        if tensor is None or not bool(torch.isfinite(tensor).all()) or bool((tensor < 0).any()):
            raise UserError(f"loss {loss!r}: option {key!r} must hold finite non-negative numbers, got {value!r}")
        return tensor
    rule = _OPTION_RULES.get(key)
    if rule is not None and not rule[0](value):
        raise UserError(f"loss {loss!r}: option {key!r} must be {rule[1]}, got {value!r}")
    return value


class Loss(nn.Module):
    """A registered loss as a module: its functional form with the options bound."""

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

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        """The loss of `output` against `target`."""
        return self.fn(output, target, **self.options, **dict(self.named_buffers(recurse=False)))

    def extra_repr(self) -> str:
        """The name and options, as printed by print(module)."""
        shown = {**self.options, **{k: v.tolist() for k, v in self.named_buffers(recurse=False)}}
        return ", ".join([repr(self.name)] + [f"{k}={v!r}" for k, v in shown.items()])


LOSSES: dict[str, callable] = {name: functools.partial(Loss, name) for name in _FUNCTIONS}


def build_loss(name: str, task: str, *, class_weights: Tensor | None = None, **options) -> nn.Module:
    """The loss module a recipe asks for, checked against the task; class_weights become CE's weight
    or BCE's pos_weight (class 1's weight relative to class 0's)."""
    if name not in LOSSES:
        raise UserError(f"unknown loss {name!r}; available: {', '.join(LOSSES)}", _did_you_mean(name, LOSSES))
    if task not in TASK_DEFAULT_LOSS:
        raise UserError(f"no losses for task {task!r}; tasks: {', '.join(TASK_DEFAULT_LOSS)}",
                        _did_you_mean(task, TASK_DEFAULT_LOSS))
    if task not in LOSS_TASKS[name]:
        fitting = [loss for loss, tasks in LOSS_TASKS.items() if task in tasks]
        raise UserError(f"loss {name!r} does not fit task {task!r}",
                        f"use {TASK_DEFAULT_LOSS[task]!r} (the default), or one of: {', '.join(fitting)}")
    if class_weights is not None:
        options = _with_class_weights(name, options, class_weights)
    return LOSSES[name](**options)


def _with_class_weights(name: str, options: dict, class_weights) -> dict:
    """Options with per-class weights mapped onto the loss's own weighting option."""
    weights = torch.as_tensor(class_weights, dtype=torch.float32).reshape(-1)
    if name == "cross_entropy":
        key, value = "weight", weights
    elif name == "bce_with_logits":
        if weights.numel() != 2:
            raise UserError(f"binary class_weights need two values (class 0, class 1), got {weights.numel()}")
        # BCE weighs only positives: w1/w0 gives the same gradients as weighing both, up to the factor w0.
        key, value = "pos_weight", weights[1] / weights[0]
    else:
        raise UserError(f"class_weights apply to classification losses, not to {name!r}",
                        "set data.balance to none or sampler for regression")
    if options.get(key) is not None:
        raise UserError(f"loss {name!r}: give either class_weights or option {key!r}, not both")
    return {**options, key: value}
