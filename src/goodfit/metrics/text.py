"""Text metrics: BLEU and chrF (sacrebleu), ROUGE (rouge-score), perplexity, WER and CER.

Conventions:
- BLEU and chrF are corpus scores from sacrebleu, on its 0-100 scale, with sacrebleu's
  defaults (BLEU: 13a tokenizer, exp smoothing, case-sensitive; chrF: character 6-grams,
  beta 2, no word n-grams). Any sacrebleu option passes through (``tokenize="zh"``,
  ``lowercase=True``, ``word_order=2`` for chrF++, ...).
- References: ``references[i]`` is the reference of ``hypotheses[i]`` (a string) or its list
  of references (a list of strings; the count may differ between sentences). This is the
  per-sentence layout of torchmetrics and HF evaluate, not sacrebleu's per-stream layout.
- ROUGE is rouge-score's: its default tokenizer lowercases and keeps only [a-z0-9] runs (text
  in other scripts scores 0; pass ``tokenizer=`` for it), rougeLsum splits sentences on
  newlines. Scores are averaged over pairs; with several references per pair, rouge-score's
  ``score_multi`` keeps, per type, the reference with the best F-measure.
- WER / CER are corpus rates, jiwer's definition: total Levenshtein edits (substitutions +
  deletions + insertions) over the total reference length. Words are whitespace-separated
  tokens (``str.split()``); characters are those of the stripped string, spaces included.
  Argument order is (references, hypotheses), as in jiwer.
- perplexity = exp(mean token negative log-likelihood) over the tokens not equal to
  ``ignore_index``.

The reference libraries are imported inside the functions, so importing this module is cheap.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from goodfit.errors import UserError

__all__ = ["bleu", "chrf", "rouge", "perplexity", "wer", "cer", "ROUGE_TYPES"]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


# ---------------------------------------------------------------------------- inputs

def _sentences(x, what: str) -> list[str]:
    if isinstance(x, str) or not isinstance(x, Sequence):
        raise UserError(f"{what} must be a list of strings, got {type(x).__name__}",
                        hint="wrap a single sentence in a list: [sentence]")
    if not all(isinstance(s, str) for s in x):
        raise UserError(f"{what} must contain only strings")
    return list(x)


def _reference_lists(references, n: int) -> list[list[str]]:
    """references as one list of reference strings per hypothesis."""
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise UserError(f"references must be a list, got {type(references).__name__}",
                        hint="one string or one list of strings per hypothesis")
    if len(references) != n:
        raise ValueError(f"{n} hypotheses but {len(references)} references "
                         "(give one reference, or one list of references, per hypothesis)")
    out = []
    for i, r in enumerate(references):
        refs = [r] if isinstance(r, str) else list(r) if isinstance(r, Sequence) else None
        if not refs or not all(isinstance(s, str) for s in refs):
            raise UserError(f"references[{i}] must be a string or a non-empty list of strings")
        out.append(refs)
    return out


def _sacrebleu_streams(hypotheses, references) -> tuple[list[str], list[list[str | None]]]:
    hyps = _sentences(hypotheses, "hypotheses")
    if not hyps:
        raise UserError("no hypotheses to score")
    per_sentence = _reference_lists(references, len(hyps))
    k = max(len(r) for r in per_sentence)
    # sacrebleu wants reference streams: streams[j][i] is the j-th reference of sentence i;
    # a sentence with fewer references pads with None, which sacrebleu skips.
    streams = [[r[j] if j < len(r) else None for r in per_sentence] for j in range(k)]
    return hyps, streams


def _metric(cls, options: dict):
    try:
        return cls(**options)
    except TypeError as e:
        raise UserError(f"unknown {cls.__name__} option: {e}",
                        hint=f"see sacrebleu.metrics.{cls.__name__} for the accepted options") from None


# ---------------------------------------------------------------------------- BLEU, chrF

def bleu(hypotheses: Sequence[str], references, *, full: bool = False, **options):
    """Corpus BLEU (0-100) of hypotheses against references, computed by sacrebleu.

    references: one string or one list of strings per hypothesis. options: sacrebleu's BLEU
    options (tokenize, lowercase, smooth_method, smooth_value, max_ngram_order,
    effective_order, ...). Returns the score as a float; with full=True, sacrebleu's
    BLEUScore (``.score``, ``.bp`` brevity penalty, ``.precisions`` n-gram precisions in %,
    ``.sys_len``, ``.ref_len``, ``.ratio``).
    """
    from sacrebleu.metrics import BLEU

    hyps, streams = _sacrebleu_streams(hypotheses, references)
    result = _metric(BLEU, options).corpus_score(hyps, streams)
    return result if full else float(result.score)


def chrf(hypotheses: Sequence[str], references, *, full: bool = False, **options):
    """Corpus chrF (0-100) computed by sacrebleu; word_order=2 gives chrF++.

    references as in ``bleu``. options: sacrebleu's CHRF options (char_order, word_order,
    beta, lowercase, whitespace, eps_smoothing). Returns the score as a float; with
    full=True, sacrebleu's CHRFScore (``.score``, ``.char_order``, ``.word_order``, ``.beta``).
    """
    from sacrebleu.metrics import CHRF

    hyps, streams = _sacrebleu_streams(hypotheses, references)
    result = _metric(CHRF, options).corpus_score(hyps, streams)
    return result if full else float(result.score)


# ---------------------------------------------------------------------------- ROUGE

def rouge(predictions: Sequence[str], references, types: Sequence[str] = ROUGE_TYPES,
          use_stemmer: bool = False, *, tokenizer=None) -> dict[str, dict[str, float]]:
    """ROUGE scores from rouge-score, averaged over (prediction, reference) pairs.

    references: one string or one list of strings per prediction. types: "rouge1" ...
    "rouge9", "rougeL" (sentence-level LCS), "rougeLsum" (summary-level LCS over sentences
    separated by newlines). Returns ``{type: {"precision": p, "recall": r, "fmeasure": f}}``
    with each value the mean over pairs, in [0, 1]. tokenizer: an object with a
    ``tokenize(text) -> list[str]`` method, replacing rouge-score's default.
    """
    from rouge_score import rouge_scorer

    preds = _sentences(predictions, "predictions")
    if not preds:
        raise UserError("no predictions to score")
    refs = _reference_lists(references, len(preds))
    types = [types] if isinstance(types, str) else list(types)
    for t in types:
        if t not in ("rougeL", "rougeLsum") and re.fullmatch(r"rouge[1-9]", t) is None:
            raise UserError(f"unknown ROUGE type {t!r}", hint="use rouge1 ... rouge9, rougeL or rougeLsum")
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer, tokenizer=tokenizer)
    sums = {t: [0.0, 0.0, 0.0] for t in types}
    for pred, r in zip(preds, refs):
        scores = scorer.score(r[0], pred) if len(r) == 1 else scorer.score_multi(r, pred)
        for t in types:
            s = sums[t]
            s[0] += scores[t].precision
            s[1] += scores[t].recall
            s[2] += scores[t].fmeasure
    n = len(preds)
    return {t: {"precision": p / n, "recall": r / n, "fmeasure": f / n} for t, (p, r, f) in sums.items()}


# ---------------------------------------------------------------------------- perplexity

def perplexity(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> float:
    """exp(mean negative log-likelihood) of targets over the tokens not equal to ignore_index.

    logits: (N, T, V) unnormalised scores, or log-probabilities (log_softmax leaves them
    unchanged, so both give the same number); more generally (..., V) with targets (...,)
    of class indices. Computed with torch's cross_entropy (half precision is upcast to
    float32); UserError when every token is ignored.
    """
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise UserError("perplexity takes tensors: logits (N, T, V) and targets (N, T)")
    if logits.ndim < 2 or logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits must have shape (..., V) over targets' shape; got logits "
                         f"{tuple(logits.shape)}, targets {tuple(targets.shape)}")
    if targets.is_floating_point():
        raise UserError("targets must be integer class indices", hint="targets.long()")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_targets = targets.reshape(-1).long()
    count = int((flat_targets != ignore_index).sum())
    if count == 0:
        raise UserError("perplexity: every target token equals ignore_index; nothing to score")
    nll = F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index, reduction="sum")
    return math.exp(float(nll) / count)


# ---------------------------------------------------------------------------- WER, CER

def _levenshtein_python(a: Sequence, b: Sequence) -> int:
    """Edit distance (unit costs) by the O(len(a) * len(b)) dynamic programme, one row at a time."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def _levenshtein():
    """rapidfuzz's C++ edit distance where installed (jiwer depends on it), else the DP above."""
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError:
        return _levenshtein_python
    return Levenshtein.distance


def _error_rate(references, hypotheses, split) -> float:
    refs = [references] if isinstance(references, str) else _sentences(references, "references")
    hyps = [hypotheses] if isinstance(hypotheses, str) else _sentences(hypotheses, "hypotheses")
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    distance = _levenshtein()
    edits = total = 0
    for r, h in zip(refs, hyps):
        r, h = split(r), split(h)
        edits += distance(r, h)
        total += len(r)
    if total == 0:
        raise UserError("the references are empty: an error rate has no denominator")
    return edits / total


def wer(references, hypotheses) -> float:
    """Corpus word error rate: total word edits / total reference words (jiwer's wer).

    references, hypotheses: lists of strings (or one string each). Words are ``str.split()``
    tokens. Can exceed 1 (insertions).
    """
    return _error_rate(references, hypotheses, str.split)


def cer(references, hypotheses) -> float:
    """Corpus character error rate: total character edits / total reference characters
    (jiwer's cer: each string stripped, inner spaces count as characters)."""
    return _error_rate(references, hypotheses, lambda s: list(s.strip()))
