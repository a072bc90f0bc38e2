"""The engine: the fit loop, its events, early stopping, checkpoints and resume."""
from goodfit.engine.early_stopping import EarlyStopping
from goodfit.engine.evaluate import evaluate
from goodfit.engine.loop import EVENTS, FitState, fit
from goodfit.engine.trainer import Trainer

__all__ = ["EVENTS", "EarlyStopping", "FitState", "Trainer", "evaluate", "fit"]
