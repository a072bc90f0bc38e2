"""Optimizer factory. Weight decay skips biases and normalization parameters by default:
decaying them only shrinks scales that normalization undoes (Loshchilov & Hutter 2019).

Optimizers are torch's, looked up by name in `OPTIMIZERS`. Parameter groups split by
learning-rate multiplier (discriminative LRs by name pattern, layer-wise LR decay by depth)
and, within each, into decayed / not-decayed parameters."""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Callable, Sequence

import torch
from torch import nn

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _named_trainable(model: nn.Module):
    """(module, full parameter name, parameter) for each trainable parameter, once each."""
    seen = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            yield module, f"{mname}.{pname}" if mname else pname, p


def _exempt(module: nn.Module, pname: str, p: torch.Tensor) -> bool:
    return isinstance(module, _NORMS) or pname.endswith("bias") or p.ndim <= 1


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict]:
    """[{decayed weights}, {biases and norm parameters, weight_decay 0}], frozen parameters left out."""
    decay, no_decay = [], []
    for module, name, p in _named_trainable(model):
        (no_decay if _exempt(module, name, p) and not decay_norm_and_bias else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return groups


def pattern_matches(name: str, pattern: str) -> bool:
    """Whether the glob matches the parameter name or one of its dotted prefixes ('backbone' and
    'backbone.*' both match 'backbone.0.weight')."""
    parts = name.split(".")
    return any(fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def pattern_multiplier(name: str, lr_multipliers: Sequence[tuple[str, float]] | None) -> float:
    """The multiplier of the first (glob, multiplier) that `pattern_matches` the parameter name; 1.0 if none."""
    for pattern, mult in lr_multipliers or ():
        if pattern_matches(name, pattern):
            return float(mult)
    return 1.0


def layer_decay_multipliers(model: nn.Module, layer_decay: float) -> dict[str, float]:
    """Top-level child name -> decay**(distance from the last child that has trainable parameters).
    Parameters held directly by `model` (no child) get the deepest decay (they sit before layer 0)."""
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    children = [n for n, c in model.named_children() if any(p.requires_grad for p in c.parameters())]
    n = len(children)
    out = {name: layer_decay ** (n - 1 - i) for i, name in enumerate(children)}
    out[""] = layer_decay ** n
    return out


def lr_param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False, *,
                    lr: float, lr_multipliers: Sequence[tuple[str, float]] | None = None,
                    layer_decay: float | None = None) -> list[dict]:
    """Groups keyed by (lr multiplier, decay / no_decay), in order of first appearance in the model.
    Each group carries lr = lr·multiplier and its `lr_mult`; without multipliers it is `param_groups`."""
    if not lr_multipliers and layer_decay is None:
        groups = param_groups(model, weight_decay, decay_norm_and_bias)
        for g in groups:
            g.update(lr=lr, lr_mult=1.0)
        return groups
    depth = layer_decay_multipliers(model, layer_decay) if layer_decay is not None else None
    keyed: dict[tuple[float, bool], dict] = {}
    for module, name, p in _named_trainable(model):
        mult = pattern_multiplier(name, lr_multipliers)
        if depth is not None:
            top = name.split(".", 1)[0] if "." in name else ""
            mult *= depth.get(top, depth[""])
        decayed = not (_exempt(module, name, p) and not decay_norm_and_bias)
        key = (mult, decayed)
        if key not in keyed:
            keyed[key] = {"params": [], "weight_decay": weight_decay if decayed else 0.0,
                          "name": f"{'decay' if decayed else 'no_decay'}@{mult:g}", "lr": lr * mult, "lr_mult": mult}
        keyed[key]["params"].append(p)
    return list(keyed.values())


def _betas(cfg):
    return tuple(getattr(cfg, "betas", (0.9, 0.999)))


def _sgd(groups, cfg):
    momentum = getattr(cfg, "momentum", 0.0)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=momentum, dampening=getattr(cfg, "dampening", 0.0),
                           nesterov=bool(getattr(cfg, "nesterov", False)) and momentum > 0)


def _adam(groups, cfg):
    return torch.optim.Adam(groups, lr=cfg.lr, betas=_betas(cfg), eps=getattr(cfg, "eps", 1e-8),
                            amsgrad=getattr(cfg, "amsgrad", False))


def _adamw(groups, cfg):
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=_betas(cfg), eps=getattr(cfg, "eps", 1e-8),
                             amsgrad=getattr(cfg, "amsgrad", False))


def _rmsprop(groups, cfg):
    return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=getattr(cfg, "alpha", 0.99), eps=getattr(cfg, "eps", 1e-8),
                               momentum=getattr(cfg, "momentum", 0.0), centered=getattr(cfg, "centered", False))


def _adagrad(groups, cfg):
    return torch.optim.Adagrad(groups, lr=cfg.lr, lr_decay=getattr(cfg, "lr_decay", 0.0),
                               initial_accumulator_value=getattr(cfg, "initial_accumulator_value", 0.0),
                               eps=getattr(cfg, "eps", 1e-10))


def _nadam(groups, cfg):
    return torch.optim.NAdam(groups, lr=cfg.lr, betas=_betas(cfg), eps=getattr(cfg, "eps", 1e-8),
                             momentum_decay=getattr(cfg, "momentum_decay", 4e-3),
                             decoupled_weight_decay=getattr(cfg, "decoupled_weight_decay", False))


def _radam(groups, cfg):
    return torch.optim.RAdam(groups, lr=cfg.lr, betas=_betas(cfg), eps=getattr(cfg, "eps", 1e-8),
                             decoupled_weight_decay=getattr(cfg, "decoupled_weight_decay", False))


OPTIMIZERS: dict[str, Callable[[list[dict], object], torch.optim.Optimizer]] = {
    "sgd": _sgd, "adam": _adam, "adamw": _adamw, "rmsprop": _rmsprop,
    "adagrad": _adagrad, "nadam": _nadam, "radam": _radam,
}


def build_optimizer(model: nn.Module, cfg, *, lr_multipliers: Sequence[tuple[str, float]] | None = None,
                    layer_decay: float | None = None) -> torch.optim.Optimizer:
    """The recipe's `optimizer` section -> a torch optimizer (`OPTIMIZERS[cfg.name]`) over
    `lr_param_groups(model)`. `lr_multipliers`: [(glob, multiplier)], first match wins, unmatched 1.0;
    `layer_decay` in (0, 1]: last top-level child x1, each earlier one x decay more. Both multiply."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.name!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    groups = lr_param_groups(model, getattr(cfg, "weight_decay", 0.0), getattr(cfg, "decay_norm_and_bias", False),
                             lr=cfg.lr, lr_multipliers=lr_multipliers, layer_decay=layer_decay)
    return OPTIMIZERS[cfg.name](groups, cfg)
