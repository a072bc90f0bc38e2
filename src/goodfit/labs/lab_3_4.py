"""3.4 NLP metrics: BLEU's brevity penalty, ROUGE's recall orientation, perplexity, WER/CER on crafted examples."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
**BLEU** (machine translation; corpus level). For n = 1…4 the *modified* n-gram precision clips each
hypothesis n-gram count by its count in the reference, so repeating a correct word earns nothing:
p_n = Σ_ngram min(count_hyp, count_ref) / Σ_ngram count_hyp, summed over the whole corpus.
BLEU = BP · exp((1/4) Σ_n log p_n) (geometric mean), with the **brevity penalty**
BP = 1 if c > r, else exp(1 − r/c), where c is the total hypothesis length and r the total
(closest) reference length. Precision alone would reward saying little; since BLEU has no recall
term, BP is what punishes short output. A zero p_n makes the geometric mean 0, so sentence-level
BLEU needs smoothing. Scores depend on tokenization: report sacrebleu's signature (13a tokenizer).

**chrF** averages *character* n-gram (n = 1…6, spaces removed) precision P and recall R over n and
combines them as F_β = (1 + β²)·P·R / (β²·P + R) with β = 2 (recall weighted twice). It gives
partial credit to morphological variants (sits/sat, mats/mat) and needs no tokenizer; chrF++ adds
word uni- and bigrams.

**ROUGE** (summarization) is recall-oriented: it asks how much of the *reference* the candidate
covers. ROUGE-N recall = matched n-grams / reference n-grams, precision = matched / candidate
n-grams, F = 2PR/(P + R). ROUGE-L uses the longest common subsequence (in-order, gaps allowed):
R = LCS/|ref|, P = LCS/|cand|. ROUGE-Lsum treats text as sentences (newline-separated) and takes,
for each reference sentence, the union LCS with all candidate sentences, so it does not punish
reordered sentences. A candidate padded with extra words keeps recall 1 while its precision falls;
hence length limits or reporting F.

**Perplexity** of a language model on tokens x₁…x_T: PPL = exp(−(1/T) Σ_t log p(x_t | x_<t)) =
exp(mean NLL), the effective number of equally likely choices per token. A uniform model over V
tokens has PPL = V; the best possible model reaches exp(H), H the entropy rate of the source.
Padding tokens must be excluded (ignore_index), and PPL is only comparable under the same tokenizer.

**WER / CER** (speech recognition, OCR): (S + D + I) / N, the word (character) Levenshtein distance
(substitutions, deletions, insertions) over the number N of reference words (characters), summed
over the corpus before dividing. Insertions are not bounded by N, so WER can exceed 1.

The values come from the reference implementations: goodfit's `bleu`/`chrf` call sacrebleu, `rouge`
calls Google's rouge-score, `wer`/`cer` compute jiwer's definition (rapidfuzz edit distance),
`perplexity` is exp of torch's cross-entropy. The lab crafts pairs that isolate each effect and
checks goodfit against the formula written out by hand and against the reference library called
directly.
"""

REF = "the quick brown fox jumps over the lazy dog near the old river bank"
EXTRA = ("while a small green parrot watched quietly from its perch during a cold morning as two "
         "boys played chess").split()   # no word of REF, so every extra word is unmatched
ORDERS = (1, 2, 3, 4)


# ------------------------------------------------------------------ by-hand formulas (independent of the libraries)

def _ngrams(tokens, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu_by_hand(hyps: list[str], refs: list[str]) -> tuple[float, float, list[float]]:
    """Corpus BLEU with one reference per sentence, whitespace tokens, no smoothing: (score, BP, p_n in %)."""
    match, total = [0] * 4, [0] * 4
    c = r = 0
    for h, ref in zip(hyps, refs):
        ht, rt = h.split(), ref.split()
        c, r = c + len(ht), r + len(rt)
        for n in ORDERS:
            hc, rc = _ngrams(ht, n), _ngrams(rt, n)
            match[n - 1] += sum(min(k, rc[g]) for g, k in hc.items())
            total[n - 1] += sum(hc.values())
    p = [m / t for m, t in zip(match, total)]
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return 100 * bp * math.exp(sum(math.log(x) for x in p) / 4), bp, [100 * x for x in p]


def chrf_by_hand(hyp: str, ref: str, order: int = 6, beta: float = 2.0) -> float:
    """chrF of one pair: mean character n-gram P and R over n = 1..order (spaces removed), then F_beta."""
    h, r = "".join(hyp.split()), "".join(ref.split())
    ps, rs = [], []
    for n in range(1, order + 1):
        hc, rc = _ngrams(h, n), _ngrams(r, n)
        if not hc or not rc:
            continue
        m = sum(min(k, rc[g]) for g, k in hc.items())
        ps.append(m / sum(hc.values()))
        rs.append(m / sum(rc.values()))
    p, rr = sum(ps) / len(ps), sum(rs) / len(rs)
    return 100 * (1 + beta ** 2) * p * rr / (beta ** 2 * p + rr) if p + rr else 0.0


def lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def edit_distance(a, b) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


# ------------------------------------------------------------------ the lab

def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    from goodfit.metrics.text import bleu, chrf, rouge

    words = REF.split()
    r = len(words)
    # hypotheses of every length: perfect prefixes of the reference (too short) and the reference + extra words
    lengths = list(range(4, r + 1)) + [r + k for k in (2, 4, 7, 10, 14, len(EXTRA))]
    hyps = [" ".join(words[:c]) if c <= r else " ".join(words + EXTRA[:c - r]) for c in lengths]

    # -------------------------------------------------------------- BLEU: brevity penalty
    import sacrebleu

    rows, bp_err, prec_ok, score_err, ref_err = [], 0.0, True, 0.0, 0.0
    bleu_curve, bp_curve = [], []
    for c, h in zip(lengths, hyps):
        s = bleu([h], [REF], full=True)
        expected = 1.0 if c > r else math.exp(1 - r / c)
        bp_err = max(bp_err, abs(s.bp - expected))
        if c <= r:
            prec_ok &= all(abs(p - 100) < 1e-9 for p in s.precisions)
            score_err = max(score_err, abs(s.score - 100 * s.bp))
        ref_err = max(ref_err, abs(s.score - sacrebleu.corpus_bleu([h], [[REF]]).score))
        bleu_curve.append(s.score)
        bp_curve.append(s.bp)
        rows.append([c, r, *[round(p, 2) for p in s.precisions], s.bp, expected, s.score])
    ctx.table(f"BLEU of perfect prefixes (c < r) and of the reference plus extra words (c > r); r = {r}",
              ["c", "r", "p1 %", "p2 %", "p3 %", "p4 %", "BP (sacrebleu)", "exp(1 − r/c) or 1", "BLEU"], rows)
    half = bleu([" ".join(words[:7])], [REF], full=True)
    ctx.measure("BLEU of the first 7 of 14 reference words", half.score)
    ctx.measure("  its brevity penalty (exp(1 − 14/7) = e⁻¹ = 0.3679)", half.bp)
    ctx.measure("max |BP − exp(1 − r/c)| over all hypotheses", bp_err)
    ctx.check(prec_ok, "a perfect prefix has every modified n-gram precision p1…p4 = 100 %")
    ctx.check(bp_err < 1e-12 and score_err < 1e-9,
              "… yet BLEU = 100·BP with BP = exp(1 − r/c) for c < r (and BP = 1 for c > r)",
              f"max |BP − formula| {bp_err:.1e}, max |BLEU − 100·BP| {score_err:.1e}")
    long_scores = [s for c, s in zip(lengths, bleu_curve) if c > r]
    ctx.check(all(np.diff(long_scores) < 0) and long_scores[0] < 100,
              "longer-than-reference output is not penalized by BP; the extra words lower the precisions instead")

    # modified (clipped) precision: Papineni et al.'s example
    degenerate = bleu(["the the the the the the the"], ["the cat is on the mat"], full=True)
    ctx.measure("p1 of 'the the the the the the the' vs 'the cat is on the mat' (%)", degenerate.precisions[0])
    ctx.check(abs(degenerate.precisions[0] - 100 * 2 / 7) < 1e-9,
              "modified precision clips repeated words: p1 = 2/7, not 7/7")

    # the formula by hand on a small corpus (every p_n > 0, so smoothing plays no part)
    corpus_h = ["the cat sat on the mat today", "a quick brown fox jumped over the dog",
                "it is raining hard in the city tonight"]
    corpus_r = ["the cat sat on the red mat", "the quick brown fox jumps over the lazy dog",
                "it is raining in the city tonight"]
    ours = bleu(corpus_h, corpus_r, full=True)
    hand, hand_bp, hand_p = bleu_by_hand(corpus_h, corpus_r)
    direct = sacrebleu.corpus_bleu(corpus_h, [corpus_r]).score
    ctx.table("corpus BLEU of 3 sentence pairs: by hand vs goodfit (sacrebleu)",
              ["", "BLEU", "BP", "p1 %", "p2 %", "p3 %", "p4 %"],
              [["by hand", hand, hand_bp, *hand_p], ["goodfit.bleu", ours.score, ours.bp, *ours.precisions],
               ["sacrebleu.corpus_bleu", direct, "", "", "", "", ""]])
    gap = max(abs(hand - ours.score), abs(direct - ours.score), ref_err)
    ctx.check(gap < 1e-9, "BLEU by hand (clipped n-gram precisions, geometric mean, BP) = goodfit.bleu = "
              "sacrebleu.corpus_bleu called directly", f"max |diff| {gap:.1e}")

    # -------------------------------------------------------------- chrF
    pairs = [("the cat sat on the mat", "the cat sat on the mat"),
             ("the cats sit on the mats", "the cat sat on the mat"),
             ("on the mat the cat sat", "the cat sat on the mat"),
             ("a dog lay under a table", "the cat sat on the mat")]
    rows, chrf_gap = [], 0.0
    for h, ref in pairs:
        g, hand_c, direct_c = chrf([h], [ref]), chrf_by_hand(h, ref), sacrebleu.corpus_chrf([h], [[ref]]).score
        chrf_gap = max(chrf_gap, abs(g - hand_c), abs(g - direct_c))
        rows.append([h, ref, g, hand_c, bleu([h], [ref])])
    ctx.table("chrF vs BLEU on variants of one sentence", ["hypothesis", "reference", "chrF (goodfit)", "chrF by hand",
                                                           "BLEU (smoothed)"], rows)
    ctx.check(chrf_gap < 1e-9, "chrF by hand (mean char n-gram P and R, n = 1…6, F_β with β = 2) = goodfit.chrf = "
              "sacrebleu.corpus_chrf", f"max |diff| {chrf_gap:.1e}")
    ctx.check(rows[1][2] > 50 and rows[1][4] < 30, "chrF gives morphological variants partial credit where "
              "word-level BLEU does not (chrF > 50, BLEU < 30)", f"chrF {rows[1][2]:.1f}, BLEU {rows[1][4]:.1f}")

    # -------------------------------------------------------------- ROUGE: recall orientation
    types = ("rouge1", "rouge2", "rougeL")
    padded = " ".join(EXTRA[:10] + words + EXTRA[10:])       # the whole reference inside a much longer text
    short = " ".join(words[1:4])                             # "quick brown fox": precise, incomplete
    rp, rs = rouge([padded], [REF], types), rouge([short], [REF], types)
    ctx.table("ROUGE of a padded and of a short candidate against the 14-word reference",
              ["candidate", "words", *[f"{t} {m}" for t in types for m in ("P", "R")]],
              [[f"reference + {len(EXTRA)} extra words", len(padded.split()),
                *[rp[t][m] for t in types for m in ("precision", "recall")]],
               [f"'{short}'", 3, *[rs[t][m] for t in types for m in ("precision", "recall")]]])
    ctx.check(all(abs(rp[t]["recall"] - 1) < 1e-12 and rp[t]["precision"] < 0.5 for t in types),
              "a candidate containing the reference plus many extra words has recall 1 and precision < 0.5 "
              "(ROUGE-1, -2, -L)", ", ".join(f"{t} P={rp[t]['precision']:.3f}" for t in types))
    ctx.check(all(abs(rs[t]["precision"] - 1) < 1e-12 and rs[t]["recall"] < 0.5 for t in types),
              "a short exact fragment has precision 1 and recall < 0.5", ", ".join(
                  f"{t} R={rs[t]['recall']:.3f}" for t in types))
    # precision and recall along the same hypotheses as BLEU; ROUGE-1 P and R written out by hand
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL", "rougeLsum"])
    r1p, r1r, r1f, hand_gap = [], [], [], 0.0
    for h in hyps:
        g = rouge([h], [REF], ("rouge1", "rougeL"))
        d = scorer.score(REF, h)
        ht, rt = h.split(), REF.split()
        overlap = sum((Counter(ht) & Counter(rt)).values())
        lc = lcs(ht, rt)
        hand_gap = max(hand_gap, abs(g["rouge1"]["precision"] - overlap / len(ht)),
                       abs(g["rouge1"]["recall"] - overlap / len(rt)), abs(g["rougeL"]["precision"] - lc / len(ht)),
                       abs(g["rougeL"]["recall"] - lc / len(rt)),
                       *[abs(g[t][m] - getattr(d[t], m)) for t in ("rouge1", "rougeL")
                         for m in ("precision", "recall", "fmeasure")])
        r1p.append(g["rouge1"]["precision"])
        r1r.append(g["rouge1"]["recall"])
        r1f.append(g["rouge1"]["fmeasure"])
    ctx.check(hand_gap < 1e-12, f"on all {len(hyps)} hypotheses, goodfit.rouge = overlap/|cand|, overlap/|ref| and "
              "LCS/|cand|, LCS/|ref| by hand = rouge_score.RougeScorer called directly", f"max |diff| {hand_gap:.1e}")
    # ROUGE-L vs ROUGE-Lsum on reordered sentences
    ref_sum = "the cat sat on the mat\nthe dog slept in the sun"
    swapped = "the dog slept in the sun\nthe cat sat on the mat"
    lsum = rouge([swapped], [ref_sum], ("rougeL", "rougeLsum"))
    ctx.measure("ROUGE-L recall of a summary with its two sentences swapped", lsum["rougeL"]["recall"])
    ctx.measure("ROUGE-Lsum recall of the same summary", lsum["rougeLsum"]["recall"])
    ctx.check(abs(lsum["rougeLsum"]["recall"] - 1) < 1e-12 and lsum["rougeL"]["recall"] < 0.75,
              "swapping sentences costs ROUGE-L (one LCS over the whole text) but not ROUGE-Lsum (per sentence)")

    ppl_rows = _perplexity(ctx)
    _error_rates(ctx)

    # -------------------------------------------------------------- figure
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    ratio = np.array(lengths) / r
    fine = np.linspace(4 / r, 1, 200)
    ax1.plot(fine, np.exp(1 - 1 / fine), "k-", lw=0.8, label="exp(1 − r/c)")
    ax1.plot(ratio, np.array(bleu_curve) / 100, "s--", color="tab:blue", ms=8, label="BLEU / 100")
    ax1.plot(ratio, bp_curve, "o", color="tab:orange", ms=4, zorder=3, label="BP (sacrebleu)")
    ax1.axvline(1, color="grey", lw=0.8, ls=":")
    ax1.set_xlabel("hypothesis length / reference length (c/r)")
    ax1.set_title("BLEU: prefixes have 100 % precision, BP cuts them")
    ax1.legend(fontsize=8)
    ax2.plot(ratio, r1r, "o-", color="tab:green", label="ROUGE-1 recall")
    ax2.plot(ratio, r1p, "s-", color="tab:red", label="ROUGE-1 precision")
    ax2.plot(ratio, r1f, "^:", color="tab:purple", label="ROUGE-1 F")
    ax2.axvline(1, color="grey", lw=0.8, ls=":")
    ax2.set_xlabel("candidate length / reference length")
    ax2.set_title("ROUGE: padding keeps recall at 1")
    ax2.legend(fontsize=8)
    names = [row[0] for row in ppl_rows]
    ax3.bar(names, [row[1] for row in ppl_rows], color=["grey", "tab:blue", "tab:orange", "tab:green"])
    ax3.plot(names, [row[2] if isinstance(row[2], float) else np.nan for row in ppl_rows], "k_", ms=30, mew=2,
             label="theory: V, exp H(π), exp(entropy rate)")
    for i, row in enumerate(ppl_rows):
        ax3.annotate(f"{row[1]:.2f}", (i, row[1]), ha="center", va="bottom", fontsize=8, xytext=(0, 3),
                     textcoords="offset points")
    ax3.set_ylim(0, 1.3 * max(row[1] for row in ppl_rows))
    ax3.set_ylabel("perplexity")
    ax3.set_title("perplexity = exp(mean NLL)")
    ax3.legend(fontsize=8)
    ax3.tick_params(axis="x", labelsize=8)
    ctx.figure(fig, "bleu_rouge_perplexity")


def _perplexity(ctx: LabContext) -> list[list]:
    """Uniform model = V; on a Markov source, unigram > fitted bigram > true bigram ≈ exp(entropy rate)."""
    from goodfit.metrics.text import perplexity

    v = 1000
    gen = torch.Generator().manual_seed(34)
    targets = torch.randint(0, v, (4, 256), generator=gen)
    uniform = perplexity(torch.zeros(4, 256, v, dtype=torch.float64), targets)   # float64: exact to ~1e-13
    ctx.measure(f"perplexity of a uniform model over V = {v} tokens", uniform)
    ctx.check(abs(uniform / v - 1) < 1e-9, "a uniform model over V tokens has perplexity V (float64, rel. tol. 1e-9)",
              f"{uniform:.9f}")
    # padding must not count
    padded_targets = torch.cat([targets, torch.full((4, 64), -100)], 1)
    padded_logits = torch.cat([torch.zeros(4, 256, v, dtype=torch.float64),
                               torch.randn(4, 64, v, generator=gen, dtype=torch.float64) * 5], 1)
    padded = perplexity(padded_logits, padded_targets)
    ctx.check(abs(padded / uniform - 1) < 1e-9, "tokens equal to ignore_index (padding, with random logits) do not "
              "change the perplexity (rel. tol. 1e-9)", f"{padded:.9f}")

    # a Markov source over V = 50 tokens with peaky transitions
    k = 50
    rng = np.random.default_rng(34)
    trans = rng.dirichlet(np.full(k, 0.1), size=k)
    evals, evecs = np.linalg.eig(trans.T)
    pi = np.real(evecs[:, np.argmin(np.abs(evals - 1))])
    pi = pi / pi.sum()
    n = 20_000 if ctx.quick else 200_000
    seq = np.empty(2 * n, dtype=np.int64)
    seq[0] = rng.choice(k, p=pi)
    cum = np.cumsum(trans, axis=1)
    u = rng.random(2 * n)
    for t in range(1, 2 * n):
        seq[t] = min(int(np.searchsorted(cum[seq[t - 1]], u[t])), k - 1)
    train, test = seq[:n], seq[n:]
    counts = np.ones((k, k))                                  # add-one smoothed bigram fitted on the first half
    np.add.at(counts, (train[:-1], train[1:]), 1)
    fitted = counts / counts.sum(1, keepdims=True)
    prev, nxt = torch.as_tensor(test[:-1]), torch.as_tensor(test[1:])
    logp = {
        "uniform": torch.zeros(len(nxt), k),
        "unigram π": torch.log(torch.as_tensor(pi)).expand(len(nxt), k),
        "fitted bigram": torch.log(torch.as_tensor(fitted))[prev],
        "true bigram": torch.log(torch.as_tensor(trans))[prev],
    }
    h_pi = float(-(pi * np.log(pi)).sum())
    h_rate = float(-(pi[:, None] * trans * np.log(trans)).sum())
    theory = {"uniform": float(k), "unigram π": math.exp(h_pi), "fitted bigram": "—",
              "true bigram": math.exp(h_rate)}
    ppl = {name: perplexity(lp[None], nxt[None]) for name, lp in logp.items()}
    rows = [[name, ppl[name], theory[name]] for name in logp]
    ctx.table(f"perplexity on {len(nxt)} held-out tokens of a {k}-token Markov source",
              ["model", "perplexity", "theory"], rows)
    tol = 0.05 if ctx.quick else 0.02
    vals = [ppl[name] for name in logp]
    ctx.check(abs(ppl["uniform"] / k - 1) < 1e-5 and all(a > b for a, b in zip(vals, vals[1:])),
              "better models have lower perplexity: uniform (= V) > unigram > fitted bigram > true bigram",
              " > ".join(f"{x:.2f}" for x in vals))
    dev = max(abs(ppl[name] / theory[name] - 1) for name in ("unigram π", "true bigram"))
    ctx.check(dev < tol, f"unigram ≈ exp H(π) and true bigram ≈ exp(entropy rate), the floor (rel. tol. {tol})",
              f"max rel. dev. {dev:.4f}")
    try:
        from torchmetrics.text import Perplexity
    except ImportError:
        ctx.log("torchmetrics is not installed: perplexity compared with the formula only")
    else:
        tm = float(Perplexity()(logp["true bigram"][None].float(), nxt[None]))
        ctx.measure("torchmetrics Perplexity of the true bigram model", tm)
        ctx.check(abs(tm / ppl["true bigram"] - 1) < 1e-4, "goodfit.perplexity = torchmetrics' Perplexity "
                  "(rel. tol. 1e-4, float32)")
    return rows


def _error_rates(ctx: LabContext) -> None:
    from goodfit.metrics.text import cer, wer

    ref = "the cat sat on the mat"
    inserted = "well um the cat uh sat you know on the the mat okay"   # the reference with 7 words inserted
    cases = [  # (reference, hypothesis, edits counted by hand, unit)
        (ref, ref, 0, "word"),
        (ref, "a cat sat the mat today", 3, "word"),                 # S (the→a), D (on), I (today)
        (ref, inserted, 7, "word"),                                   # 7 insertions
        ("kitten", "sitting", 3, "char"),                             # k→s, e→i, +g
    ]
    try:
        import jiwer
    except ImportError:
        jiwer = None
    rows, ok, ref_gap = [], True, 0.0
    for r, h, edits, unit in cases:
        fn = wer if unit == "word" else cer
        n = len(r.split()) if unit == "word" else len(r)
        value = fn([r], [h])
        by_dp = edit_distance(r.split() if unit == "word" else r, h.split() if unit == "word" else h) / n
        ok &= abs(value - edits / n) < 1e-12 and abs(value - by_dp) < 1e-12
        if jiwer is not None:
            ref_gap = max(ref_gap, abs(value - (jiwer.wer(r, h) if unit == "word" else jiwer.cer(r, h))))
        rows.append([unit.upper()[0] + "ER", r, h, edits, n, value])
    ctx.table("WER / CER = (S + D + I) / N", ["metric", "reference", "hypothesis", "edits (by hand)", "N", "value"],
              rows)
    ctx.check(ok, "WER/CER equal hand-counted edits / reference length (and an independent Levenshtein DP)")
    w = wer([ref], [inserted])
    ctx.measure("WER of the reference with 7 words inserted", w)
    ctx.check(w > 1, "insertions push WER above 1 (7 edits over 6 reference words)", f"{w:.4f}")
    corpus = wer(["hello world", "the quick brown fox jumps over the lazy dog again"],
                 ["hello word", "the quick brown fox jumps over the lazy dog again"])
    ctx.measure("corpus WER of (1 error in 2 words, 0 in 10)", corpus)
    ctx.check(abs(corpus - 1 / 12) < 1e-12, "corpus WER sums edits and reference words before dividing: 1/12, not "
              "the mean of sentence WERs (0.25)")
    if jiwer is not None:
        ctx.check(ref_gap < 1e-12, "goodfit wer/cer = jiwer.wer/cer called directly", f"max |diff| {ref_gap:.1e}")
    else:
        ctx.log("jiwer is not installed (it is in goodfit's [test] extra): WER/CER checked against the DP above only")


LAB = Lab(id="3.4", title="NLP metrics (BLEU, chrF, ROUGE, perplexity, WER/CER)",
          question="NLP 任务评估指标（BLEU、ROUGE 等） — NLP metrics: BLEU, chrF, ROUGE-1/2/L, perplexity, WER/CER.",
          answer=ANSWER, run=run, uses="metrics (goodfit.metrics.text)")
