"""2.1 Classification losses: focal and class-balanced losses lift minority recall; label smoothing calibrates."""
from __future__ import annotations

import numpy as np
import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
With logits z ∈ ℝᴷ, p = softmax(z) and the true class y:

- **Cross-entropy (CE)**: L = −log p_y = −z_y + log Σ_k e^{z_k}, the negative log-likelihood of a
  categorical model. Its gradient w.r.t. the logits is p − onehot(y): bounded, and it never
  vanishes until p_y = 1, so CE keeps pushing the logits of correctly classified samples apart.
  Computed from logits with log-sum-exp (never log(softmax) in two steps).
- **BCE with logits** (binary and multilabel, one sigmoid per output): L = −[y·log σ(z) +
  (1 − y)·log(1 − σ(z))] = softplus(z) − y·z, evaluated in that stable form. `pos_weight` p_w
  multiplies the positive term (n_neg/n_pos balances a rare positive class). It is CE with the
  two logits (0, z).
- **Label smoothing ε**: the target becomes q = (1 − ε)·onehot(y) + ε/K, so
  L = (1 − ε)·CE + ε·(1/K)Σ_k −log p_k. The minimum is no longer at infinite logits but at
  p_y = 1 − ε + ε/K: it caps confidence (a regularizer that also improves calibration when the
  unsmoothed model is overconfident — and over-corrects into *under*-confidence when ε is larger
  than the model's actual error rate needs).
- **Class weights**: L = w_y·CE, the mean taken as Σ w_yᵢ·Lᵢ / Σ w_yᵢ. Inverse frequency
  w_c ∝ 1/n_c equalizes the total weight of every class. **Class-balanced** weights (Cui et al.
  2019) use the *effective number* of samples E_c = (1 − βⁿᶜ)/(1 − β) instead, w_c ∝ 1/E_c: β = 0
  gives uniform weights, β → 1 inverse frequency; β in between (0.99–0.9999) discounts the many
  near-duplicate samples of a big class without letting a class of 3 samples dominate.
- **Focal loss** (Lin et al. 2017): FL = −α_y·(1 − p_y)^γ·log p_y. The modulating factor
  (1 − p_y)^γ shrinks the loss of samples already classified well (p_y → 1), so the many easy
  samples — mostly of the big classes — stop dominating the gradient and the hard ones (often the
  minority) get it. γ = 0 is CE (checked below); γ = 2 is the usual choice; α is a class weight.
- **Hinge / multiclass margin** (SVM-style, torch's multi_margin): L = Σ_{j≠y} max(0, m − z_y +
  z_j)/K. Zero once the true score beats every other by the margin m: it ignores samples that
  are right with room to spare and gives no probabilities.
- **KL divergence / distillation**: KL(t‖p) = Σ_k t_k(log t_k − log p_k), CE to a soft target t
  minus t's entropy (so it has the same gradient as CE(t, p)). Knowledge distillation (Hinton et
  al. 2015) trains a student on
  α·T²·KL(softmax(z_teacher/T) ‖ softmax(z_student/T)) + (1 − α)·CE(z_student, y):
  the temperature T > 1 exposes the teacher's "dark knowledge" (which wrong classes are close),
  T² keeps the soft term's gradient size independent of T.

**Imbalance.** With plain CE a class of 3 samples among 125-sample classes contributes ~1 % of the
loss: the classifier learns to ignore it, and its recall collapses while overall accuracy barely
moves. Class(-balanced) weights rescale each class's share of the loss; focal loss rescales each
*sample's* by how wrong it still is. Both raise minority recall, usually at a small cost in
majority recall (the decision boundary moves toward the big classes). Focal loss acts only
through samples that are still poorly fit: trained long enough to fit every training sample
(p_y → 1 for all), its factor no longer separates easy from hard and the effect fades, while class
weights act at every step. So focal's gain depends on the training budget; here the recipe's own
early stopping sets it.

**Calibration.** A model is calibrated when, among predictions made with confidence c, a fraction
c is right. ECE = Σ_b (n_b/N)·|acc_b − conf_b| over confidence bins b (15 equal-width bins here).
Networks trained with CE to zero training loss on little data become overconfident (confidence ≫
accuracy); label smoothing pulls the confidence down. How much to smooth depends on how wrong the
model is: too large an ε makes it underconfident, so choose ε on validation (the sweep below shows
both sides).

**How the lab measures it.** (1) Numeric identities of the loss functions, in float64.
(2) Imbalance: goodfit's digits-mlp recipe with `data.perturb.imbalance=0.02` (training classes
thinned geometrically from 125 to 3 samples; validation and test stay balanced) and the recipe's
defaults (early stopping on val loss); the rarest three classes are the minority. Losses through
the recipe: `loss.name=focal`, `loss.weight=[…]` from `class_balanced_weights(counts, β=0.99)`,
`data.balance=class_weights` (inverse frequency), and focal with the class-balanced α.
(3) Calibration: a 3-hidden-layer, 128-wide MLP trained with Adam for 400 steps on only 100 digits
(no weight decay, no dropout) — plain CE is overconfident. A sweep over ε; ε is selected on a
validation set's ECE and scored on a separate test set, so the choice cannot flatter the test
number. Tolerances: full mode averages 8 seeds (imbalance) and 5 (calibration) and asks the
minority-recall gain to exceed max(0.02, 2 standard errors) and the ECE drop to exceed 0.02;
quick mode's 3 seeds can only ask for a gain above 1 standard error.
"""

RATIO = 0.02          # rarest training class = RATIO × the most frequent one
BETA = 0.99           # class-balanced β
MINORITY = 3          # the rarest classes whose recall is the minority recall
GAIN_TOL = 0.02       # minority recall must improve by more than this and 2 standard errors (full mode)
N_CAL = 100           # training samples of the calibration experiment
ECE_TOL = 0.02        # ECE must fall by more than this (its sampling noise on ~1,200 test digits is ~0.01)
EPSILONS_FULL = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
EPSILONS_QUICK = [0.0, 0.01, 0.1]


# ---------------------------------------------------------------- 1. identities
def _identities(ctx: LabContext) -> None:
    import torch.nn.functional as F

    from goodfit.losses import (bce_with_logits, binary_focal, class_balanced_weights, cross_entropy,
                                distillation, focal, kl_div, multi_margin)

    g = torch.Generator().manual_seed(21)
    z = torch.randn(64, 5, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 5, (64,), generator=g)
    w = torch.rand(5, generator=g, dtype=torch.float64) + 0.2
    zb = torch.randn(64, generator=g, dtype=torch.float64) * 3
    yb = torch.randint(0, 2, (64,), generator=g).double()
    zt = torch.randn(64, 5, generator=g, dtype=torch.float64) * 2
    logp = F.log_softmax(z, 1)
    p = logp.exp()
    eps, T = 0.1, 4.0
    nll = -logp[torch.arange(64), y]
    margin = (1 - z[torch.arange(64), y][:, None] + z).clamp_min(0)
    margin[torch.arange(64), y] = 0
    t = F.softmax(zt / T, 1)
    counts = torch.tensor([500, 100, 20, 3])
    rows = [
        ("CE = −log softmax(z)_y", cross_entropy(z, y), nll.mean()),
        ("focal(γ=0) = CE", focal(z, y, gamma=0.0), cross_entropy(z, y)),
        ("focal(γ=0, α=w) = CE(weight=w)", focal(z, y, gamma=0.0, alpha=w), cross_entropy(z, y, weight=w)),
        ("focal(γ=2) = mean (1−p_y)²·(−log p_y)", focal(z, y, gamma=2.0),
         ((1 - p[torch.arange(64), y]) ** 2 * nll).mean()),
        ("CE(weight=w) = Σ w_y·L / Σ w_y", cross_entropy(z, y, weight=w), (w[y] * nll).sum() / w[y].sum()),
        ("CE(ε) = (1−ε)·CE + ε·mean_k(−log p_k)", cross_entropy(z, y, label_smoothing=eps),
         ((1 - eps) * nll + eps * (-logp).mean(1)).mean()),
        ("BCE-with-logits = softplus(z) − y·z", bce_with_logits(zb, yb), (F.softplus(zb) - yb * zb).mean()),
        ("BCE-with-logits = CE on logits (0, z)", bce_with_logits(zb, yb),
         cross_entropy(torch.stack([torch.zeros_like(zb), zb], 1), yb.long())),
        ("binary_focal(γ=0) = BCE", binary_focal(zb, yb, gamma=0.0), bce_with_logits(zb, yb)),
        ("multi_margin = Σ_{j≠y} max(0, 1 − z_y + z_j)/K", multi_margin(z, y), (margin.sum(1) / 5).mean()),
        ("KL(t‖softmax z) = Σ t(log t − log p)", kl_div(z, t), (t * (t.log() - logp)).sum(1).mean()),
        ("KL(softmax z ‖ softmax z) = 0", kl_div(z, p), torch.tensor(0.0, dtype=torch.float64)),
        ("distillation(α=1) = T²·KL(teacher_T ‖ student_T)", distillation(z, zt, temperature=T, alpha=1.0),
         T ** 2 * (t * (t.log() - F.log_softmax(z / T, 1))).sum(1).mean()),
        ("class_balanced(β=0) = uniform", class_balanced_weights(counts, beta=0.0).double(),
         torch.ones(4, dtype=torch.float64)),
        ("class_balanced(β=1) = inverse frequency (sum K)", class_balanced_weights(counts, beta=1.0).double(),
         (1 / counts.double()) * 4 / (1 / counts.double()).sum()),
    ]
    table, worst = [], 0.0
    for name, a, b in rows:
        err = float((torch.as_tensor(a, dtype=torch.float64) - b).abs().max())
        worst = max(worst, err)
        table.append([name, float(torch.as_tensor(a).reshape(-1)[0]), err])
    ctx.table("loss identities (float64, random logits; value = first element)", ["identity", "value", "abs error"],
              table)
    ctx.check(worst < 1e-6, f"every identity holds (max abs error < 1e-6 over {len(rows)} identities; the test suite "
                            "checks each loss against its reference formula)", f"{worst:.1e}")


# ---------------------------------------------------------------- 2. imbalance
def _imbalance(ctx: LabContext):
    from goodfit.data import load_data
    from goodfit.losses import class_balanced_weights
    from goodfit.metrics import balanced_accuracy, confusion_matrix
    from goodfit.recipe import load_recipe
    from goodfit.runner import build, resolve

    seeds = list(range(3 if ctx.quick else 8))
    base = [f"data.perturb.imbalance={RATIO}", "train.threads=1"]

    def fmt(ws):
        return "[" + ",".join(f"{x:.6g}" for x in ws) + "]"

    results: dict[str, list] = {}
    counts = None
    for seed in seeds:
        recipe = resolve(load_recipe("digits-mlp", [*base, f"seed={seed}"]))
        counts = np.bincount(load_data(recipe.data, recipe.task, seed).y_train.numpy(), minlength=10)
        cb = class_balanced_weights(torch.as_tensor(counts), beta=BETA).tolist()
        variants = {
            "CE": [],
            "focal γ=2": ["loss.name=focal", "loss.gamma=2.0"],
            f"CE + class-balanced (β={BETA})": [f"loss.weight={fmt(cb)}"],
        }
        if not ctx.quick:
            variants["CE + inverse frequency (data.balance)"] = ["data.balance=class_weights"]
            variants["focal γ=2 + class-balanced α"] = ["loss.name=focal", "loss.gamma=2.0", f"loss.alpha={fmt(cb)}"]
        for name, extra in variants.items():
            parts = build(resolve(load_recipe("digits-mlp", [*base, f"seed={seed}", *extra])), progress=False)
            state = parts.trainer.fit()
            data = parts.data
            with torch.no_grad():
                logits = parts.trainer.model.eval()(data.x_test)
            cm = confusion_matrix(logits, data.y_test, num_classes=10)
            recall = cm.diagonal() / cm.sum(1)
            rare = np.argsort(counts, kind="stable")[:MINORITY]
            common = np.argsort(-counts, kind="stable")[:MINORITY]
            results.setdefault(name, []).append({
                "recall": recall, "minority": recall[rare].mean(), "majority": recall[common].mean(),
                "balanced": balanced_accuracy(logits, data.y_test, num_classes=10),
                "accuracy": cm.diagonal().sum() / cm.sum(), "epochs": len(state.history)})
    cb_w = class_balanced_weights(torch.as_tensor(counts), beta=BETA)
    inv = 1 / counts / (1 / counts).mean()
    ctx.table("training class counts (last seed) and weights", ["class", "count", f"class-balanced β={BETA}",
                                                                 "inverse frequency"],
              [[c, int(counts[c]), float(cb_w[c]), float(inv[c])] for c in range(10)])

    ctx.log(f"with counts ≪ 1/(1 − β) = {1 / (1 - BETA):.0f} the effective number E_c ≈ n_c, so class-balanced "
            "weights are close to inverse frequency here; they differ for the big classes only")
    ce_min = np.array([r["minority"] for r in results["CE"]])
    rows, gains = [], {}
    for name, rs in results.items():
        mino = np.array([r["minority"] for r in rs])
        d = mino - ce_min
        se = float(d.std(ddof=1) / np.sqrt(len(d)))
        gains[name] = (float(d.mean()), se, int((d > 0).sum()))
        rows.append([name, float(mino.mean()), float(d.mean()), se, float(np.mean([r["majority"] for r in rs])),
                     float(np.mean([r["balanced"] for r in rs])), float(np.mean([r["accuracy"] for r in rs])),
                     float(np.mean([r["epochs"] for r in rs]))])
    ctx.table(f"balanced test set, mean over {len(seeds)} seeds: minority = the {MINORITY} rarest training classes, "
              f"majority = the {MINORITY} most frequent; gain = paired difference to CE, se its standard error",
              ["loss", "minority recall", "gain vs CE", "se", "majority recall", "balanced acc", "accuracy", "epochs"],
              rows)
    ctx.measure("seeds (imbalance)", len(seeds))
    ctx.measure("minority recall, plain CE", float(ce_min.mean()))
    # full mode (8 seeds): gain > max(GAIN_TOL, 2 se); quick mode (3 seeds) can only ask for gain > 1 se
    k_se, floor = (1, 0.0) if ctx.quick else (2, GAIN_TOL)
    for name in ("focal γ=2", f"CE + class-balanced (β={BETA})"):
        gain, se, wins = gains[name]
        ctx.measure(f"minority recall gain, {name}", gain)
        ctx.check(gain > max(floor, k_se * se),
                  f"{name} raises mean minority recall over plain CE by more than max({floor}, {k_se} se)",
                  f"{gain:+.3f}, se {se:.3f}, better in {wins}/{len(seeds)} seeds")
    return results, counts


# ---------------------------------------------------------------- 3. calibration
def _calibration(ctx: LabContext):
    from sklearn.datasets import load_digits

    from goodfit.losses import cross_entropy
    from goodfit.metrics import accuracy, ece, reliability_bins

    torch.set_num_threads(1)
    digits = load_digits()
    x_all = torch.tensor(digits.data, dtype=torch.float32)
    y_all = torch.tensor(digits.target)
    seeds = list(range(2 if ctx.quick else 5))
    epsilons = EPSILONS_QUICK if ctx.quick else EPSILONS_FULL
    n_val = 500
    stats = {e: [] for e in epsilons}       # per seed: (val ece, test ece, test acc, test conf)
    logits_keep = {}
    for seed in seeds:
        g = torch.Generator().manual_seed(2100 + seed)
        perm = torch.randperm(len(y_all), generator=g)
        tr, va, te = perm[:N_CAL], perm[N_CAL:N_CAL + n_val], perm[N_CAL + n_val:]
        mu, sd = x_all[tr].mean(0), x_all[tr].std(0) + 1e-3  # statistics of the training split only
        xs = {k: (x_all[i] - mu) / sd for k, i in (("tr", tr), ("va", va), ("te", te))}
        for eps in epsilons:
            torch.manual_seed(seed)
            model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128),
                                        torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(),
                                        torch.nn.Linear(128, 10))
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            gb = torch.Generator().manual_seed(seed)
            for _ in range(400):
                idx = torch.randint(0, N_CAL, (32,), generator=gb)
                loss = cross_entropy(model(xs["tr"][idx]), y_all[tr][idx], label_smoothing=eps)
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                out_va, out_te = model(xs["va"]), model(xs["te"])
            stats[eps].append((ece(out_va, y_all[va]), ece(out_te, y_all[te]), accuracy(out_te, y_all[te]),
                               out_te.softmax(1).max(1).values.mean().item()))
            if seed == seeds[0]:
                logits_keep[eps] = (out_te, y_all[te])
    mean = {e: np.mean(np.array(v), axis=0) for e, v in stats.items()}
    rows = [[e, *mean[e], mean[e][3] - mean[e][2]] for e in epsilons]
    ctx.table(f"label smoothing sweep, mean over {len(seeds)} seeds ({N_CAL} training digits; val {n_val}, test "
              f"{len(y_all) - N_CAL - n_val}); ECE with 15 bins (goodfit.metrics.ece)",
              ["ε", "val ECE", "test ECE", "test acc", "test confidence", "conf − acc"], rows)
    chosen = min((e for e in epsilons if e > 0), key=lambda e: mean[e][0])  # selected on validation ECE
    plain = mean[0.0]
    ctx.measure("plain CE: test accuracy / mean confidence", f"{plain[2]:.3f} / {plain[3]:.3f}")
    ctx.measure("plain CE: test ECE", float(plain[1]))
    ctx.measure("ε selected on validation ECE", chosen)
    ctx.measure(f"test ECE at ε = {chosen}", float(mean[chosen][1]))
    per_seed = np.array([s[1] for s in stats[chosen]]) - np.array([s[1] for s in stats[0.0]])
    ctx.check(plain[3] - plain[2] > 0.05, "plain CE is overconfident: mean test confidence exceeds accuracy by > 0.05",
              f"{plain[3]:.3f} vs {plain[2]:.3f}")
    ctx.check(mean[chosen][1] < plain[1] - ECE_TOL and (per_seed < 0).all(),
              f"label smoothing (ε chosen on validation ECE) lowers test ECE: by more than {ECE_TOL} on average, and "
              "in every seed", f"{plain[1]:.4f} → {mean[chosen][1]:.4f}")
    confs = [mean[e][3] for e in epsilons]
    ctx.check(all(a > b for a, b in zip(confs, confs[1:])), "mean confidence falls monotonically as ε grows",
              " > ".join(f"{c:.3f}" for c in confs))
    big = max(epsilons)
    ctx.check(mean[big][3] < mean[big][2] and mean[big][1] > mean[chosen][1],
              f"too much smoothing over-corrects: at ε = {big} the model is underconfident (confidence < accuracy) "
              "and its ECE is above the selected ε's",
              f"conf {mean[big][3]:.3f} < acc {mean[big][2]:.3f}, ECE {mean[big][1]:.4f}")
    bins = {e: reliability_bins(*logits_keep[e]) for e in (0.0, chosen, big)}
    return epsilons, mean, chosen, bins


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    _identities(ctx)
    results, counts = _imbalance(ctx)
    epsilons, mean, chosen, bins = _calibration(ctx)

    # ---------------------------------------------------------------- figure 1: focal factor and per-class recall
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1.7]})
    pt = np.linspace(0.01, 1, 200)
    for gamma in (0, 0.5, 1, 2, 5):
        ax1.plot(pt, -(1 - pt) ** gamma * np.log(pt), label=f"γ={gamma}" + (" (CE)" if gamma == 0 else ""))
    ax1.set_xlabel("probability of the true class p_y")
    ax1.set_ylabel("loss −(1−p_y)^γ log p_y")
    ax1.set_ylim(0, 4)
    ax1.set_title("focal loss: easy samples (p_y → 1) stop counting")
    ax1.legend(fontsize=8)
    order = np.argsort(-counts, kind="stable")
    names = list(results)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        rec = np.mean([r["recall"] for r in results[name]], axis=0)[order]
        ax2.bar(np.arange(10) + (i - (len(names) - 1) / 2) * width, rec, width, label=name)
    ax2.set_xticks(range(10), [f"{c}\n(n={counts[c]})" for c in order], fontsize=8)
    ax2.set_xlabel("digit class (training count, last seed)")
    ax2.set_ylabel("test recall (mean over seeds)")
    ax2.set_ylim(0, 1.05)
    ax2.set_title(f"imbalance {RATIO}: recall per class")
    ax2.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    ctx.figure(fig, "imbalance")

    # ---------------------------------------------------------------- figure 2: calibration
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    for e, b in bins.items():
        ok = b.count >= 10  # a bin of a handful of samples says nothing
        ax1.plot(b.confidence[ok], b.accuracy[ok], marker="o", ms=3, label=f"ε = {e}")
    ax1.set_xlabel("confidence (bin mean)")
    ax1.set_ylabel("accuracy in bin")
    ax1.set_title("reliability diagram (test, first seed; bins of ≥ 10 samples)")
    ax1.legend(fontsize=8)
    xs = np.arange(len(epsilons))
    ax2.plot(xs, [mean[e][1] for e in epsilons], marker="o", label="test ECE")
    ax2.plot(xs, [mean[e][3] - mean[e][2] for e in epsilons], marker="s", label="confidence − accuracy")
    ax2.axhline(0, color="k", lw=0.6)
    ax2.axvline(epsilons.index(chosen), color="tab:green", ls=":", label=f"selected on val: ε={chosen}")
    ax2.set_xticks(xs, [str(e) for e in epsilons])
    ax2.set_xlabel("label smoothing ε")
    ax2.set_title("overconfident → calibrated → underconfident")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "calibration")


LAB = Lab(id="2.1", title="Classification losses",
          question="分类任务损失函数（交叉熵损失等）— Classification losses: cross-entropy, BCE-with-logits, label "
                   "smoothing, class weights / class-balanced, focal, hinge, KL (distillation).",
          answer=ANSWER, run=run, uses="losses, metrics")
