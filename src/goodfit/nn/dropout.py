"""Dropout by kind (torch's modules) and Monte-Carlo dropout prediction (Gal & Ghahramani 2016)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from goodfit.errors import UserError
from goodfit.nn.drop_path import DropPath

KINDS = ("standard", "spatial", "alpha")
STOCHASTIC = (nn.modules.dropout._DropoutNd, DropPath)  # the modules that are random in train mode only


def dropout(p: float, kind: str = "standard", dim: int = 0) -> nn.Module:
    """A dropout layer: `standard` drops single units (nn.Dropout), `spatial` whole channels of a feature map
    (nn.Dropout1d/2d/3d for `dim` spatial axes), `alpha` keeps SELU's mean and variance (nn.AlphaDropout).
    Inverted: kept units are scaled by 1/(1 − p), so evaluation needs no rescaling. p = 0 gives nn.Identity."""
    if kind not in KINDS:
        raise UserError(f"model.dropout_kind: unknown kind '{kind}'", "use " + ", ".join(KINDS))
    if p == 0:
        return nn.Identity()
    if kind == "alpha":
        return nn.AlphaDropout(p)
    if kind == "spatial":
        if dim not in (1, 2, 3):
            raise UserError("model.dropout_kind: spatial dropout drops whole channels of feature maps; "
                            "a fully-connected layer has none", "use standard or alpha dropout here")
        return (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)[dim - 1](p)
    return nn.Dropout(p)


def mc_predict(model: nn.Module, x: Tensor, samples: int = 50) -> tuple[Tensor, Tensor]:
    """Monte-Carlo dropout: `samples` forward passes with dropout (and drop-path) on but normalization layers
    in eval mode; returns the mean and the variance over passes of the predicted probabilities (softmax over
    classes, or the sigmoid of a single output), both of the output's shape. The model's modes are restored."""
    if samples < 2:
        raise ValueError(f"mc_predict: needs at least 2 samples for a variance, got {samples}")
    stochastic = [m for m in model.modules() if isinstance(m, STOCHASTIC)]
    if not any(getattr(m, "p", 0) > 0 for m in stochastic):
        raise ValueError("mc_predict: the model has no active dropout, so every pass would give the same answer")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    for m in stochastic:
        m.train()
    try:
        with torch.no_grad():
            outs = []
            for _ in range(samples):
                out = model(x).float()
                outs.append(out.sigmoid() if out.ndim == 1 or out.shape[1] == 1 else out.softmax(dim=1))
            probs = torch.stack(outs)
    finally:
        for m, training in modes:
            m.training = training
    return probs.mean(0), probs.var(0)
