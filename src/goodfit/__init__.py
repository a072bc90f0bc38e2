"""goodfit: PyTorch training that gets models to a good fit and shows why.

Imports are lazy so that `goodfit --help` never imports torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "run": ("goodfit.runner", "run"),
    "Run": ("goodfit.runner", "Run"),
    "Trainer": ("goodfit.engine.trainer", "Trainer"),
    "fit": ("goodfit.engine.loop", "fit"),
    "lr_find": ("goodfit.find_lr", "lr_find"),
    "Doctor": ("goodfit.doctor.api", "Doctor"),
    "lr_range_test": ("goodfit.optim.lr_finder", "lr_range_test"),
    "load_recipe": ("goodfit.recipe", "load_recipe"),
    "Recipe": ("goodfit.recipe", "Recipe"),
    "metrics": ("goodfit.metrics", None),
    "losses": ("goodfit.losses", None),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'goodfit' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)


__all__ = sorted(_LAZY) + ["__version__"]
