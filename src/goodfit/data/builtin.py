"""Built-in datasets: scikit-learn's bundled copies and MNIST-1D, all available offline."""
from __future__ import annotations

from typing import Callable

import numpy as np

from goodfit.data.dataset import RawData


def _sklearn(name: str, *, image: bool = False, regression: bool = False) -> Callable[[], RawData]:
    def load() -> RawData:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")()
        x = np.asarray(bunch.data, dtype=np.float64)
        if image:
            x = x.reshape(len(x), 1, 8, 8)  # one channel, so convolutions see the 8x8 grid
        names = getattr(bunch, "target_names", None)
        return RawData(
            x=x, y=np.asarray(bunch.target), source=name, kind="builtin",
            feature_names=[str(f) for f in bunch.feature_names],
            class_names=None if regression else [str(c) for c in names],
            continuous_target=regression,
        )

    return load


def _mnist1d() -> RawData:
    from goodfit.data.mnist1d_cache import load_mnist1d

    a = load_mnist1d()
    # (n, 1, 40): one channel, so 1-D convolutions and per-channel statistics apply
    return RawData(
        x=a["x"].astype(np.float64)[:, None, :], y=a["y"], source="mnist1d", kind="builtin",
        feature_names=[f"t{i}" for i in range(a["x"].shape[1])],
        class_names=[str(i) for i in range(10)], num_classes=10,
        test=(a["x_test"].astype(np.float64)[:, None, :], a["y_test"]),
        notes=["mnist1d keeps its canonical 1,000-sample test split (published numbers use it); "
               "split.test is ignored and split.val is the fraction of the 4,000 train samples held out"],
    )


BUILTINS: dict[str, Callable[[], RawData]] = {
    "digits": _sklearn("digits", image=True),
    "iris": _sklearn("iris"),
    "wine": _sklearn("wine"),
    "breast_cancer": _sklearn("breast_cancer"),
    "diabetes": _sklearn("diabetes", regression=True),
    "mnist1d": _mnist1d,
}
