"""Optimizer factory. Weight decay skips biases and normalization parameters by default:
decaying them only shrinks scales that normalization undoes (Loshchilov & Hutter 2019)."""
from __future__ import annotations

import torch
from torch import nn

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict]:
    """[{decayed weights}, {biases and norm parameters, weight_decay 0}], frozen parameters left out."""
    decay, no_decay = [], []
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            exempt = isinstance(module, _NORMS) or pname.endswith("bias") or p.ndim <= 1
            (no_decay if exempt and not decay_norm_and_bias else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return groups


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """The recipe's `optimizer` section -> a torch optimizer over `param_groups(model)`."""
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
