"""The loss registry: every loss by name, its options by name as a recipe gives them, task compatibility,
class weights mapped onto each loss's own weighting, and multi-input modules."""
from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from goodfit import losses as gl
from goodfit.errors import UserError

RECIPE_TASKS = ("classification", "binary", "multilabel", "regression", "segmentation")
TASKLESS = ("kl_div", "distillation", "token_cross_entropy", "vae_elbo", "gan_generator", "gan_discriminator",
            "gradient_penalty", "contrastive", "triplet", "batch_hard_triplet", "info_nce")

# One valid value per option, as a recipe would write it.
VALID = {"label_smoothing": 0.1, "weight": [1.0, 2.0, 1.0], "pos_weight": 2.0, "reduction": "sum",
         "ignore_index": 255, "gamma": 2.0, "alpha": 0.25, "p": 2, "margin": 0.5, "temperature": 2.0,
         "delta": 0.5, "beta": 0.5, "tau": [0.1, 0.9], "smooth": 0.5, "dice_weight": 0.5, "kind": "hinge",
         "reconstruction": "mse", "return_terms": True, "lambda_gp": 5.0, "eps": [0.5, 0.5], "normalize": False,
         "symmetric": True, "swap": True}


def test_every_loss_has_tasks_a_function_and_a_module():
    assert set(gl.LOSS_TASKS) == set(gl.LOSSES)
    for name in gl.LOSSES:
        assert set(gl.LOSS_TASKS[name]) <= set(RECIPE_TASKS), name
        assert callable(getattr(gl, name)) and name in gl.__all__
        assert isinstance(gl.LOSSES[name](), nn.Module)
    for name in TASKLESS:
        assert gl.LOSS_TASKS[name] == ()
    for task in RECIPE_TASKS:
        default = gl.TASK_DEFAULT_LOSS[task]
        assert task in gl.LOSS_TASKS[default]
        assert gl.build_loss(default, task).name == default


@pytest.mark.parametrize("name", sorted(set(gl.LOSSES)))
def test_every_option_is_accepted_by_name_and_checked(name):
    accepted = gl.accepted_options(name)
    params = inspect.signature(getattr(gl, name)).parameters
    assert accepted == tuple(p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY)
    for key in accepted:
        value = {("focal", "alpha"): [1.0, 2.0, 1.0], ("multi_margin", "p"): 1}.get((name, key), VALID[key])
        module = gl.LOSSES[name](**{key: value})
        bound = {**module.options, **dict(module.named_buffers())}
        assert key in bound
    with pytest.raises(UserError, match="it accepts: " + ", ".join(accepted)):
        gl.LOSSES[name](no_such_option=1)


@pytest.mark.parametrize("name,key,value,match", [
    ("focal", "gamma", -1.0, "non-negative"),
    ("focal", "alpha", [1.0, -1.0], "non-negative"),
    ("binary_focal", "alpha", 1.5, r"\[0, 1\] or null"),
    ("distillation", "alpha", 2.0, r"\[0, 1\]"),
    ("quantile", "tau", 1.0, r"\(0, 1\)"),
    ("quantile", "tau", [0.5, 1.2], r"\(0, 1\)"),
    ("pinball", "tau", "median", r"\(0, 1\)"),
    ("multi_margin", "p", 3, "1 or 2"),
    ("smooth_l1", "beta", -0.1, "non-negative"),
    ("gan_generator", "kind", "lsgan", "non_saturating, hinge, wasserstein"),
    ("vae_elbo", "reconstruction", "l1", "bce, mse"),
    ("info_nce", "temperature", 0, "positive"),
    ("info_nce", "normalize", "yes", "true or false"),
    ("dice", "ignore_index", 1.5, "integer"),
    ("focal_tversky", "gamma", 0.0, "positive"),
    ("tversky", "reduction", "avg", "mean, sum, none"),
])
def test_option_values_out_of_range_are_user_errors(name, key, value, match):
    with pytest.raises(UserError, match=match):
        gl.LOSSES[name](**{key: value})


def test_recipe_options_reach_the_function():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 3, (8,))
    module = gl.build_loss("focal", "classification", gamma=2.0)
    assert module.options == {"gamma": 2.0}
    assert torch.allclose(module(x, y), gl.focal(x, y, gamma=2.0))
    pred, target = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    module = gl.build_loss("quantile", "regression", tau=[0.1, 0.9])
    assert torch.allclose(module(pred, target), gl.quantile(pred, target, tau=[0.1, 0.9]))
    logits, mask = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randint(0, 3, (2, 4, 4))
    module = gl.build_loss("tversky", "segmentation", alpha=0.2, beta=0.8, smooth=0.0)
    assert torch.allclose(module(logits, mask), gl.tversky(logits, mask, alpha=0.2, beta=0.8, smooth=0.0))
    logits = torch.randn(6, 4, dtype=torch.float64)
    targets = torch.randint(0, 2, (6, 4))
    module = gl.build_loss("binary_focal", "multilabel", gamma=1.0, alpha=0.25)
    assert torch.allclose(module(logits, targets), gl.binary_focal(logits, targets, gamma=1.0, alpha=0.25))


@pytest.mark.parametrize("name", TASKLESS)
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_losses_without_a_recipe_task_are_refused_clearly(name, task):
    with pytest.raises(UserError, match=f"loss '{name}' has no recipe task") as info:
        gl.build_loss(name, task)
    assert f"LOSSES['{name}']" in info.value.message and gl.TASK_DEFAULT_LOSS[task] in info.value.hint


@pytest.mark.parametrize("name,task", [("dice", "classification"), ("focal", "binary"),
                                       ("binary_focal", "classification"), ("quantile", "segmentation"),
                                       ("multi_margin", "segmentation")])
def test_losses_refuse_tasks_they_do_not_fit(name, task):
    with pytest.raises(UserError, match=f"'{name}' does not fit task '{task}'") as info:
        gl.build_loss(name, task)
    assert gl.TASK_DEFAULT_LOSS[task] in info.value.hint


def test_class_weights_map_onto_each_losses_own_weighting():
    torch.manual_seed(1)
    w = torch.tensor([1.0, 3.0, 0.5])
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 3, (10,))
    wd = w.double()
    assert torch.allclose(gl.build_loss("focal", "classification", class_weights=w)(x, y), gl.focal(x, y, alpha=wd))
    assert torch.allclose(gl.build_loss("multi_margin", "classification", class_weights=w)(x, y),
                          gl.multi_margin(x, y, weight=wd))
    seg, mask = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randint(0, 3, (2, 4, 4))
    assert torch.allclose(gl.build_loss("ce_dice", "segmentation", class_weights=w)(seg, mask),
                          gl.ce_dice(seg, mask, weight=wd))
    # binary focal: α_t ∝ class weight, so (w0, w1) = (1, 3) gives α = 3/4
    module = gl.build_loss("binary_focal", "binary", class_weights=[1.0, 3.0])
    assert module.options["alpha"] == 0.75
    xb, yb = torch.randn(10, dtype=torch.float64), torch.randint(0, 2, (10,))
    assert torch.allclose(gl.build_loss("bce_dice", "segmentation", class_weights=[1.0, 3.0])(
        xb.reshape(1, 1, 2, 5), yb.reshape(1, 2, 5)), gl.bce_dice(xb.reshape(1, 1, 2, 5), yb.reshape(1, 2, 5),
                                                                  pos_weight=torch.tensor(3.0)))
    with pytest.raises(UserError, match="classification losses"):
        gl.build_loss("dice", "segmentation", class_weights=w)
    with pytest.raises(UserError, match="not both"):
        gl.build_loss("focal", "classification", class_weights=w, alpha=[1.0, 1.0, 1.0])


def test_modules_take_every_positional_input_and_follow_dtype():
    torch.manual_seed(2)
    q, k = torch.randn(6, 4), torch.randn(6, 4)
    assert torch.allclose(gl.LOSSES["info_nce"](temperature=0.2)(q, k), gl.info_nce(q, k, temperature=0.2))
    real, fake = torch.randn(5), torch.randn(7)
    assert torch.allclose(gl.LOSSES["gan_discriminator"](kind="wasserstein")(real, fake),
                          fake.mean() - real.mean())
    module = gl.LOSSES["focal"](alpha=[1.0, 2.0, 3.0]).double()
    assert module.alpha.dtype == torch.float64 and module.state_dict() == {}
    assert "gamma" not in module.options and "alpha=[1.0, 2.0, 3.0]" in repr(module)


@pytest.mark.parametrize("name,args", [
    ("focal", lambda x: (x, torch.randint(0, 4, (8,)))),
    ("binary_focal", lambda x: (x[:, :1], torch.randint(0, 2, (8,)))),
    ("log_cosh", lambda x: (x, torch.randn(8, 4))),
    ("quantile", lambda x: (x[:, :1], torch.randn(8))),
    ("dice", lambda x: (x.reshape(2, 4, 2, 2), torch.randint(0, 4, (2, 2, 2)))),
])
def test_half_precision_inputs_are_computed_in_float32(name, args):
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(4)  # the same targets both times
    full = getattr(gl, name)(*args(x))
    torch.manual_seed(4)
    half = getattr(gl, name)(*args(x.bfloat16()))
    assert half.dtype == torch.float32 and abs(half.item() - full.item()) < 0.02 * (1 + abs(full.item()))


def test_boolean_class_targets_are_indices_0_and_1():
    x, y = torch.randn(6, 2, dtype=torch.float64), torch.tensor([True, False, True, True, False, False])
    for fn in (gl.cross_entropy, gl.focal, gl.multi_margin):
        assert torch.allclose(fn(x, y), fn(x, y.long()))
