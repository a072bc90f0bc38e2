"""Model registry: recipe `model.name` -> factory(input_shape, num_outputs, **options)."""
from __future__ import annotations

import difflib
import inspect
from functools import partial

import torch
from torch import nn

from goodfit.errors import UserError
from goodfit.models.convnet import ConvNet
from goodfit.models.mlp import MLP
from goodfit.models.resnet import ResNet
from goodfit.nn import init

MODELS = {
    "mlp": MLP,
    "cnn": partial(ConvNet, dim=2),
    "cnn1d": partial(ConvNet, dim=1),
    "resnet": ResNet,
}


def build_model(cfg, input_shape: tuple[int, ...], num_outputs: int, batch: torch.Tensor | None = None) -> nn.Module:
    """A registry model from the recipe's `model` section, initialized (`batch`: training inputs, which
    data-dependent schemes such as lsuv need) and checked on a dummy batch."""
    if cfg.name not in MODELS:
        close = difflib.get_close_matches(cfg.name, list(MODELS), n=1)
        raise UserError(f"model.name: unknown model '{cfg.name}'",
                        f"did you mean '{close[0]}'?" if close else "available: " + ", ".join(MODELS))
    options = cfg.model_dump(exclude={"name", "init"})
    check_options(cfg, MODELS[cfg.name], options)
    model = MODELS[cfg.name](tuple(input_shape), num_outputs, **options)
    check_shapes(model, input_shape, num_outputs, cfg.name)
    init.apply(model, cfg.init, x=batch)
    return model


def check_options(cfg, factory, options: dict) -> None:
    """A recipe option set away from its default must be one the model takes: never silently ignored."""
    params = inspect.signature(factory).parameters
    defaults = type(cfg)()
    for key, value in options.items():
        if key not in params and value != getattr(defaults, key, value):
            raise UserError(f"model.{key}: model '{cfg.name}' has no such option (got {value!r})",
                            f"remove model.{key}, or choose a model that takes it")


def check_shapes(model: nn.Module, input_shape, num_outputs: int, name: str = "model") -> None:
    """Run two dummy samples through the model: a mismatch is a user error, not a crash mid-training."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except RuntimeError as e:
        raise UserError(f"model '{name}' cannot take samples of shape {tuple(input_shape)}: {str(e).splitlines()[0]}",
                        "check model.name against the data (mlp: any; cnn: images; cnn1d: sequences)") from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (2, num_outputs):
        raise UserError(f"model '{name}' returns shape {tuple(out.shape[1:])} per sample; the task needs ({num_outputs},)")
