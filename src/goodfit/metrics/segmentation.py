"""Semantic segmentation metrics from a pixel confusion matrix kept on the device.

Inputs: logits (N, C, *spatial) (the prediction is the argmax over C, the first class on ties; a
single channel (N, 1, *spatial) with num_classes=2 is a binary logit, foreground where > 0) or
integer label maps (N, *spatial), against integer targets (N, *spatial). Pixels whose target is
`ignore_index` are left out entirely (neither counted nor checked). Any other target outside
[0, C), or a predicted label outside it, is an error at compute.

Conventions (equal to scikit-learn on the flattened, non-ignored pixels):
- pixel_accuracy = correct / counted pixels (`accuracy_score`).
- iou[c] = TP / (TP + FP + FN) (`jaccard_score(average=None)`), dice[c] = 2TP / (2TP + FP + FN)
  (= F1, `f1_score(average=None)`), NaN for a class absent from both targets and predictions
  (where sklearn would report its zero_division value, 0).
- mean_iou and dice (the recipe names) are the means over the classes present in targets or
  predictions: `jaccard_score(average="macro")` and `f1_score(average="macro")`.
- No counted pixel at all: every metric is NaN.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from goodfit.metrics.inputs import as_tensor
from goodfit.metrics.names import check_names
from goodfit.metrics.sync import all_reduce_sum, distributed


def pixel_counts(target: Tensor, pred: Tensor, num_classes: int, ignore_index: int | None,
                 check_pred: bool = True) -> Tensor:
    """Flat (C*C + 2,) counts of (target, pred) pixel pairs; bin C*C counts bad labels, C*C+1 ignored pixels."""
    k = num_classes
    target, pred = target.reshape(-1).long(), pred.reshape(-1).long()
    bad = (target < 0) | (target >= k)
    if check_pred:
        bad |= (pred < 0) | (pred >= k)
    index = torch.where(bad, k * k, target * k + pred)
    if ignore_index is not None:
        index = torch.where(target == ignore_index, k * k + 1, index)
    if index.device.type == "cpu":  # the index is bounded, so bincount's output size is fixed
        return torch.bincount(index, minlength=k * k + 2)
    # torch.bincount sizes its output from the data's maximum, a host sync on CUDA: scatter-add instead
    counts = torch.zeros(k * k + 2, dtype=torch.int64, device=index.device)
    return counts.scatter_add_(0, index, torch.ones_like(index))


def scores_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class iou and dice (NaN for absent classes), their means, and pixel accuracy of a (C, C) matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm)
    union = cm.sum(0) + cm.sum(1) - tp  # TP + FP + FN
    present = union > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, tp / union, np.nan)
        dice = np.where(present, 2 * tp / (union + tp), np.nan)
    total = cm.sum()
    return {
        "iou": iou, "dice_per_class": dice,
        "mean_iou": float(np.mean(iou[present])) if present.any() else float("nan"),
        "dice": float(np.mean(dice[present])) if present.any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
    }


class SegmentationMetrics:
    """Streaming pixel accuracy, mean IoU and mean Dice (TASK_METRICS["segmentation"]).

    The state is one (C*C + 2,) count vector: `merge` adds, `sync` is one all_reduce.
    """

    def __init__(self, num_classes: int, names: Sequence[str] = ("pixel_accuracy", "mean_iou", "dice"),
                 device=None, *, ignore_index: int | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.names = check_names("segmentation", names)
        self.num_classes = int(num_classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.device = torch.device(device) if device is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._counts: Tensor | None = None

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add a batch: logits (N, C, *spatial) or labels (N, *spatial) against targets (N, *spatial)."""
        k = self.num_classes
        if target.is_floating_point():
            raise ValueError(f"segmentation targets must be integer class maps, got {target.dtype}")
        if output.ndim == target.ndim + 1:
            if output.shape[1] == 1 and k == 2:
                pred, check = (output[:, 0] > 0).long(), False
            elif output.shape[1] == k:
                pred, check = output.argmax(1), False
            else:
                raise ValueError(f"logits must have {k} channels (N, {k}, ...), got {tuple(output.shape)}")
        elif output.ndim == target.ndim and not output.is_floating_point():
            pred, check = output, True
        else:
            raise ValueError(f"output must be logits (N, {k}, *spatial) or integer label maps of the target's "
                             f"shape {tuple(target.shape)}, got {output.dtype} {tuple(output.shape)}")
        if pred.shape != target.shape:
            raise ValueError(f"predictions of shape {tuple(pred.shape)} do not match targets {tuple(target.shape)}")
        device = self.device or pred.device
        counts = pixel_counts(target.to(device), pred.to(device), k, self.ignore_index, check_pred=check)
        self._counts = counts if self._counts is None else self._counts + counts

    def _confusion(self) -> np.ndarray | None:
        if self._counts is None:
            return None
        k = self.num_classes
        counts = self._counts.cpu().numpy()  # the one host transfer
        if counts[k * k]:
            raise ValueError(f"{int(counts[k * k])} pixel labels lie outside the class range [0, {k})"
                             + ("" if self.ignore_index is None else f" and are not ignore_index={self.ignore_index}"))
        return counts[:k * k].reshape(k, k)

    def confusion_matrix(self) -> np.ndarray:
        """The (C, C) pixel counts so far: rows are targets, columns predictions."""
        cm = self._confusion()
        k = self.num_classes
        return np.zeros((k, k), dtype=np.int64) if cm is None else cm

    def per_class(self) -> dict[str, np.ndarray]:
        """{"iou": (C,), "dice": (C,)} per class, NaN for a class absent from targets and predictions."""
        s = scores_from_confusion(self.confusion_matrix())
        return {"iou": s["iou"], "dice": s["dice_per_class"]}

    def compute(self) -> dict[str, float]:
        """The requested metrics over everything since the last reset (one host sync)."""
        cm = self._confusion()
        if cm is None:
            return {name: float("nan") for name in self.names}
        s = scores_from_confusion(cm)
        return {name: s[name] for name in self.names}

    def stats(self) -> dict[str, Tensor]:
        """The sufficient statistics: {"counts": (C*C + 2,) int64} (bad-label and ignored bins last)."""
        k = self.num_classes
        if self._counts is None:
            return {"counts": torch.zeros(k * k + 2, dtype=torch.int64, device=self.device or "cpu")}
        return {"counts": self._counts}

    def merge(self, other: SegmentationMetrics) -> SegmentationMetrics:
        """Add `other`'s counts to this accumulator's."""
        if (type(other) is not type(self) or other.num_classes != self.num_classes
                or other.names != self.names or other.ignore_index != self.ignore_index):
            raise ValueError("can only merge segmentation accumulators of the same classes, names and ignore_index")
        if other._counts is not None:
            theirs = other._counts if self._counts is None else other._counts.to(self._counts.device)
            self._counts = theirs.clone() if self._counts is None else self._counts + theirs
        return self

    def sync(self, group=None) -> SegmentationMetrics:
        """Sum the counts of every process in `group` (one all_reduce); a no-op without torch.distributed."""
        if not distributed(group):
            return self
        self._counts = all_reduce_sum(self.stats()["counts"], group)
        return self


# ---------------------------------------------------------------- one-shot functions


def _one_shot(preds, target, num_classes: int | None, ignore_index: int | None) -> SegmentationMetrics:
    """A SegmentationMetrics updated once with the whole input."""
    preds, target = as_tensor(preds), as_tensor(target)
    if preds.dtype == torch.bool:
        preds = preds.long()
    if target.dtype == torch.bool:
        target = target.long()
    if num_classes is None:
        if preds.ndim == target.ndim + 1:
            num_classes = 2 if preds.shape[1] == 1 else preds.shape[1]
        else:
            kept = target if ignore_index is None else target[target != ignore_index]
            num_classes = max((int(t.max()) for t in (preds, kept) if t.numel()), default=0) + 1
    acc = SegmentationMetrics(num_classes, device=None, ignore_index=ignore_index)
    acc.update(preds, target)
    return acc


def iou(preds, target, *, num_classes: int | None = None, ignore_index: int | None = None) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN), shape (C,); NaN for a class absent from targets and predictions.

    preds: logits (N, C, *spatial) or label maps (N, *spatial); C is num_classes, else the logits'
    channels, else one more than the largest label (ignored pixels aside).
    """
    return _one_shot(preds, target, num_classes, ignore_index).per_class()["iou"]


def mean_iou(preds, target, *, num_classes: int | None = None, ignore_index: int | None = None) -> float:
    """Mean IoU over the classes present in targets or predictions (`jaccard_score(average="macro")`)."""
    return _one_shot(preds, target, num_classes, ignore_index).compute()["mean_iou"]


def dice(preds, target, *, num_classes: int | None = None, ignore_index: int | None = None,
         per_class: bool = False) -> float | np.ndarray:
    """Mean Dice = 2TP / (2TP + FP + FN) over the classes present (macro F1 on pixels); per_class=True: (C,)."""
    acc = _one_shot(preds, target, num_classes, ignore_index)
    return acc.per_class()["dice"] if per_class else acc.compute()["dice"]


def pixel_accuracy(preds, target, *, num_classes: int | None = None, ignore_index: int | None = None) -> float:
    """Correct pixels / counted (non-ignored) pixels."""
    return _one_shot(preds, target, num_classes, ignore_index).compute()["pixel_accuracy"]
