"""The training doctor: checks before (pre-flight), during (sampled monitors) and after (curves)
a run; findings with evidence and prescriptions; repairs in flight when asked."""
from goodfit.doctor.api import Doctor
from goodfit.doctor.findings import FINDING_IDS, Diagnosis, Finding
from goodfit.doctor.probes import OverfitResult, overfit_one_batch

__all__ = ["Doctor", "Diagnosis", "Finding", "FINDING_IDS", "OverfitResult", "overfit_one_batch"]
