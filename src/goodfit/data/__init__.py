"""Data: sources, checks, splits, normalization, perturbations, batching and augmentation."""
from goodfit.data.augment import build_augment
from goodfit.data.dataset import DataSplits
from goodfit.data.load import load_data
from goodfit.data.loader import TensorLoader

__all__ = ["DataSplits", "TensorLoader", "build_augment", "load_data"]
