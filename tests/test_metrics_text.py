"""Text metrics against the reference implementations called directly (sacrebleu, rouge-score,
jiwer) and, for perplexity, an explicit float64 computation."""
from __future__ import annotations

import math

import jiwer
import numpy as np
import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer

from goodfit.errors import UserError
from goodfit.metrics import text
from goodfit.metrics.text import bleu, cer, chrf, perplexity, rouge, wer

VOCAB = ("the a cat dog sat on mat log quick brown fox jumps over lazy running runs ran "
         "house houses big small red blue green, . ! is was").split()


def sentence(rng, lo=0, hi=14) -> str:
    return " ".join(rng.choice(VOCAB, size=int(rng.integers(lo, hi))))


def corpus(seed: int, n: int = 40, max_refs: int = 1):
    """Hypotheses and references sharing words, so n-gram matches occur; with max_refs > 1, a
    varying number of references per sentence."""
    rng = np.random.default_rng(seed)
    hyps, refs = [], []
    for _ in range(n):
        ref = sentence(rng, 3)
        words = ref.split()
        keep = [w for w in words if rng.random() < 0.8] + sentence(rng, 0, 3).split()
        hyps.append(" ".join(keep))
        extra = [sentence(rng, 3) for _ in range(int(rng.integers(0, max_refs)))]
        refs.append([ref, *extra] if max_refs > 1 else ref)
    return hyps, refs


def streams(refs):
    """Per-sentence references as sacrebleu's reference streams (None pads a shorter list)."""
    per = [[r] if isinstance(r, str) else r for r in refs]
    k = max(map(len, per))
    return [[r[j] if j < len(r) else None for r in per] for j in range(k)]


# ---------------------------------------------------------------------------- BLEU, chrF

@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_refs", [1, 3])
def test_bleu_equals_sacrebleu(seed, max_refs):
    hyps, refs = corpus(seed, max_refs=max_refs)
    assert bleu(hyps, refs) == sacrebleu.corpus_bleu(hyps, streams(refs)).score
    options = {"lowercase": True, "smooth_method": "floor", "smooth_value": 0.1, "tokenize": "char"}
    assert bleu(hyps, refs, **options) == sacrebleu.corpus_bleu(hyps, streams(refs), **options).score
    full = bleu(hyps, refs, full=True)
    assert full.score == bleu(hyps, refs) and len(full.precisions) == 4


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_refs", [1, 3])
def test_chrf_equals_sacrebleu(seed, max_refs):
    hyps, refs = corpus(seed, max_refs=max_refs)
    assert chrf(hyps, refs) == sacrebleu.corpus_chrf(hyps, streams(refs)).score
    assert chrf(hyps, refs, word_order=2) == sacrebleu.corpus_chrf(hyps, streams(refs), word_order=2).score
    assert chrf(hyps, refs, full=True).word_order == 0


def test_bleu_brevity_penalty():
    """A hypothesis that is a prefix of its reference: every n-gram precision is 100%, so BLEU is
    100 * BP with BP = exp(1 - r / c), r and c the reference and hypothesis lengths."""
    hyp, ref = "the cat sat on the mat", "the cat sat on the mat in the sun"
    c, r = 6, 9
    result = bleu([hyp], [ref], full=True)
    assert result.precisions == [100.0] * 4
    assert result.bp == pytest.approx(math.exp(1 - r / c), rel=1e-12)
    assert result.score == pytest.approx(100 * math.exp(1 - r / c), rel=1e-12)
    assert bleu([ref], [ref]) == pytest.approx(100.0)  # no penalty at equal length
    assert bleu([ref + " today"], [ref], full=True).bp == 1.0  # nor for a longer hypothesis


def test_bleu_bad_input():
    with pytest.raises(UserError, match="list"):
        bleu("a sentence", ["a sentence"])
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(UserError, match="option"):
        bleu(["a"], ["a"], no_such_option=1)
    with pytest.raises(UserError, match="no hypotheses"):
        chrf([], [])


# ---------------------------------------------------------------------------- ROUGE

def rouge_reference(preds, refs, types, use_stemmer):
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)
    out = {t: {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0} for t in types}
    for p, r in zip(preds, refs):
        s = scorer.score(r, p) if isinstance(r, str) else scorer.score_multi(r, p)
        for t in types:
            out[t]["precision"] += s[t].precision / len(preds)
            out[t]["recall"] += s[t].recall / len(preds)
            out[t]["fmeasure"] += s[t].fmeasure / len(preds)
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_equals_rouge_score(seed, use_stemmer):
    hyps, refs = corpus(seed, n=25)
    # multi-sentence summaries for rougeLsum: sentences separated by newlines
    hyps = [h.replace(" . ", "\n") for h in hyps]
    refs = [r.replace(" . ", "\n") for r in refs]
    types = ("rouge1", "rouge2", "rougeL", "rougeLsum")
    ours = rouge(hyps, refs, use_stemmer=use_stemmer)
    expected = rouge_reference(hyps, refs, types, use_stemmer)
    for t in types:
        for k in ("precision", "recall", "fmeasure"):
            assert ours[t][k] == pytest.approx(expected[t][k], rel=1e-12, abs=1e-15)


def test_rouge_multi_reference_and_types():
    hyps, refs = corpus(9, n=20, max_refs=3)
    ours = rouge(hyps, refs, types=("rouge3", "rougeL"))
    expected = rouge_reference(hyps, refs, ("rouge3", "rougeL"), False)
    assert ours.keys() == {"rouge3", "rougeL"}
    for t in ours:
        assert ours[t] == pytest.approx(expected[t], rel=1e-12)
    with pytest.raises(UserError, match="ROUGE type"):
        rouge(["a"], ["a"], types=("rougeX",))


def test_rouge_is_recall_oriented_and_stems():
    """A short prediction inside a long reference has full precision and low recall."""
    got = rouge(["the cat"], ["the cat sat on the mat"], types=("rouge1",))["rouge1"]
    assert got["precision"] == 1.0 and got["recall"] == pytest.approx(2 / 6)
    assert rouge(["cats running"], ["cat runs"], types=("rouge1",))["rouge1"]["fmeasure"] == 0.0
    stemmed = rouge(["cats running"], ["cat running"], types=("rouge1",), use_stemmer=True)
    assert stemmed["rouge1"]["fmeasure"] == 1.0


# ---------------------------------------------------------------------------- WER, CER

def random_pairs(seed: int, n: int):
    """Reference/hypothesis pairs with substitutions, deletions, insertions, repeated and leading
    or trailing spaces, and some empty hypotheses."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        ref = sentence(rng, 1)
        words = []
        for w in ref.split():
            u = rng.random()
            if u < 0.1:
                continue  # deletion
            words.append(rng.choice(VOCAB) if u < 0.25 else w)
            if rng.random() < 0.08:
                words.append(rng.choice(VOCAB))  # insertion
        sep = "  " if rng.random() < 0.2 else " "
        hyp = sep.join(words) if rng.random() > 0.03 else ""
        if rng.random() < 0.1:
            hyp = f" {hyp}  "
        pairs.append((ref, hyp))
    return pairs


@pytest.fixture(params=["rapidfuzz", "python"])
def distance(request, monkeypatch):
    """Run WER/CER with rapidfuzz's edit distance and with the pure-Python DP."""
    if request.param == "python":
        monkeypatch.setattr(text, "_levenshtein", lambda: text._levenshtein_python)
    return request.param


def test_wer_cer_equal_jiwer(distance):
    pairs = random_pairs(0, 250)
    refs, hyps = [p[0] for p in pairs], [p[1] for p in pairs]
    for r, h in pairs:  # per pair
        assert wer([r], [h]) == pytest.approx(jiwer.wer(r, h), rel=1e-12)
        assert cer([r], [h]) == pytest.approx(jiwer.cer(r, h), rel=1e-12)
    assert wer(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps), rel=1e-12)  # corpus level
    assert cer(refs, hyps) == pytest.approx(jiwer.cer(refs, hyps), rel=1e-12)
    assert wer(refs[0], hyps[0]) == wer([refs[0]], [hyps[0]])  # a single pair as strings


def test_levenshtein_dp_against_rapidfuzz():
    from rapidfuzz.distance import Levenshtein

    rng = np.random.default_rng(1)
    for _ in range(300):
        a = list(rng.choice(list("abcd"), size=int(rng.integers(0, 12))))
        b = list(rng.choice(list("abcd"), size=int(rng.integers(0, 12))))
        assert text._levenshtein_python(a, b) == Levenshtein.distance(a, b)


def test_wer_cer_cases():
    assert wer(["the cat sat"], ["the cat sat"]) == 0.0
    assert wer(["the cat sat"], ["the dog sat down"]) == pytest.approx(2 / 3)
    assert wer(["a b"], ["a b c d e"]) == 1.5  # insertions can push WER above 1
    assert cer(["abcd"], ["abed"]) == 0.25
    with pytest.raises(ValueError, match="2 references but 1"):
        wer(["a", "b"], ["a"])
    with pytest.raises(UserError, match="empty"):
        wer([""], ["a"])


# ---------------------------------------------------------------------------- perplexity

def perplexity_float64(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> float:
    """exp(mean NLL), written out in float64 NumPy."""
    x = logits.double().numpy().reshape(-1, logits.shape[-1])
    y = targets.numpy().reshape(-1)
    keep = y != ignore_index
    x, y = x[keep], y[keep]
    m = x.max(axis=1, keepdims=True)
    log_z = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    nll = log_z - x[np.arange(len(y)), y]
    return float(np.exp(nll.mean()))


@pytest.mark.parametrize("seed", range(5))
def test_perplexity_equals_float64_nll(seed):
    g = torch.Generator().manual_seed(seed)
    n, t, v = 3, 17, 50
    logits = torch.randn(n, t, v, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, v, (n, t), generator=g)
    targets[torch.rand(n, t, generator=g) < 0.3] = -100
    expected = perplexity_float64(logits, targets, -100)
    assert perplexity(logits, targets) == pytest.approx(expected, rel=1e-12)
    assert perplexity(logits.float(), targets) == pytest.approx(expected, rel=1e-5)
    # log-probabilities give the same number as logits
    assert perplexity(torch.log_softmax(logits, -1), targets) == pytest.approx(expected, rel=1e-12)
    # another ignore index
    other = targets.clone()
    other[other == -100] = 0
    other[:, 0] = 7
    expected = perplexity_float64(logits, other, 7)
    assert perplexity(logits, other, ignore_index=7) == pytest.approx(expected, rel=1e-12)


def test_perplexity_of_uniform_is_vocab_size():
    v = 32
    assert perplexity(torch.zeros(2, 5, v), torch.randint(0, v, (2, 5))) == pytest.approx(v, rel=1e-6)
    half = torch.zeros(2, 5, v, dtype=torch.bfloat16)
    assert perplexity(half, torch.zeros(2, 5, dtype=torch.long)) == pytest.approx(v, rel=1e-6)


def test_perplexity_bad_input():
    with pytest.raises(ValueError, match="shape"):
        perplexity(torch.zeros(2, 5, 10), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(UserError, match="ignore_index"):
        perplexity(torch.zeros(1, 3, 10), torch.full((1, 3), -100))
    with pytest.raises(UserError, match="integer"):
        perplexity(torch.zeros(1, 3, 10), torch.zeros(1, 3))


def test_importing_text_metrics_is_cheap():
    import subprocess
    import sys

    code = ("import sys, goodfit.metrics.text, goodfit.metrics.detection; "
            "heavy = {'sacrebleu', 'rouge_score', 'nltk', 'faster_coco_eval', 'pycocotools', 'jiwer', "
            "'rapidfuzz'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
