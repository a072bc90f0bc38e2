"""The doctor benchmark: fault classes caused on purpose (cases), how each is run (execute, loops)
and how the doctor's answers are scored (scoring). Driven by benchmarks/doctor_eval.py."""
from doctor_suite.cases import DATASETS, FAULTS, HEALTHY, REPAIRABLE, Case, healthy_reference, healthy_twin, suite
from doctor_suite.scoring import ACCEPTABLE, score

__all__ = ["ACCEPTABLE", "DATASETS", "FAULTS", "HEALTHY", "REPAIRABLE", "Case", "healthy_reference", "healthy_twin", "score", "suite"]
