"""Layers and regularizers that torch does not ship as such."""

# --- normalization: synchronized BN on any device (CPU/gloo too), the BNNeck head, AdaBN re-estimation
from goodfit.nn.adabn import adapt_batchnorm
from goodfit.nn.bnneck import BNNeck, NeckOutput
from goodfit.nn.sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm


# --- initialization and regularization (the modules `init`, `dropout`, `drop_path`, `mixup` keep their names)
from goodfit.nn import init
from goodfit.nn.drop_path import DropPath, depth_rates
from goodfit.nn.dropout import mc_predict
from goodfit.nn.mixup import BatchMix, cutmix, soft_targets
from goodfit.nn.penalty import WeightPenalty

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm", "BNNeck", "NeckOutput", "adapt_batchnorm", "init", "DropPath",
           "depth_rates", "mc_predict", "BatchMix", "cutmix", "soft_targets", "WeightPenalty"]
