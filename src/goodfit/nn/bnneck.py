"""BNNeck (Luo et al. 2019, "Bag of Tricks and a Strong Baseline for Deep Person Re-Identification").

backbone → f_t ─ metric loss (triplet) on f_t
             └→ BatchNorm1d (β frozen at 0) → f_i → classifier → logits ─ cross-entropy

The metric loss wants features free in Euclidean space; the softmax loss wants them separable by
hyperplanes through the origin. The BN between them lets each loss constrain its own copy of the
feature; at test time f_i (or f_t) is the retrieval feature.
"""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn


class NeckOutput(NamedTuple):
    feature: Tensor   # f_t, before the BN: for metric losses
    logits: Tensor    # classifier(f_i), f_i after the BN: for cross-entropy


class BNNeck(nn.Module):
    """backbone(x) = f_t (N, D); returns (f_t, classifier(BN(f_t))). The BN's shift β is frozen at 0, as in
    the paper, so f_i stays centred for the (bias-free, in the paper) linear classifier."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, features: int | None = None):
        super().__init__()
        if features is None:
            features = getattr(classifier, "in_features", None)
            if features is None:
                raise ValueError("BNNeck: pass features=D, the backbone's feature size; the classifier has no "
                                 "in_features to read it from")
        self.backbone = backbone
        self.neck = nn.BatchNorm1d(features)
        self.neck.bias.requires_grad_(False)
        self.classifier = classifier

    def forward(self, x: Tensor) -> NeckOutput:
        feature = self.backbone(x)
        return NeckOutput(feature, self.classifier(self.neck(feature)))

    def features(self, x: Tensor, which: str = "post") -> Tensor:
        """The retrieval feature: "post" = f_i after the BN (the paper's choice), "pre" = f_t."""
        if which not in ("post", "pre"):
            raise ValueError(f"BNNeck.features: which must be 'post' or 'pre', got {which!r}")
        feature = self.backbone(x)
        return self.neck(feature) if which == "post" else feature
