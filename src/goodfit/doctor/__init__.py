"""The training doctor: checks before, during and after a run. Today: the pre-flight probes."""
from goodfit.doctor.probes import OverfitResult, overfit_one_batch

__all__ = ["OverfitResult", "overfit_one_batch"]
