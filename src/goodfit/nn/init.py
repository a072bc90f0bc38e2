"""Weight initialization by scheme, for any nn.Module; torch.nn.init does every draw.

Recipe spelling (`model.init`): a scheme name with optional keyword arguments, numbers or words:
`he`, `he(mode=fan_out)`, `xavier(distribution=normal)`, `orthogonal`, `lsuv(tol=0.05)`, `zeros`,
`constant(value=0.1)`, `normal(std=0.02)`, `uniform(a=0.05)`. Parsed by a regular expression,
never evaluated.

Every Linear and convolution weight gets the scheme; biases start at zero, except under
`default` (torch's own initialization, left untouched) and `constant` (the constant, so that
the symmetry is complete); normalization layers are reset to weight 1, bias 0. Gains follow the
model's activation: its first activation module, unless `activation=` names one.
"""
from __future__ import annotations

import contextlib
import difflib
import math
import re
from typing import Any

import torch
from torch import Tensor, nn

from goodfit.errors import UserError
from goodfit.nn.dropout import STOCHASTIC

WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd)
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)

# scheme -> its options and their defaults (None: derived from the activation)
SCHEMES: dict[str, dict[str, Any]] = {
    "default": {},
    "zeros": {},
    "constant": {"value": 0.1},
    "normal": {"std": 0.02},
    "uniform": {"a": 0.05},
    "xavier": {"distribution": "uniform", "gain": None},
    "he": {"mode": "fan_in", "distribution": "normal"},
    "kaiming": {"mode": "fan_in", "distribution": "normal"},
    "orthogonal": {"gain": None},
    "lsuv": {"tol": 0.05, "max_iter": 10},
}
_CHOICES = {"distribution": ("uniform", "normal"), "mode": ("fan_in", "fan_out")}
_COMMON = ("activation", "slope")  # accepted by every scheme: the activation the gains follow

# activation name -> torch's nonlinearity name for calculate_gain
_NONLINEARITY = {
    "relu": "relu", "gelu": "relu", "silu": "relu", "elu": "relu", "softplus": "relu", "mish": "relu",
    "leaky_relu": "leaky_relu", "tanh": "tanh", "sigmoid": "sigmoid",
    # self-normalizing nets need Var(W) = 1/fan_in (Klambauer et al. 2017); torch's 'selu' gain
    # of 3/4 gives that up, and its docs say to pass 'linear' for SELU networks
    "selu": "linear", "identity": "linear", "linear": "linear",
}
_MODULE_ACTIVATION = [(nn.LeakyReLU, "leaky_relu"), (nn.ReLU, "relu"), (nn.GELU, "gelu"), (nn.SiLU, "silu"),
                      (nn.SELU, "selu"), (nn.ELU, "elu"), (nn.Softplus, "softplus"), (nn.Mish, "mish"),
                      (nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid")]


def parse(spec: str) -> tuple[str, dict[str, float | str]]:
    """'normal(std=0.02)' -> ('normal', {'std': 0.02}); 'he(mode=fan_out)' -> ('he', {'mode': 'fan_out'})."""
    m = re.fullmatch(r"\s*([a-z_]+)\s*(?:\((.*)\))?\s*", spec)
    if not m:
        raise UserError(f"model.init: cannot read '{spec}'", "e.g. he, xavier, normal(std=0.02), he(mode=fan_out)")
    name, args = m.group(1), {}
    for part in filter(None, (p.strip() for p in (m.group(2) or "").split(","))):
        km = re.fullmatch(r"([a-z_]+)\s*=\s*([a-z_]+|[-+0-9.eE]+)", part)
        if not km:
            raise UserError(f"model.init: cannot read argument '{part}' of '{spec}'", "arguments look like std=0.02")
        key, raw = km.groups()
        if re.fullmatch(r"[a-z_]+", raw):
            args[key] = raw
            continue
        try:
            args[key] = float(raw)
        except ValueError:
            raise UserError(f"model.init: '{raw}' is not a number in '{spec}'") from None
    return name, args


def find_activation(module: nn.Module) -> tuple[str, float | None]:
    """(name, negative slope or None) of the first activation module; ('linear', None) if there is none."""
    for m in module.modules():
        for cls, name in _MODULE_ACTIVATION:
            if isinstance(m, cls):
                return name, (m.negative_slope if name == "leaky_relu" else None)
    return "linear", None


def gain(activation: str = "relu", slope: float | None = None) -> float:
    """torch's recommended gain for `activation` (ReLU-like ones take ReLU's √2; SELU takes 1, as in SNNs)."""
    nonlinearity = _nonlinearity(activation)
    return nn.init.calculate_gain(nonlinearity, _slope(nonlinearity, slope))


def xavier_gain(activation: str = "relu", slope: float | None = None) -> float:
    """Glorot & Bengio's gain 1 (their derivation assumes a unit-slope activation symmetric about 0), except
    tanh's 5/3 from torch, which offsets its saturation. No factor for ReLU's halving: that is He's correction."""
    return gain("tanh") if _nonlinearity(activation) == "tanh" else 1.0


def matched(module: nn.Module) -> str:
    """The scheme matched to the module's activation: `he` for the ReLU family (He et al. 2015), `xavier` for
    tanh/sigmoid (Glorot & Bengio 2010), torch's `default` when there is no such activation."""
    nonlinearity = _NONLINEARITY.get(find_activation(module)[0], "linear")
    return {"relu": "he", "leaky_relu": "he", "tanh": "xavier", "sigmoid": "xavier"}.get(nonlinearity, "default")


def _nonlinearity(activation: str) -> str:
    if activation not in _NONLINEARITY:
        raise UserError(f"init: no gain known for activation '{activation}'", "known: " + ", ".join(_NONLINEARITY))
    return _NONLINEARITY[activation]


def _slope(nonlinearity: str, slope: float | None) -> float | None:
    return (0.01 if slope is None else slope) if nonlinearity == "leaky_relu" else None


def _check_options(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    """The scheme's options with defaults filled; unknown names and bad values are user errors."""
    if name not in SCHEMES:
        close = difflib.get_close_matches(name, list(SCHEMES), n=1)
        raise UserError(f"model.init: unknown scheme '{name}'",
                        f"did you mean '{close[0]}'?" if close else "available: " + ", ".join(SCHEMES))
    allowed = SCHEMES[name]
    unknown = sorted(set(opts) - set(allowed) - set(_COMMON))
    if unknown:
        raise UserError(f"model.init: '{name}' takes {sorted(allowed) or 'no arguments'}, got {unknown}")
    out = {**allowed, **{k: v for k, v in opts.items() if k in allowed}}
    for key, choices in _CHOICES.items():
        if key in out and out[key] not in choices:
            raise UserError(f"model.init: {name}({key}=...) must be one of {', '.join(choices)}, got {out[key]!r}")
    for key in ("value", "std", "a", "gain", "tol", "max_iter"):
        v = out.get(key)
        if v is not None and (isinstance(v, str) or (key != "value" and v < 0) or not math.isfinite(v)):
            raise UserError(f"model.init: {name}({key}=...) must be a {'finite' if key == 'value' else 'non-negative'} "
                            f"number, got {v!r}")
    if name == "lsuv" and (out["tol"] <= 0 or out["max_iter"] < 1):
        raise UserError("model.init: lsuv needs tol > 0 and max_iter >= 1")
    return out


def apply(module: nn.Module, scheme: str = "default", *, x: Tensor | None = None, **opts) -> nn.Module:
    """Initialize `module` in place by `scheme` (a name or recipe spec; `opts` add to or override its
    arguments); `x` is a batch of inputs, which `lsuv` needs. Returns the module."""
    name, parsed = parse(scheme)
    opts = {**parsed, **opts}
    act = opts.get("activation")
    if act is None:
        act, found_slope = find_activation(module)
        slope = opts.get("slope", found_slope)
    else:
        slope = opts.get("slope")
    if slope is not None and (isinstance(slope, (str, bool)) or not math.isfinite(slope)):
        raise UserError(f"model.init: slope must be a number, got {slope!r}")
    o = _check_options(name, opts)
    if name == "default":
        return module
    if name == "lsuv":
        if x is None:
            raise UserError("model.init: lsuv needs a batch of training inputs to measure variances on",
                            "goodfit.run passes one; from Python call apply(model, 'lsuv', x=batch)")
        lsuv(module, x, tol=o["tol"], max_iter=int(o["max_iter"]))
        return module
    fill = _weight_fill(name, o, act, slope)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, WEIGHTED):
                fill(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, o["value"]) if name == "constant" else nn.init.zeros_(m.bias)
            elif isinstance(m, NORMS):
                reset_norm(m)
    return module


def _weight_fill(name: str, o: dict[str, Any], act: str, slope: float | None):
    """The torch.nn.init call drawing one weight tensor under scheme `name`."""
    nonlinearity = _nonlinearity(act)
    if name in ("he", "kaiming"):
        kaiming = nn.init.kaiming_normal_ if o["distribution"] == "normal" else nn.init.kaiming_uniform_
        a = _slope(nonlinearity, slope) or 0.0
        return lambda w: kaiming(w, a=a, mode=o["mode"], nonlinearity=nonlinearity)
    if name == "xavier":
        g = xavier_gain(act, slope) if o["gain"] is None else o["gain"]
        xavier = nn.init.xavier_normal_ if o["distribution"] == "normal" else nn.init.xavier_uniform_
        return lambda w: xavier(w, gain=g)
    if name == "orthogonal":
        g = gain(act, slope) if o["gain"] is None else o["gain"]
        return lambda w: nn.init.orthogonal_(w, gain=g)
    return {"zeros": nn.init.zeros_,
            "constant": lambda w: nn.init.constant_(w, o["value"]),
            "normal": lambda w: nn.init.normal_(w, 0.0, o["std"]),
            "uniform": lambda w: nn.init.uniform_(w, -o["a"], o["a"])}[name]


def reset_norm(m: nn.Module) -> None:
    """A normalization layer's affine parameters to the identity: weight 1, bias 0."""
    if getattr(m, "weight", None) is not None:
        nn.init.ones_(m.weight)
    if getattr(m, "bias", None) is not None:
        nn.init.zeros_(m.bias)


# ---------------------------------------------------------------- LSUV

class _Stop(Exception):
    """Raised by a hook once it has the output it needs: the rest of the forward pass is skipped."""


@contextlib.contextmanager
def measuring(module: nn.Module):
    """Forward passes as training sees them (batch statistics in norm layers) but without dropout or
    drop-path noise, and without side effects: running statistics and train/eval modes are restored."""
    modes = [(m, m.training) for m in module.modules()]
    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    module.train()
    for m in module.modules():
        if isinstance(m, STOCHASTIC):
            m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for b, saved in buffers:
            b.copy_(saved)
        for m, training in modes:
            m.training = training


def forward_order(module: nn.Module, x: Tensor, types=WEIGHTED) -> list[tuple[str, nn.Module]]:
    """(name, layer) of each layer of `types`, in the order a forward pass calls them (each once)."""
    names = {m: n for n, m in module.named_modules()}
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod) if mod not in order else None)
             for m in module.modules() if isinstance(m, types)]
    try:
        with measuring(module):
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return [(names[m], m) for m in order]


def output_variance(module: nn.Module, layer: nn.Module, x: Tensor) -> float:
    """Variance of `layer`'s output over all its elements when `module` runs on `x` (in `measuring` mode)."""
    seen: list[float] = []

    def hook(mod, inputs, out):
        seen.append(out.float().var().item())
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        with measuring(module):
            module(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise ValueError("the layer was not called in the forward pass")
    return seen[0]


def lsuv(module: nn.Module, x: Tensor, *, tol: float = 0.05, max_iter: int = 10) -> dict[str, float]:
    """Layer-sequential unit variance (Mishkin & Matas 2016): orthonormal weights, zero biases, then for each
    layer in forward order scale W by 1/√Var(output) on `x` until |Var − 1| < tol (at most max_iter times).
    Normalization layers are reset to the identity. Returns each layer's final output variance."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, WEIGHTED):
                nn.init.orthogonal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, NORMS):
                reset_norm(m)
    x = x.to(next(module.parameters()).device)
    final = {}
    for name, layer in forward_order(module, x):
        var = output_variance(module, layer, x)
        for _ in range(max_iter):
            if abs(var - 1.0) < tol or not var > 1e-12:  # a constant output cannot be rescaled to unit variance
                break
            with torch.no_grad():
                layer.weight.mul_(var ** -0.5)
            var = output_variance(module, layer, x)
        final[name] = var
    return final
