"""Classification metrics from sufficient statistics kept on the device.

Conventions (all tested equal to scikit-learn 1.9):
- accuracy = `accuracy_score`.
- macro_f1 = `f1_score(average="macro")`: the mean of per-class F1 = 2TP / (2TP + FP + FN) over
  the labels present in targets or predictions, like sklearn's default `labels`. Such a label
  always has 2TP + FP + FN > 0, so sklearn's zero_division never applies to it; a class that is
  never predicted (precision undefined) but present in the targets scores F1 = 0, as in sklearn.
- auroc = `roc_auc_score`: Mann-Whitney U with average ranks for tied scores. It is undefined with
  a single class in the targets: UserError. (sklearn 1.9 warns and returns NaN instead; a NaN
  would silently break early stopping or model selection on val_auroc.)
- No samples at all: every metric is NaN (sklearn raises on empty input).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from goodfit.errors import UserError
from goodfit.metrics.names import check_names
from goodfit.metrics.sync import acc_dtype


def confusion_counts(target: Tensor, pred: Tensor, num_classes: int, check_pred: bool = True) -> Tensor:
    """Flat (K*K + 1,) counts of (target, pred) pairs; the last bin counts labels outside [0, K)."""
    k = num_classes
    if target.device.type == "cpu" and not check_pred:
        # CPU fast path (per-epoch validation runs cold in cache, so fewer ops matter): with pred in
        # [0, K), a target < 0 gives a negative index (bincount refuses it) and a target >= K an
        # index >= K*K (bincount grows its output): both are caught without a separate range check.
        index = target * k + pred
        try:
            counts = torch.bincount(index, minlength=k * k)
        except RuntimeError:
            counts = None
        if counts is not None and counts.numel() == k * k:
            return torch.cat([counts, counts.new_zeros(1)])
    valid = (target >= 0) & (target < k)
    if check_pred:  # predictions from an argmax are in range by construction
        valid &= (pred >= 0) & (pred < k)
    # torch.bincount sizes its output from the data's maximum, a host sync on CUDA; a scatter-add
    # into a fixed-size table costs none, and the extra bin catches bad labels without a device assert.
    index = torch.where(valid, target * k + pred, k * k)
    counts = torch.zeros(k * k + 1, dtype=torch.int64, device=index.device)
    return counts.scatter_add_(0, index, torch.ones_like(index))


def confusion_scores(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (over labels present in targets or predictions) of a (K, K) count matrix.

    Computed on the host: the matrix arrives there in the one transfer per epoch. For K <= 32 in
    plain Python integers (exact, and a few microseconds even when the code runs cold in cache
    between training steps, where each numpy call costs several), else in numpy float64.
    """
    cm = np.asarray(confusion)
    k = cm.shape[0]
    if k <= 32:
        rows = cm.tolist()
        tp = [rows[i][i] for i in range(k)]
        # 2TP + FP + FN = (TP + FN) + (TP + FP): positive exactly for the labels sklearn averages over.
        support = [sum(r) + sum(c) for r, c in zip(rows, zip(*rows))]
        total = sum(support) // 2
        f1 = [2 * t / s for t, s in zip(tp, support) if s > 0]
        return {"accuracy": sum(tp) / total if total else float("nan"),
                "macro_f1": sum(f1) / len(f1) if f1 else float("nan")}
    cm = cm.astype(np.float64)
    tp, support = np.diagonal(cm), cm.sum(0) + cm.sum(1)
    present = support > 0
    return {"accuracy": float(tp.sum() / cm.sum()) if cm.sum() else float("nan"),
            "macro_f1": float(np.mean(2 * tp[present] / support[present])) if present.any() else float("nan")}


def rank_auroc(scores: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """AUROC of 1-D scores against 0/1 targets by the rank formula, with its positive and negative counts."""
    n = scores.numel()
    sorted_scores, order = torch.sort(scores)
    positive = target[order]
    position = torch.arange(n, device=scores.device)
    # Tied scores share the average of their ranks: each run of equal values spans [start, end].
    first = torch.ones(n, dtype=torch.bool, device=scores.device)
    first[1:] = sorted_scores[1:] != sorted_scores[:-1]
    last = torch.ones(n, dtype=torch.bool, device=scores.device)
    last[:-1] = first[1:]
    start = torch.where(first, position, 0).cummax(0).values
    end = torch.where(last, position, n - 1).flip(0).cummin(0).values.flip(0)
    ranks = (start + end).to(scores.dtype) / 2 + 1
    n_pos = positive.sum()
    n_neg = n - n_pos
    u = (ranks * positive).sum() - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg), n_pos, n_neg


def _flat(x: Tensor, what: str) -> Tensor:
    """A (N,) or (N, 1) tensor as (N,)."""
    if x.ndim == 2 and x.shape[1] == 1:
        return x.reshape(-1)
    if x.ndim != 1:
        raise ValueError(f"{what} must have shape (N,) or (N, 1), got {tuple(x.shape)}")
    return x


def _check_lengths(output: Tensor, target: Tensor) -> None:
    """Raise ValueError when predictions and targets disagree on N."""
    if output.shape[0] != target.shape[0]:
        raise ValueError(f"output has {output.shape[0]} samples but target has {target.shape[0]}")


class ClassificationMetrics:
    """Streaming multiclass accuracy / macro-F1 from a confusion matrix on the device."""

    def __init__(self, num_classes: int, names: Sequence[str], device=None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.names = check_names("classification", names)
        self.num_classes = int(num_classes)
        self.device = torch.device(device) if device is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._counts: Tensor | None = None

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add a batch: logits (N, K) or integer labels (N,), against integer targets (N,)."""
        k = self.num_classes
        from_logits = output.ndim == 2
        if from_logits:
            if output.shape[1] != k:
                raise ValueError(f"logits must have shape (N, {k}), got {tuple(output.shape)}")
            pred = output.argmax(1)
        elif output.ndim == 1 and not output.is_floating_point():
            pred = output.long()
        else:
            raise ValueError(f"output must be logits (N, {k}) or integer labels (N,), "
                             f"got {output.dtype} {tuple(output.shape)}")
        target = _flat(target, "target")
        if target.is_floating_point():
            raise ValueError(f"classification targets must be integer class indices, got {target.dtype}")
        _check_lengths(pred, target)
        device = self.device or pred.device
        counts = confusion_counts(target.to(device).long(), pred.to(device), k, check_pred=not from_logits)
        self._counts = counts if self._counts is None else self._counts + counts

    def compute(self) -> dict[str, float]:
        """The requested metrics over everything since the last reset (one host sync)."""
        if self._counts is None:
            return {name: float("nan") for name in self.names}
        k = self.num_classes
        counts = self._counts.cpu().numpy()  # the one host transfer
        if counts[-1]:
            raise ValueError(f"{int(counts[-1])} labels lie outside the class range [0, {k})")
        scores = confusion_scores(counts[:-1].reshape(k, k))
        return {name: scores[name] for name in self.names}


class BinaryMetrics:
    """Streaming binary accuracy / macro-F1 (threshold logit > 0) and AUROC (rank formula)."""

    def __init__(self, names: Sequence[str], device=None):
        self.names = check_names("binary", names)
        self.device = torch.device(device) if device is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._counts: Tensor | None = None
        self._scores: list[Tensor] = []
        self._targets: list[Tensor] = []

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add a batch: logits (N,) or (N, 1) against 0/1 targets (N,) or (N, 1) of any numeric dtype."""
        output = _flat(output, "binary output")
        target = _flat(target, "binary target")
        _check_lengths(output, target)
        if output.numel() == 0:
            return
        device = self.device or output.device
        output, target = output.detach().to(device), target.to(device)
        valid = (target == 0) | (target == 1)
        label = torch.where(valid, target.long(), -1)  # -1 lands in the out-of-range bin
        counts = confusion_counts(label, (output > 0).long(), 2)
        self._counts = counts if self._counts is None else self._counts + counts
        if "auroc" in self.names:
            dtype = acc_dtype(device)  # float16/bfloat16 values are exact in float64: no new ties
            self._scores.append(output.to(dtype))
            self._targets.append(valid.to(dtype) * target.to(dtype))

    def compute(self) -> dict[str, float]:
        """The requested metrics over everything since the last reset (one host sync)."""
        if self._counts is None:
            return {name: float("nan") for name in self.names}
        dtype = acc_dtype(self._counts.device)
        parts = [self._counts.to(dtype)]
        if "auroc" in self.names:
            parts.append(torch.stack(rank_auroc(torch.cat(self._scores), torch.cat(self._targets))).to(dtype))
        flat = torch.cat(parts).cpu().numpy()  # the one host transfer
        if flat[4]:
            raise ValueError(f"{int(flat[4])} binary targets are neither 0 nor 1")
        host = confusion_scores(flat[:4].reshape(2, 2))
        if "auroc" in self.names:
            host["auroc"], pos, neg = float(flat[5]), int(flat[6]), int(flat[7])
            if pos == 0 or neg == 0:
                raise UserError(
                    f"AUROC is undefined when the targets hold one class only "
                    f"({pos} positives, {neg} negatives)",
                    "evaluate on a split that holds both classes (stratified, or larger)",
                )
        return {name: host[name] for name in self.names}
