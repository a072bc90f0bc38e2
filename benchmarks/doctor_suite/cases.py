"""The cases: for each fault class, how to cause it on a dataset with a seed; and healthy controls.

A case is one training run with ONE expected label: the finding id of the fault it causes, or
`healthy`. It runs through `goodfit.run` (a built-in recipe with overrides: what a user can
write) or, for bugs in the training code that no recipe can express, through a hand-written
PyTorch loop watched by `goodfit.Doctor` (loops.py). Budgets are small on purpose (a few
epochs, one thread): the doctor must tell within them.

Each registry entry is a function (dataset, seed) -> Case; `suite()` expands them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

DATASETS = ("digits", "mnist1d")
LOOP_EPOCHS = {"digits": 6, "mnist1d": 5}

# the healthy base run of each dataset: recipe and budget (digits: 20 steps an epoch, mnist1d: 57)
BASE = {
    "digits": ("digits-mlp", {"train.epochs": 6}),
    "mnist1d": ("mnist1d-cnn", {"train.epochs": 5, "model.width": 32}),
}
COMMON = {"train.threads": 1, "train.checkpoint_interval": 1e9}  # one thread; no mid-run checkpoint writes


@dataclass(frozen=True)
class Case:
    key: str                     # registry key: the fault class, or healthy:<variant>
    label: str                   # the expected finding id, or "healthy"
    dataset: str
    seed: int
    how: str                     # what was done to cause it, in words
    recipe: str | None = None    # a built-in recipe run by goodfit.run; None: a hand-written loop
    overrides: dict = field(default_factory=dict)
    loop: str | None = None      # the hand-written loop's fault ("none": a correct loop)
    data: str | None = None      # a data file to write first and train on (data.source): "duplicates"
    undo: dict | None = None     # repairable faults: the overrides that undo the fault (None: the recipe's value)

    @property
    def name(self) -> str:
        return f"{self.key}/{self.dataset}/s{self.seed}"

    def all_overrides(self) -> dict:
        return {**COMMON, "seed": self.seed, **self.overrides}


FAULTS: dict[str, Callable[[str, int], Case]] = {}
HEALTHY: dict[str, Callable[[str, int], Case]] = {}
REPAIRABLE = ("divergence", "lr_too_high", "exploding_gradients", "plateau")


def _fault(label: str):
    def register(fn):
        FAULTS[label] = fn
        return fn
    return register


def _healthy(variant: str):
    def register(fn):
        HEALTHY[f"healthy:{variant}"] = fn
        return fn
    return register


def _run(key: str, label: str, dataset: str, seed: int, how: str, recipe: str | None = None, undo: dict | None = None,
         **overrides) -> Case:
    """A goodfit.run case on the dataset's base recipe (or `recipe`) with overrides on top of its budget."""
    base, budget = BASE[dataset]
    return Case(key, label, dataset, seed, how, recipe or base, {**budget, **overrides}, undo=undo)


def _by(dataset: str, digits, mnist1d):
    return digits if dataset == "digits" else mnist1d


# ------------------------------------------------------------------ optimization faults

@_fault("lr_too_high")
def lr_too_high(dataset, seed):
    lr = _by(dataset, 0.1, 1.0)  # batch norm (mnist1d-cnn) tolerates much more
    return _run("lr_too_high", "lr_too_high", dataset, seed, f"AdamW lr {lr} ({lr / 0.003:.0f}x the recipe's)",
                undo={"optimizer.lr": None}, **{"optimizer.lr": lr})


@_fault("lr_too_low")
def lr_too_low(dataset, seed):
    return _run("lr_too_low", "lr_too_low", dataset, seed, "AdamW lr 1e-6", **{"optimizer.lr": 1e-6})


@_fault("divergence")
def divergence(dataset, seed):
    return _run("divergence", "divergence", dataset, seed, "SGD lr 20, no normalization: the loss overflows within an epoch",
                undo={"optimizer.lr": 0.05},  # the SGD LR of the healthy:sgd controls
                **{"optimizer.name": "sgd", "optimizer.lr": 20.0, "model.norm": "none"})


@_fault("plateau")
def plateau(dataset, seed):
    return _run("plateau", "plateau", dataset, seed,
                "MLP with init normal(std=1e-3) and SGD: the loss sits at the saddle around zero",
                recipe="digits-mlp" if dataset == "digits" else None, undo={"model.init": "he"},
                **{"model.name": "mlp", "model.depth": 2, "model.width": 128, "model.norm": "none",
                   "model.init": "normal(std=0.001)", "optimizer.name": "sgd", "optimizer.lr": 0.05,
                   **({} if dataset == "digits" else {"model.kernel_size": 3})})


# ------------------------------------------------------------------ model faults

@_fault("exploding_gradients")
def exploding_gradients(dataset, seed):
    # deep enough to explode, shallow enough that the same net with a matched init trains (its healthy twin)
    return _run("exploding_gradients", "exploding_gradients", dataset, seed,
                "12-layer tanh MLP, init normal(std=0.35): the chaotic regime, gradients grow toward the input",
                recipe="digits-mlp" if dataset == "digits" else None, undo={"model.init": "xavier"},
                **{"model.name": "mlp", "model.depth": 12, "model.width": 128, "model.activation": "tanh",
                   "model.norm": "none", "model.init": "normal(std=0.35)",
                   **({} if dataset == "digits" else {"model.kernel_size": 3})})


@_fault("vanishing_gradients")
def vanishing_gradients(dataset, seed):
    return _run("vanishing_gradients", "vanishing_gradients", dataset, seed,
                "8-layer sigmoid MLP, no normalization", recipe="digits-mlp" if dataset == "digits" else None,
                **{"model.name": "mlp", "model.depth": 8, "model.width": 128, "model.activation": "sigmoid",
                   "model.norm": "none", **({} if dataset == "digits" else {"model.kernel_size": 3})})


@_fault("dead_units")
def dead_units(dataset, seed):
    return _run("dead_units", "dead_units", dataset, seed,
                "init constant(value=-0.1): the second ReLU layer's pre-activations are negative for every input",
                **{"model.init": "constant(value=-0.1)", "model.norm": "none"})


@_fault("saturated_activations")
def saturated_activations(dataset, seed):
    return _run("saturated_activations", "saturated_activations", dataset, seed,
                "tanh with init normal(std=1): pre-activations in the tens, outputs at +-1",
                **{"model.activation": "tanh", "model.norm": "none", "model.init": "normal(std=1.0)"})


@_fault("bad_initial_loss")
def bad_initial_loss(dataset, seed):
    return _run("bad_initial_loss", "bad_initial_loss", dataset, seed,
                "ReLU with init normal(std=1): logits in the hundreds at step 0",
                **{"model.init": "normal(std=1.0)", "model.norm": "none"})


@_fault("small_batch_batchnorm")
def small_batch_batchnorm(dataset, seed):
    if dataset == "digits":
        return Case("small_batch_batchnorm", "small_batch_batchnorm", dataset, seed,
                    "digits-cnn (batch norm) with batches of 4: 400 training samples, 1 epoch", "digits-cnn",
                    {"train.epochs": 1, "train.batch_size": 4, "data.perturb.subset": 400})
    return Case("small_batch_batchnorm", "small_batch_batchnorm", dataset, seed,
                "mnist1d-cnn (batch norm) with batches of 6: 1,200 training samples, 2 epochs", "mnist1d-cnn",
                {"train.epochs": 2, "train.batch_size": 6, "data.perturb.subset": 1200, "model.width": 32})


@_fault("overfitting")
def overfitting(dataset, seed):
    n = _by(dataset, 100, 200)
    return _run("overfitting", "overfitting", dataset, seed,
                f"{n} training samples, 60 epochs, no dropout, weight decay or early stopping",
                **{"data.perturb.subset": n, "model.dropout": 0.0, "optimizer.weight_decay": 0.0, "train.epochs": 60,
                   "train.early_stopping.patience": None, "train.early_stopping.restore_best": False})


@_fault("underfitting")
def underfitting(dataset, seed):
    if dataset == "digits":  # GELU: two ReLU units would simply die, a different fault
        return _run("underfitting", "underfitting", dataset, seed, "an MLP 2 GELU units wide",
                    **{"model.width": 2, "model.activation": "gelu"})
    return _run("underfitting", "underfitting", dataset, seed, "a CNN 2 channels wide", **{"model.width": 2})


# ------------------------------------------------------------------ data faults (pre-flight)

@_fault("unnormalized_inputs")
def unnormalized_inputs(dataset, seed):
    # raw digits (pixels 0..16, RMS up to 12.9) train as well as standardized ones: goodfit.data.quality
    # does not call that a fault, so the fault here is a spread of scales that does hurt
    return _run("unnormalized_inputs", "unnormalized_inputs", dataset, seed,
                "features scaled 1..100 after normalization (perturb.feature_scale 100)",
                **{"data.perturb.feature_scale": 100.0})


@_fault("class_imbalance")
def class_imbalance(dataset, seed):
    return _run("class_imbalance", "class_imbalance", dataset, seed, "rarest class kept at 5% of the largest",
                **{"data.perturb.imbalance": 0.05})


@_fault("label_noise")
def label_noise(dataset, seed):
    return _run("label_noise", "label_noise", dataset, seed, "30% of training labels flipped",
                **{"data.perturb.label_noise": 0.3})


@_fault("split_leakage")
def split_leakage(dataset, seed):
    base, budget = BASE[dataset]
    return Case("split_leakage", "split_leakage", dataset, seed,
                "20% of the samples appear twice in the data file, so copies land in train and in val/test",
                base, {**budget, "data.split.test": 0.15}, data="duplicates")


# ------------------------------------------------------------------ code faults (hand-written loops)

@_fault("softmax_before_loss")
def softmax_before_loss(dataset, seed):
    return Case("softmax_before_loss", "softmax_before_loss", dataset, seed,
                "the model ends in nn.Softmax and its output goes to cross_entropy", loop="softmax")


@_fault("missing_zero_grad")
def missing_zero_grad(dataset, seed):
    return Case("missing_zero_grad", "missing_zero_grad", dataset, seed, "optimizer.zero_grad() never called",
                loop="no_zero_grad")


@_fault("parameters_not_training")
def parameters_not_training(dataset, seed):
    frozen = seed % 2 == 0
    return Case("parameters_not_training", "parameters_not_training", dataset, seed,
                "first layer frozen (requires_grad=False)" if frozen else "first layer left out of the optimizer",
                loop="frozen" if frozen else "not_in_optimizer")


# ------------------------------------------------------------------ healthy controls

@_healthy("default")
def healthy_default(dataset, seed):
    return _run("healthy:default", "healthy", dataset, seed, "the base recipe")


@_healthy("cnn")
def healthy_cnn(dataset, seed):
    if dataset == "digits":
        return Case("healthy:cnn", "healthy", dataset, seed, "digits-cnn", "digits-cnn", {"train.epochs": 4})
    return _run("healthy:cnn", "healthy", dataset, seed, "mnist1d-cnn at full width 64", **{"model.width": 64})


@_healthy("sgd")
def healthy_sgd(dataset, seed):
    return _run("healthy:sgd", "healthy", dataset, seed, "SGD, momentum 0.9, lr 0.05",
                **{"optimizer.name": "sgd", "optimizer.lr": 0.05})


@_healthy("activation")
def healthy_activation(dataset, seed):
    act = _by(dataset, "tanh", "gelu")
    return _run("healthy:activation", "healthy", dataset, seed, f"{act} activations", **{"model.activation": act})


@_healthy("batch")
def healthy_batch(dataset, seed):
    return _run("healthy:batch", "healthy", dataset, seed, "batch 128, lr 0.001, no schedule",
                **{"train.batch_size": 128, "optimizer.lr": 0.001, "schedule.name": "constant"})


@_healthy("loop")
def healthy_loop(dataset, seed):
    return Case("healthy:loop", "healthy", dataset, seed, "a correct hand-written loop with goodfit.Doctor", loop="none")


def suite(seeds, datasets=DATASETS, keys=None) -> list[Case]:
    """Every fault class and healthy variant on every dataset and seed (optionally only `keys`)."""
    registry = {**FAULTS, **HEALTHY}
    chosen = [k for k in registry if keys is None or k in keys or k.split(":")[0] in keys]
    return [registry[k](d, s) for k in chosen for d in datasets for s in seeds]


def healthy_reference(dataset: str, seed: int) -> Case:
    """The dataset's base recipe, same seed and budget: the first yardstick of a repair (a different model for
    the faults that change the architecture)."""
    return HEALTHY["healthy:default"](dataset, seed)


def healthy_twin(case: Case) -> Case:
    """The same run without its fault (`case.undo` on top of its overrides; None: the recipe's own value), same
    seed and budget: the yardstick of a repair, which fixes the fault but cannot change the model."""
    overrides = {k: v for k, v in {**case.overrides, **case.undo}.items() if v is not None}
    undone = ", ".join(f"{k}={'recipe default' if v is None else v}" for k, v in case.undo.items())
    return Case(case.key + ":twin", "healthy", case.dataset, case.seed, f"{case.how}; undone: {undone}", case.recipe,
                overrides)
