"""Weight initialization schemes applied to every Linear and Conv layer of a model.

Recipe spelling: a name, optionally with numeric keyword arguments: `he`, `xavier`,
`orthogonal`, `zeros`, `constant(value=0.1)`, `normal(std=0.02)`, `uniform(a=0.05)`.
Parsed by a regular expression, never evaluated. Biases start at zero except for
`default` (torch's own) and `constant` (the constant, to show symmetry).
"""
from __future__ import annotations

import difflib
import re

from torch import nn

from goodfit.errors import UserError

_GAIN_NAME = {"relu": "relu", "leaky_relu": "leaky_relu", "tanh": "tanh", "sigmoid": "sigmoid", "selu": "selu"}


def parse_init(spec: str) -> tuple[str, dict[str, float]]:
    """'normal(std=0.02)' -> ('normal', {'std': 0.02})."""
    m = re.fullmatch(r"\s*([a-z_]+)\s*(?:\((.*)\))?\s*", spec)
    if not m:
        raise UserError(f"model.init: cannot read '{spec}'", "e.g. he, xavier, normal(std=0.02)")
    name, args = m.group(1), {}
    for part in filter(None, (p.strip() for p in (m.group(2) or "").split(","))):
        km = re.fullmatch(r"([a-z_]+)\s*=\s*([-+0-9.eE]+)", part)
        if not km:
            raise UserError(f"model.init: cannot read argument '{part}' of '{spec}'", "arguments look like std=0.02")
        try:
            args[km.group(1)] = float(km.group(2))
        except ValueError:
            raise UserError(f"model.init: '{km.group(2)}' is not a number in '{spec}'") from None
    return name, args


def _weight_fn(name: str, args: dict[str, float], act: str):
    gain_name = _GAIN_NAME.get(act, "linear")
    fns = {
        "he": lambda w: nn.init.kaiming_normal_(w, nonlinearity="leaky_relu" if gain_name == "leaky_relu" else "relu"),
        "kaiming": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "xavier": lambda w: nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain(gain_name)),
        "orthogonal": lambda w: nn.init.orthogonal_(w, gain=nn.init.calculate_gain(gain_name)),
        "zeros": nn.init.zeros_,
        "constant": lambda w: nn.init.constant_(w, args.get("value", 0.1)),
        "normal": lambda w: nn.init.normal_(w, 0.0, args.get("std", 0.02)),
        "uniform": lambda w: nn.init.uniform_(w, -args.get("a", 0.05), args.get("a", 0.05)),
    }
    if name not in fns:
        choices = ["default", *fns]
        close = difflib.get_close_matches(name, choices, n=1)
        raise UserError(f"model.init: unknown scheme '{name}'",
                        f"did you mean '{close[0]}'?" if close else "available: " + ", ".join(choices))
    allowed = {"constant": {"value"}, "normal": {"std"}, "uniform": {"a"}}.get(name, set())
    if set(args) - allowed:
        raise UserError(f"model.init: '{name}' takes {sorted(allowed) or 'no arguments'}, got {sorted(args)}")
    return fns[name]


def apply_init(model: nn.Module, spec: str, activation: str = "relu") -> nn.Module:
    """Initialize every Linear/Conv weight of `model` by `spec`; returns the model."""
    name, args = parse_init(spec)
    if name == "default":
        if args:
            raise UserError("model.init: 'default' takes no arguments")
        return model
    fn = _weight_fn(name, args, activation)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            fn(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, args.get("value", 0.1)) if name == "constant" else nn.init.zeros_(m.bias)
    return model
