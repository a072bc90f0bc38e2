"""Every registry model trains a few steps under every norm × norm position × init (× residual order)."""
from __future__ import annotations

import math
import typing

import pytest
import torch

from goodfit.data import TensorLoader
from goodfit.engine import Trainer
from goodfit.errors import UserError
from goodfit.losses import cross_entropy
from goodfit.models import MODELS, build_model
from goodfit.recipe import Model

NORMS = typing.get_args(Model.model_fields["norm"].annotation)
POSITIONS = typing.get_args(Model.model_fields["norm_position"].annotation)
RESIDUALS = typing.get_args(Model.model_fields["residual"].annotation)
INITS = ["default", "he", "xavier", "orthogonal", "lsuv", "zeros", "constant(value=0.1)", "normal(std=0.02)",
         "uniform(a=0.05)"]
SHAPES = {"mlp": (1, 8, 8), "cnn": (1, 8, 8), "cnn1d": (2, 16), "resnet": (1, 8, 8)}
CASES = [(name, norm, pos, spec, res) for name in MODELS for norm in NORMS for pos in POSITIONS for spec in INITS
         for res in (RESIDUALS if name == "resnet" else ("pre",))]


def test_every_registry_model_has_a_smoke_shape():
    assert set(MODELS) == set(SHAPES)


@pytest.mark.parametrize("name, norm, position, spec, residual", CASES,
                         ids=["-".join(c) for c in CASES])
def test_model_trains_a_few_steps(name, norm, position, spec, residual):
    torch.manual_seed(0)
    shape = SHAPES[name]
    x, y = torch.randn(16, *shape), torch.arange(16) % 3
    cfg = Model(name=name, width=4, depth=2, norm=norm, norm_position=position, init=spec, dropout=0.1,
                **({"residual": residual, "drop_path": 0.1} if name == "resnet" else {}))
    try:
        model = build_model(cfg, shape, 3, batch=x)
    except UserError as e:  # a norm over spatial axes has nothing to act on in a fully-connected net
        assert name == "mlp" and "spatial axes" in str(e), str(e)
        return
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model=model, loss_fn=cross_entropy, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                      train_loader=TensorLoader(x, y, 8, seed=0), epochs=1)
    state = trainer.fit()
    assert state.step == 2 and math.isfinite(state.history[-1]["train_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("name, key, value", [("mlp", "residual", "post"), ("cnn", "drop_path", 0.1),
                                              ("mlp", "kernel_size", 5)])
def test_an_option_the_model_does_not_take_is_an_error_not_ignored(name, key, value):
    with pytest.raises(UserError, match=f"model.{key}: model '{name}' has no such option"):
        build_model(Model(name=name, **{key: value}), SHAPES[name], 3)
    build_model(Model(name="resnet", **{key: value}), SHAPES["resnet"], 3)  # the residual net takes all three


def test_lsuv_from_a_recipe_needs_the_training_batch():
    with pytest.raises(UserError, match="lsuv needs a batch"):
        build_model(Model(name="mlp", init="lsuv"), (64,), 3)
