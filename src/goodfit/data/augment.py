"""Batch-level data augmentation from the recipe's `data.augment` list.

Each transform acts on a whole batch at once on its device, drawing from torch's global RNG
(which the engine saves in checkpoints and restores on resume).
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from goodfit.errors import UserError

_LATER = {"mixup": "mixes whole batches: a recipe's data.augment hands it to goodfit.nn.mixup, not to build_augment",
          "cutmix": "mixes whole batches: a recipe's data.augment hands it to goodfit.nn.mixup, not to build_augment"}


def hflip(input_shape: tuple[int, ...]) -> Callable[[Tensor], Tensor]:
    """Mirror each image left-right with probability 1/2."""
    if len(input_shape) != 3:
        raise UserError(f"augment hflip needs images (channels, height, width); this data's samples are {input_shape}",
                        "remove hflip, or use random_crop/noise")

    def apply(x: Tensor) -> Tensor:
        flip = torch.rand(len(x), device=x.device) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    return apply


def random_crop(input_shape: tuple[int, ...], padding: int | None = None) -> Callable[[Tensor], Tensor]:
    """Zero-pad every spatial side by `padding` and cut back to size at a random offset per sample."""
    if len(input_shape) not in (2, 3):
        raise UserError(f"augment random_crop needs images or sequences with a channel axis; samples are {input_shape}",
                        "remove random_crop for tabular data")
    spatial = input_shape[1:]
    pad = max(1, min(spatial) // 8) if padding is None else padding  # 4 for 32x32, the usual CIFAR choice
    if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
        raise UserError(f"augment random_crop: padding must be a non-negative integer, got {padding!r}")

    def apply(x: Tensor) -> Tensor:
        out = F.pad(x, [pad, pad] * len(spatial))
        # crop one spatial axis at a time: per-sample start offsets plus a range give an index
        # grid, and one gather cuts the whole batch (no loop over samples)
        for axis, size in enumerate(spatial):
            dim = 2 + axis
            start = torch.randint(0, 2 * pad + 1, (len(x),) + (1,) * (out.dim() - 1), device=x.device)
            along = [1] * out.dim()
            along[dim] = size
            index = start + torch.arange(size, device=x.device).view(along)
            shape = list(out.shape)
            shape[dim] = size
            out = out.gather(dim, index.expand(shape))
        return out

    return apply


def noise(input_shape: tuple[int, ...], std: float = 0.05) -> Callable[[Tensor], Tensor]:
    """Add Gaussian noise of standard deviation `std` (inputs are normalized, so std is relative)."""
    if isinstance(std, bool) or not isinstance(std, (int, float)) or std < 0:
        raise UserError(f"augment noise: std must be a non-negative number, got {std!r}")

    def apply(x: Tensor) -> Tensor:
        return x + std * torch.randn_like(x)

    return apply


AUGMENTS: dict[str, tuple[Callable[..., Callable[[Tensor], Tensor]], str | None]] = {
    # name -> (factory, the option a scalar short form sets)
    "hflip": (hflip, None),
    "random_crop": (random_crop, "padding"),
    "noise": (noise, "std"),
}


def _parse(item: Any) -> tuple[str, dict]:
    """'hflip' | {name: {options}} | {name: scalar} -> (name, options)."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and len(item) == 1:
        name, opts = next(iter(item.items()))
        if opts is None:
            return name, {}
        if isinstance(opts, dict):
            return name, dict(opts)
        short = AUGMENTS.get(name, (None, None))[1]
        if short is None and name in AUGMENTS:
            raise UserError(f"augment {name} takes no value (got {opts!r})", f"write it as the plain string '{name}'")
        return name, {short or "value": opts}
    raise UserError(f"augment item {item!r} is neither a name nor a one-key mapping",
                    "e.g. augment: [hflip, {random_crop: {padding: 1}}, {noise: 0.05}]")


def _make(name: str, opts: dict, input_shape: tuple[int, ...]) -> Callable[[Tensor], Tensor]:
    if name in _LATER:
        raise UserError(f"augment {name} {_LATER[name]}", f"per-sample transforms: {', '.join(AUGMENTS)}")
    if name not in AUGMENTS:
        close = difflib.get_close_matches(str(name), list(AUGMENTS) + list(_LATER), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"unknown augment '{name}'", f"{hint}available: {', '.join(AUGMENTS)}")
    factory, _ = AUGMENTS[name]
    allowed = list(inspect.signature(factory).parameters)[1:]  # every parameter after input_shape
    unknown = [k for k in opts if k not in allowed]
    if unknown:
        raise UserError(f"augment {name}: unknown option {unknown[0]!r}",
                        f"options: {', '.join(allowed)}" if allowed else f"{name} takes no options")
    return factory(input_shape, **opts)


def build_augment(spec: list, input_shape: tuple[int, ...]) -> Callable[[Tensor], Tensor] | None:
    """The recipe's augment list as one batch transform (applied in order), or None when empty."""
    steps = [_make(*_parse(item), tuple(input_shape)) for item in spec or []]
    if not steps:
        return None

    def augment(x: Tensor) -> Tensor:
        for step in steps:
            x = step(x)
        return x

    return augment
