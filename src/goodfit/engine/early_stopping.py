"""Early stopping: stop when the monitored value has not improved by `min_delta` for `patience`
epochs, and hand back the best epoch's weights (Prechelt 1998, "Early Stopping — But When?")."""
from __future__ import annotations

import math

from goodfit.metrics import HIGHER_IS_BETTER


def resolve_mode(monitor: str, mode: str = "auto") -> str:
    """'min' or 'max' for a monitor such as val_loss or val_accuracy."""
    if mode != "auto":
        return mode
    return "max" if HIGHER_IS_BETTER.get(monitor.split("_", 1)[-1], False) else "min"


class EarlyStopping:
    def __init__(self, monitor: str = "val_loss", mode: str = "auto", patience: int | None = 5,
                 min_delta: float = 0.0, restore_best: bool = True):
        self.monitor, self.mode = monitor, resolve_mode(monitor, mode)
        self.patience, self.min_delta, self.restore_best = patience, min_delta, restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.improved = False
        self.best_state: dict | None = None  # in-memory copy of the best weights

    def is_improvement(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def on_epoch_end(self, trainer, state, summary) -> None:
        value = summary[self.monitor]
        self.improved = self.is_improvement(value)
        if self.improved:
            self.best, self.best_epoch, self.wait = value, summary["epoch"], 0
            if self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            return
        self.wait += 1
        if self.patience is not None and self.wait >= self.patience and not state.should_stop:
            state.should_stop, state.stop_reason = True, "early_stopping"

    def on_fit_end(self, trainer, state) -> None:
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "improved": self.improved}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.best_epoch, self.wait, self.improved = d["best"], d["best_epoch"], d["wait"], d["improved"]
