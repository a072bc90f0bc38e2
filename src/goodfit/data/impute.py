"""Missing-value imputation fitted on the training rows only (scikit-learn's SimpleImputer)."""
from __future__ import annotations

import numpy as np


def impute(parts: list[np.ndarray], strategy: str) -> list[np.ndarray]:
    """Fill NaNs in every part with the statistic of parts[0] (train) per flattened feature."""
    from sklearn.impute import SimpleImputer

    # keep_empty_features: a column missing everywhere in train stays (filled with 0) so shapes hold
    imputer = SimpleImputer(strategy=strategy, keep_empty_features=True)
    train = parts[0]
    imputer.fit(train.reshape(len(train), -1))
    return [imputer.transform(p.reshape(len(p), -1)).reshape(p.shape) if len(p) else p for p in parts]
