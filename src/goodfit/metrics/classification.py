"""Classification metrics from sufficient statistics kept on the device.

Conventions (all tested equal to scikit-learn 1.9 where it defines a value):
- Label metrics come from a confusion matrix (see `confusion`): accuracy, balanced accuracy,
  precision / recall / F1 (binary, macro, micro, weighted), MCC, Cohen's kappa. Averages run over
  the labels present in targets or predictions, like sklearn's default `labels`; a 0/0 is 0.0,
  sklearn's zero_division="warn" value (kappa's 0/0 is NaN, its replace_undefined_by default;
  MCC's is 0.0). Multiclass predictions are the argmax of the scores (the first class on ties);
  binary predictions are logit > 0 (probability > 0.5 with probs=True).
- top-k accuracy = `top_k_accuracy_score`: a sample is a hit when fewer than k classes rank ahead
  of its target, ties broken as sklearn's stable sort does (the higher class index ranks first).
- auroc = `roc_auc_score`: Mann-Whitney U with average ranks for tied scores. Binary: undefined
  with a single class in the targets: UserError (sklearn 1.9 warns and returns NaN instead; a NaN
  would silently break early stopping or model selection on val_auroc). Multiclass: one-vs-rest
  on the softmax probabilities, macro-averaged (`multi_class="ovr"`) over the classes present in
  the targets (sklearn returns NaN when one is absent); UserError when fewer than two are present.
- average_precision = `average_precision_score`: the step-wise sum over distinct thresholds of
  (R_n - R_{n-1}) P_n. Binary with no positive target: 0.0, as sklearn. Multiclass: one-vs-rest,
  macro over the classes present in the targets (sklearn rejects a class absent from the targets).
- log_loss = `log_loss` of the probabilities (softmax / sigmoid of logits, in float64) clipped
  to [eps, 1 - eps], eps = float64's machine epsilon, as sklearn clips float64 input.
- ece: see `calibration` (top-label bins for multiclass, positive-class bins for binary).
- Scores for auroc and average_precision are kept on the device for the epoch (N x K values);
  every other metric streams fixed-size sums. No samples at all: every metric is NaN.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from goodfit.errors import UserError
from goodfit.metrics.calibration import DEFAULT_BINS, ReliabilityBins, bin_sums, ece_from, reliability_from
from goodfit.metrics.confusion import confusion_metric
from goodfit.metrics.names import TOP_K, check_names
from goodfit.metrics.sync import acc_dtype, all_gather_varlen, all_reduce_sum, distributed

KEPT = ("auroc", "average_precision")  # need every score of the epoch
PROBABILISTIC = ("log_loss", "ece", *KEPT)  # need scores, not labels


def confusion_counts(target: Tensor, pred: Tensor, num_classes: int, check_pred: bool = True) -> Tensor:
    """Flat (K*K + 1,) counts of (target, pred) pairs; the last bin counts labels outside [0, K)."""
    k = num_classes
    if target.device.type == "cpu" and check_pred and pred.numel():
        # Labels given as predictions: one min/max pass (reading it costs no device sync on the CPU)
        # lets in-range predictions take the bincount path below, several times cheaper than the masks.
        low, high = torch.aminmax(pred)
        check_pred = not (int(low) >= 0 and int(high) < k)
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


def _tie_spans(sorted_scores: Tensor) -> tuple[Tensor, Tensor]:
    """For scores sorted along dim 0: the first and last position of each value's run of ties."""
    n = sorted_scores.shape[0]
    position = torch.arange(n, device=sorted_scores.device).reshape(-1, *([1] * (sorted_scores.ndim - 1)))
    position = position.expand(sorted_scores.shape)
    first = torch.ones(sorted_scores.shape, dtype=torch.bool, device=sorted_scores.device)
    first[1:] = sorted_scores[1:] != sorted_scores[:-1]
    last = torch.ones_like(first)
    last[:-1] = first[1:]
    start = torch.where(first, position, 0).cummax(0).values
    end = torch.where(last, position, n - 1).flip(0).cummin(0).values.flip(0)
    return start, end


def rank_auroc(scores: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """AUROC of scores against 0/1 targets by the rank formula, with the positive and negative counts.

    Scores and targets are (N,) or (N, K) (one column per class, reduced along dim 0).
    """
    n = scores.shape[0]
    sorted_scores, order = torch.sort(scores, dim=0)
    positive = target.gather(0, order)
    start, end = _tie_spans(sorted_scores)
    ranks = (start + end).to(scores.dtype) / 2 + 1  # tied scores share the average of their ranks
    n_pos = positive.sum(0)
    n_neg = n - n_pos
    u = (ranks * positive).sum(0) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg), n_pos, n_neg


def step_average_precision(scores: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """sklearn's average precision of scores against 0/1 targets, with the positive count.

    AP = sum over distinct thresholds t of (R(t) - R(t_prev)) P(t) = (1/P) sum over positives of the
    precision at the threshold equal to their score. (N,) or (N, K); NaN where there is no positive.
    """
    n = scores.shape[0]
    sorted_scores, order = torch.sort(scores, dim=0)
    positive = target.gather(0, order)
    start, _ = _tie_spans(sorted_scores)
    below = positive.cumsum(0) - positive  # positives strictly before each position
    n_pos = positive.sum(0)
    tp = n_pos - below.gather(0, start)  # positives scoring >= the value at each position
    precision = tp / (n - start).to(scores.dtype)
    return (positive * precision).sum(0) / n_pos, n_pos


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


def _auroc_undefined(pos: int, neg: int) -> UserError:
    return UserError(
        f"AUROC is undefined when the targets hold one class only ({pos} positives, {neg} negatives)",
        "evaluate on a split that holds both classes (stratified, or larger)",
    )


class _Streams:
    """State shared by the accumulators: counts (int64), float sums, and kept scores with their targets.

    Subclasses set `_n_counts`, `_n_sums`, `_width` (scores per sample), `_keep` and `device`.
    `stats()` exposes the sufficient statistics; `merge` and `sync` combine them: counts and sums
    add, kept scores concatenate (in rank order across processes).
    """

    _n_counts: int
    _n_sums: int
    _width: int
    _keep: bool
    device: torch.device | None

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._counts: Tensor | None = None
        self._sums: Tensor | None = None
        self._scores: list[Tensor] = []
        self._targets: list[Tensor] = []

    def _add(self, counts: Tensor, sums: Tensor | None) -> None:
        self._counts = counts if self._counts is None else self._counts + counts
        if sums is not None:
            self._sums = sums if self._sums is None else self._sums + sums

    def _signature(self) -> tuple:
        return (type(self), self.names, self._n_counts, self._n_sums, self._width,
                getattr(self, "ks", ()), self.probs, self.n_bins)

    def stats(self) -> dict[str, Tensor]:
        """The sufficient statistics: {"counts", "sums", "scores", "targets"} (empty where unused)."""
        device = self._counts.device if self._counts is not None else (self.device or torch.device("cpu"))
        dtype = acc_dtype(device)
        counts = self._counts if self._counts is not None else torch.zeros(self._n_counts, dtype=torch.int64,
                                                                           device=device)
        sums = self._sums if self._sums is not None else torch.zeros(self._n_sums, dtype=dtype, device=device)
        if self._scores:
            scores, targets = torch.cat(self._scores), torch.cat(self._targets)
        else:
            scores = torch.zeros((0, self._width) if self._width > 1 else 0, dtype=dtype, device=device)
            targets = torch.zeros(0, dtype=dtype if self._width == 1 else torch.int64, device=device)
        return {"counts": counts, "sums": sums, "scores": scores, "targets": targets}

    def merge(self, other: _Streams) -> _Streams:
        """Add `other`'s statistics to this accumulator's (as if it had seen other's batches too)."""
        if other._signature() != self._signature():
            raise ValueError("can only merge accumulators of the same kind, classes and metric names")
        if other._counts is not None:
            device = (self._counts if self._counts is not None else other._counts).device
            self._add(other._counts.to(device), None if other._sums is None else other._sums.to(device))
            self._scores.extend([t.to(device) for t in other._scores])
            self._targets.extend([t.to(device) for t in other._targets])
        return self

    def sync(self, group=None) -> _Streams:
        """Combine the statistics of every process in `group` (torch.distributed); a no-op otherwise.

        Without kept scores: one all_reduce of [counts, sums]. With them: an all_gather of each
        process's [counts, sums, scores, targets] (after a tiny one of the lengths), merged in rank order.
        """
        if not distributed(group):
            return self
        s = self.stats()
        dtype = s["sums"].dtype
        c, m = self._n_counts, self._n_sums
        flat = torch.cat([s["counts"].to(dtype), s["sums"]])
        if not self._keep:
            total = all_reduce_sum(flat, group)
            self.reset()
            self._add(total[:c].round().long(), total[c:] if m else None)
            return self
        flat = torch.cat([flat, s["scores"].reshape(-1).to(dtype), s["targets"].to(dtype)])
        parts = all_gather_varlen(flat, group)
        self.reset()
        for part in parts:
            n = (part.numel() - c - m) // (self._width + 1)
            self._add(part[:c].round().long(), part[c:c + m] if m else None)
            scores = part[c + m:c + m + n * self._width]
            targets = part[c + m + n * self._width:]
            if n:
                self._scores.append(scores.reshape(n, self._width) if self._width > 1 else scores)
                self._targets.append(targets if self._width == 1 else targets.round().long())
        return self


class ClassificationMetrics(_Streams):
    """Streaming multiclass metrics (the names of TASK_METRICS["classification"]).

    update takes logits (N, K) (or probabilities with probs=True) or integer labels (N,) against
    integer targets (N,); the probabilistic metrics (log_loss, ece, auroc, average_precision) and
    top-k accuracy need scores. `top_k` adds k values beyond those the names ask for
    (`top_k_hits()` reports them); `n_bins` sets the ECE bins.
    """

    def __init__(self, num_classes: int, names: Sequence[str], device=None, *, probs: bool = False,
                 n_bins: int = DEFAULT_BINS, top_k: Sequence[int] = ()):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.names = check_names("classification", names)
        self.num_classes = k = int(num_classes)
        self.device = torch.device(device) if device is not None else None
        self.probs = bool(probs)
        self.ks = tuple(sorted({TOP_K[n] for n in self.names if n in TOP_K} | {int(v) for v in top_k}))
        for top in self.ks:
            if not 1 <= top <= k:
                raise UserError(f"top{top}_accuracy needs at least {top} classes; this task has {k}",
                                "remove it from the metrics, or choose a smaller k")
        self.n_bins = int(n_bins) if "ece" in self.names else 0
        if "ece" in self.names and self.n_bins < 1:
            raise ValueError(f"n_bins must be at least 1, got {n_bins}")
        self._needs_scores = bool(self.ks) or any(n in PROBABILISTIC for n in self.names)
        self._needs_probs = any(n in PROBABILISTIC for n in self.names)
        self._keep = any(n in KEPT for n in self.names)
        self._simple = set(self.names) <= {"accuracy", "macro_f1"} and not self.ks
        self._n_counts = k * k + 1
        # sums: top-k hits, then the log-loss sum, then 3 * n_bins ECE sums
        self._n_sums = len(self.ks) + ("log_loss" in self.names) + 3 * self.n_bins
        self._width = k
        self.reset()

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add a batch: logits (N, K) or integer labels (N,), against integer targets (N,)."""
        k = self.num_classes
        from_scores = output.ndim == 2
        if from_scores:
            if output.shape[1] != k:
                raise ValueError(f"logits must have shape (N, {k}), got {tuple(output.shape)}")
            pred = output.argmax(1)
        elif output.ndim == 1 and not output.is_floating_point():
            if self._needs_scores:
                needs = [n for n in self.names if n in PROBABILISTIC or n in TOP_K] or ["top-k accuracy"]
                raise ValueError(f"the metrics {', '.join(needs)} need scores of shape (N, {k}), not labels")
            pred = output.long()
        else:
            raise ValueError(f"output must be logits (N, {k}) or integer labels (N,), "
                             f"got {output.dtype} {tuple(output.shape)}")
        target = _flat(target, "target")
        if target.is_floating_point():
            raise ValueError(f"classification targets must be integer class indices, got {target.dtype}")
        _check_lengths(pred, target)
        device = self.device or pred.device
        target = target.to(device).long()
        counts = confusion_counts(target, pred.to(device), k, check_pred=not from_scores)
        sums = self._score_sums(output.detach().to(device), target) if self._needs_scores else None
        self._add(counts, sums)

    def _score_sums(self, output: Tensor, target: Tensor) -> Tensor | None:
        """The batch's top-k hits, log-loss sum and ECE bin sums; keeps probabilities for auroc/AP."""
        k = self.num_classes
        dtype = acc_dtype(output.device)
        # out-of-range targets are reported by the confusion counts' last bin at compute
        safe = target.clamp(0, k - 1).unsqueeze(1)
        parts = []
        if self.ks:
            own = output.gather(1, safe)
            later = torch.arange(k, device=output.device) > safe
            ahead = (output > own).sum(1) + ((output == own) & later).sum(1)
            parts.append(torch.stack([(ahead < top).sum() for top in self.ks]).to(dtype))
        if self._needs_probs:
            p = output.to(dtype) if self.probs else torch.softmax(output.to(dtype), 1)
            if "log_loss" in self.names:
                eps = torch.finfo(dtype).eps
                parts.append(-p.gather(1, safe).clamp(eps, 1 - eps).log().sum().reshape(1))
            if self.n_bins:
                confidence, top = p.max(1)
                parts.append(bin_sums(confidence, top == target, self._inner_edges(output.device, dtype)))
            if self._keep:
                self._scores.append(p)
                self._targets.append(target)
        return torch.cat(parts) if parts else None

    def _inner_edges(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        # i * (1 / n) is np.linspace's arithmetic, bit for bit; built on the device (no host copy).
        return (torch.arange(1, self.n_bins, dtype=dtype, device=device) * (1.0 / self.n_bins))

    def _host(self) -> dict | None:
        """Everything compute needs, moved to the host in one transfer; None with no samples."""
        if self._counts is None:
            return None
        k = self.num_classes
        if self._sums is None and not self._keep:
            counts = self._counts.cpu().numpy()  # the one host transfer
            flat = None
        else:
            dtype = acc_dtype(self._counts.device)
            parts = [self._counts.to(dtype)]
            if self._sums is not None:
                parts.append(self._sums)
            if self._keep:
                stats = self.stats()  # (empty tensors when no process saw a sample)
                scores, targets = stats["scores"], stats["targets"]
                onehot = (targets.unsqueeze(1) == torch.arange(k, device=targets.device)).to(scores.dtype)
                if "auroc" in self.names:
                    parts.extend(rank_auroc(scores, onehot))
                if "average_precision" in self.names:
                    parts.extend(step_average_precision(scores, onehot))
            flat = torch.cat([p.reshape(-1) for p in parts]).cpu().numpy()  # the one host transfer
            counts = flat[:k * k + 1].round().astype(np.int64)
        if counts[-1]:
            raise ValueError(f"{int(counts[-1])} labels lie outside the class range [0, {k})")
        host = {"confusion": counts[:-1].reshape(k, k), "n": int(counts[:-1].sum())}
        if flat is not None:
            rest = flat[k * k + 1:]
            for top in self.ks:
                host[f"top{top}"], rest = rest[0], rest[1:]
            if "log_loss" in self.names:
                host["log_loss"], rest = rest[0], rest[1:]
            if self.n_bins:
                host["ece"], rest = rest[:3 * self.n_bins], rest[3 * self.n_bins:]
            if "auroc" in self.names:
                host["auroc"], rest = rest[:3 * k].reshape(3, k), rest[3 * k:]
            if "average_precision" in self.names:
                host["average_precision"], rest = rest[:2 * k].reshape(2, k), rest[2 * k:]
        return host

    def compute(self) -> dict[str, float]:
        """The requested metrics over everything since the last reset (one host sync)."""
        if self._counts is not None and self._simple:  # the defaults: the lean path of old
            k = self.num_classes
            counts = self._counts.cpu().numpy()  # the one host transfer
            if counts[-1]:
                raise ValueError(f"{int(counts[-1])} labels lie outside the class range [0, {k})")
            scores = confusion_scores(counts[:-1].reshape(k, k))
            return {name: scores[name] for name in self.names}
        host = self._host()
        if host is None or host["n"] == 0:
            return {name: float("nan") for name in self.names}
        return {name: _classification_value(host, name) for name in self.names}

    def confusion_matrix(self) -> np.ndarray:
        """The (K, K) counts so far: rows are targets, columns predictions (sklearn's orientation)."""
        host = self._host()
        k = self.num_classes
        return np.zeros((k, k), dtype=np.int64) if host is None else host["confusion"]

    def top_k_hits(self) -> dict[int, float]:
        """{k: top-k accuracy} for every k counted (the names' and `top_k`'s)."""
        host = self._host()
        if host is None or host["n"] == 0:
            return {top: float("nan") for top in self.ks}
        return {top: float(host[f"top{top}"]) / host["n"] for top in self.ks}

    def reliability(self) -> ReliabilityBins:
        """Reliability-diagram bins (top-label) so far; needs "ece" among the names."""
        if not self.n_bins:
            raise ValueError("reliability() needs 'ece' among the metric names")
        host = self._host()
        return reliability_from(np.zeros(3 * self.n_bins) if host is None else host["ece"])


def _classification_value(host: dict, name: str) -> float:
    """One multiclass metric from the host statistics."""
    cm, n = host["confusion"], host["n"]
    if name in ("accuracy", "macro_f1"):
        if "scores" not in host:
            host["scores"] = confusion_scores(cm)
        return host["scores"][name]
    if name in TOP_K:
        return float(host[f"top{TOP_K[name]}"]) / n
    if name == "log_loss":
        return float(host["log_loss"]) / n
    if name == "ece":
        return ece_from(host["ece"])
    if name == "auroc":
        auc, pos, neg = host["auroc"]
        defined = (pos > 0) & (neg > 0)
        if not defined.any():
            present = np.flatnonzero(pos > 0)
            raise UserError("one-vs-rest AUROC is undefined when the targets hold one class only"
                            + (f" (class {present[0]})" if present.size else ""),
                            "evaluate on a split that holds at least two classes (stratified, or larger)")
        return float(np.mean(auc[defined]))
    if name == "average_precision":
        ap, pos = host["average_precision"]
        return float(np.mean(ap[pos > 0]))
    return confusion_metric(cm, name)


class BinaryMetrics(_Streams):
    """Streaming binary metrics (the names of TASK_METRICS["binary"]) from logits (N,) or (N, 1).

    Predictions are logit > 0 (probability > 0.5 with probs=True); log_loss and ece use the
    sigmoid of the logits (or the probabilities as given); auroc and average_precision rank the
    raw scores (any monotone scale) and keep them for the epoch.
    """

    def __init__(self, names: Sequence[str], device=None, *, probs: bool = False, n_bins: int = DEFAULT_BINS):
        self.names = check_names("binary", names)
        self.device = torch.device(device) if device is not None else None
        self.probs = bool(probs)
        self.n_bins = int(n_bins) if "ece" in self.names else 0
        if "ece" in self.names and self.n_bins < 1:
            raise ValueError(f"n_bins must be at least 1, got {n_bins}")
        self._keep = any(n in KEPT for n in self.names)
        self._n_counts = 5
        self._n_sums = ("log_loss" in self.names) + 3 * self.n_bins
        self._width = 1
        self.reset()

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
        counts = confusion_counts(label, (output > (0.5 if self.probs else 0)).long(), 2)
        dtype = acc_dtype(device)  # float16/bfloat16 values are exact in float64: no new ties
        parts = []
        if self._n_sums or self._keep:
            positive = valid.to(dtype) * target.to(dtype)
        if self._n_sums:
            p = output.to(dtype) if self.probs else torch.sigmoid(output.to(dtype))
            if "log_loss" in self.names:
                eps = torch.finfo(dtype).eps
                loss = torch.where(positive > 0, p.clamp(eps, 1 - eps), (1 - p).clamp(eps, 1 - eps)).log()
                parts.append(-loss.sum().reshape(1))
            if self.n_bins:
                inner = torch.arange(1, self.n_bins, dtype=dtype, device=device) * (1.0 / self.n_bins)
                parts.append(bin_sums(p, positive, inner))
        if self._keep:
            self._scores.append(output.to(dtype))
            self._targets.append(positive)
        self._add(counts, torch.cat(parts) if parts else None)

    def _host(self) -> dict | None:
        """Everything compute needs, moved to the host in one transfer; None with no samples."""
        if self._counts is None:
            return None
        dtype = acc_dtype(self._counts.device)
        parts = [self._counts.to(dtype)]
        if self._sums is not None:
            parts.append(self._sums)
        if self._keep:
            stats = self.stats()  # (empty tensors when no process saw a sample)
            scores, targets = stats["scores"], stats["targets"]
            if "auroc" in self.names:
                parts.append(torch.stack(rank_auroc(scores, targets)).to(dtype))
            if "average_precision" in self.names:
                parts.append(torch.stack(step_average_precision(scores, targets)).to(dtype))
        flat = torch.cat(parts).cpu()  # the one host transfer
        values = flat.tolist()  # plain floats: a few values, cheaper than NumPy scalars
        if values[4]:
            raise ValueError(f"{int(values[4])} binary targets are neither 0 nor 1")
        host = {"confusion": [[int(values[0]), int(values[1])], [int(values[2]), int(values[3])]]}
        host["n"] = int(values[0] + values[1] + values[2] + values[3])
        at = 5
        if "log_loss" in self.names:
            host["log_loss"], at = values[at], at + 1
        if self.n_bins:
            host["ece"], at = flat[at:at + 3 * self.n_bins].numpy(), at + 3 * self.n_bins
        if "auroc" in self.names:
            host["auroc"], at = values[at:at + 3], at + 3
        if "average_precision" in self.names:
            host["average_precision"], at = values[at:at + 2], at + 2
        return host

    def compute(self) -> dict[str, float]:
        """The requested metrics over everything since the last reset (one host sync)."""
        host = self._host()
        if host is None or host["n"] == 0:
            return {name: float("nan") for name in self.names}
        cm, n = host["confusion"], host["n"]
        scores = confusion_scores(cm) if "accuracy" in self.names or "macro_f1" in self.names else {}
        out = {}
        for name in self.names:
            if name in scores:
                out[name] = scores[name]
            elif name == "log_loss":
                out[name] = float(host["log_loss"]) / n
            elif name == "ece":
                out[name] = ece_from(host["ece"])
            elif name == "auroc":
                auc, pos, neg = host["auroc"]
                if pos == 0 or neg == 0:
                    raise _auroc_undefined(int(pos), int(neg))
                out[name] = float(auc)
            elif name == "average_precision":
                ap, pos = host["average_precision"]
                out[name] = float(ap) if pos > 0 else 0.0
            else:
                out[name] = confusion_metric(cm, name)
        return out

    def confusion_matrix(self) -> np.ndarray:
        """The (2, 2) counts so far: rows are targets, columns predictions (sklearn's orientation)."""
        host = self._host()
        return np.array([[0, 0], [0, 0]] if host is None else host["confusion"], dtype=np.int64)

    def reliability(self) -> ReliabilityBins:
        """Reliability-diagram bins (positive class) so far; needs "ece" among the names."""
        if not self.n_bins:
            raise ValueError("reliability() needs 'ece' among the metric names")
        host = self._host()
        return reliability_from(np.zeros(3 * self.n_bins) if host is None else host["ece"])
