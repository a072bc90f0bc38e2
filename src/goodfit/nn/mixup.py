"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019): train on mixtures of sample pairs.

Each sample of a batch is paired with the sample at a random permutation and λ ~ Beta(α, α).
Mixup blends the inputs, λ·x_a + (1 − λ)·x_b; CutMix pastes a box of x_b covering a fraction
1 − λ of x_a. The targets become probabilities mixed by the same λ (CutMix: by the box's actual
area), and since cross-entropy is linear in its target, CE against the mixed target equals
λ·CE(y_a) + (1 − λ)·CE(y_b).

Recipe (DESIGN §1.3): `data.augment: [{mixup: 0.2}]`, `[{cutmix: {alpha: 1.0}}]`, or both, in
which case each batch uses one of the two with equal probability. Mixing happens after the
per-sample transforms, wherever it stands in the list. Random draws use torch's global CPU
generator, which checkpoints save and resume restores.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from goodfit.errors import UserError

ALPHA = {"mixup": 0.2, "cutmix": 1.0}  # defaults: Zhang et al.'s ImageNet range, Yun et al.'s choice


def soft_targets(y: Tensor, num_classes: int | None) -> Tensor:
    """Class indices (N,) -> one-hot probabilities (N, K); with num_classes None (binary) y as P(class 1)."""
    if y.is_floating_point():
        return y
    return y.float() if num_classes is None else F.one_hot(y.long(), num_classes).float()


def mixup(x: Tensor, y: Tensor, lam: float, perm: Tensor) -> tuple[Tensor, Tensor]:
    """x̃ = λ·x + (1 − λ)·x[perm], ỹ = λ·y + (1 − λ)·y[perm]; y holds probabilities."""
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def cutmix_box(spatial: tuple[int, ...], lam: float) -> list[tuple[int, int]]:
    """A box (start, stop) per spatial axis: each side (1 − λ)^(1/d) of the axis (area 1 − λ before clipping),
    centred uniformly at random and clipped at the borders."""
    ratio = (1.0 - lam) ** (1.0 / len(spatial))
    box = []
    for size in spatial:
        centre = int(torch.randint(size, ()))
        half = round(size * ratio) / 2
        box.append((max(0, int(centre - half)), min(size, int(centre + half))))
    return box


def cutmix(x: Tensor, y: Tensor, lam: float, perm: Tensor,
           box: list[tuple[int, int]] | None = None) -> tuple[Tensor, Tensor, float]:
    """Paste `box` (default: a random `cutmix_box`) of x[perm] into x; the targets mix by the pasted area.
    Returns (x̃, ỹ, λ actually used = 1 − box area / sample area)."""
    spatial = tuple(x.shape[2:])
    box = cutmix_box(spatial, lam) if box is None else box
    region = (slice(None), slice(None), *(slice(a, b) for a, b in box))
    x = x.clone()
    x[region] = x[perm][region]
    lam = 1.0 - math.prod(b - a for a, b in box) / math.prod(spatial)
    return x, lam * y + (1 - lam) * y[perm], lam


class BatchMix:
    """(x, y) -> (mixed x, mixed soft targets), one method per batch drawn from `alphas` {method: α}."""

    def __init__(self, alphas: dict[str, float], num_classes: int | None):
        self.alphas, self.num_classes = dict(alphas), num_classes
        self.methods = list(self.alphas)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        method = self.methods[int(torch.randint(len(self.methods), ()))] if len(self.methods) > 1 else self.methods[0]
        alpha = torch.tensor(self.alphas[method])
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(len(x)).to(x.device)
        y = soft_targets(y, self.num_classes)
        if method == "mixup":
            return mixup(x, y, lam, perm)
        x, y, _ = cutmix(x, y, lam, perm)
        return x, y


def split_mix(augment: list) -> tuple[list, list]:
    """The recipe's `data.augment` list -> (per-sample transforms, mixup/cutmix items)."""
    def is_mix(item) -> bool:
        name = item if isinstance(item, str) else next(iter(item), None) if isinstance(item, dict) else None
        return name in ALPHA

    return [i for i in augment or [] if not is_mix(i)], [i for i in augment or [] if is_mix(i)]


def _alpha(name: str, opts: Any) -> float:
    if isinstance(opts, dict):
        unknown = sorted(set(opts) - {"alpha"})
        if unknown:
            raise UserError(f"augment {name}: unknown option {unknown[0]!r}", "options: alpha")
        opts = opts.get("alpha", ALPHA[name])
    alpha = ALPHA[name] if opts is None else opts
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:
        raise UserError(f"augment {name}: alpha must be a positive number, got {alpha!r}",
                        f"e.g. {{{name}: {ALPHA[name]}}}; λ ~ Beta(alpha, alpha)")
    return float(alpha)


def build_mix(items: list, *, task: str, input_shape: tuple[int, ...], num_classes: int | None,
              loss_fn: nn.Module | None = None) -> BatchMix | None:
    """The mixup/cutmix items of `data.augment` as one BatchMix, or None; checks they fit the task,
    the data and the loss (which must accept probability targets)."""
    if not items:
        return None
    alphas: dict[str, float] = {}
    for item in items:
        name, opts = (item, None) if isinstance(item, str) else next(iter(item.items()))
        if name in alphas:
            raise UserError(f"augment {name} is listed twice", "keep one entry per method")
        alphas[name] = _alpha(name, opts)
    if task not in ("classification", "binary"):
        raise UserError(f"augment {', '.join(alphas)}: mixes class labels; task '{task}' has none",
                        "use mixup/cutmix with classification or binary tasks")
    if "cutmix" in alphas and len(input_shape) < 2:
        raise UserError(f"augment cutmix cuts boxes out of images or sequences; samples have shape {tuple(input_shape)}",
                        "use mixup for tabular data")
    k = num_classes if task == "classification" else None
    if loss_fn is not None:
        device = next((b.device for b in loss_fn.buffers()), torch.device("cpu"))
        probe = soft_targets(torch.zeros(2, dtype=torch.long, device=device), k)
        try:
            loss_fn(torch.zeros(2, k or 1, device=device), probe)
        except (ValueError, RuntimeError) as e:
            raise UserError(f"augment {', '.join(alphas)} trains on probability targets, which this loss does not "
                            f"take: {str(e).splitlines()[0]}", "use loss.name=cross_entropy (or bce_with_logits)") from None
    return BatchMix(alphas, k)
