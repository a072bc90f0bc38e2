"""2.2 Regression losses: outliers move an MSE fit far more than MAE/Huber fits; pinball loss at τ covers ≈ τ."""
from __future__ import annotations

import math

import numpy as np
import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
With residual e = ŷ − y:

| loss | per sample | gradient ∂/∂ŷ | constant minimizer |
|---|---|---|---|
| MSE (L2) | e² | 2e | mean |
| MAE (L1) | abs(e) | sign(e) | median |
| Huber, δ | ½e² if abs(e) ≤ δ, else δ(abs(e) − ½δ) | e clipped to [−δ, δ] | between mean and median |
| Smooth-L1, β | ½e²/β if abs(e) < β, else abs(e) − ½β | e/β clipped to [−1, 1] | = Huber(δ = β) / β: same minimizer |
| log-cosh | log cosh e | tanh e | between mean and median |
| quantile (pinball), τ | max(τu, (τ − 1)u), u = y − ŷ | −τ if u > 0, 1 − τ if u < 0 | the τ-quantile |

- **MSE** is the Gaussian negative log-likelihood (fixed variance): smooth, strongly convex, the
  right loss when errors are roughly normal, and it predicts the conditional *mean*. Its gradient
  grows with the residual, so a single point 40σ away pulls as hard as 40 typical points: MSE
  is not robust to outliers (breakdown point 0).
- **MAE** is the Laplace likelihood and predicts the conditional *median*. Every point pulls with
  the same force, so a few far outliers barely move the fit; but the gradient does not shrink near
  the optimum (use a decaying learning rate) and is undefined at e = 0.
- **Huber / Smooth-L1** are quadratic for small residuals (efficient, smooth near the optimum) and
  linear for large ones (robust): δ (or β) is the residual size beyond which a point counts as an
  outlier — set it to about 1–2 noise standard deviations of the (standardized) target.
  Smooth-L1 is Huber divided by β (detection box regression uses it); both have the same minimizer.
- **log-cosh** is a smooth Huber-like loss: ≈ ½e² for small e, ≈ abs(e) − log 2 for large e,
  gradient tanh(e), twice differentiable everywhere (nice for second-order methods).
- **Quantile (pinball) loss** weights under-predictions by τ and over-predictions by 1 − τ. Its
  minimizer is the τ-quantile: at the optimum the fraction of targets below the prediction is τ
  (setting the subgradient τ·P(y > ŷ) − (1 − τ)·P(y < ŷ) to 0). Fitting τ = 0.1 and 0.9 gives
  an 80 % prediction interval whose width follows the noise (heteroscedastic data), which MSE's
  single mean prediction cannot give. τ = 0.5 is ½·MAE.

**How the lab measures it.** (1) Identities of the loss functions. (2) Outliers: a line
y = 1.5x + 0.5 + N(0, 0.5²) with 200 points; 10 of them (5 %) get +20 added to the target (40σ).
For each loss a linear model is fitted (full-batch Adam, cosine-decayed, float64) on the clean
and on the contaminated data; the *shift* is the RMS difference of the two fitted lines over
x ∈ [−2, 2]. The MSE fit is checked against least squares, the MAE fit against the exact L1
line (a linear program, whose optimum is a line through two data points: all pairs are tried).
(3) Quantiles: a small MLP with three outputs trained with quantile(τ = [0.1, 0.5, 0.9]) on
y = sin x + (0.1 + 0.25·abs(x))·N(0, 1), x ∈ [−3, 3], 2,000 training points; the empirical
coverage P(y ≤ q̂_τ(x)) on 5,000 held-out points, and the 80 % band's coverage by region of x
against the constant-width band around an MSE fit.
"""

OUTLIERS = 10        # of N_LINE points
N_LINE = 200
SHIFT = 20.0         # added to the outliers' targets (noise sd 0.5: 40σ)
K_ROBUST = 5.0       # the MSE fit must move at least this many times more
TAUS = [0.1, 0.5, 0.9]
COV_TOL = 0.02       # mean coverage over seeds within this of τ
COV_TOL_SEED = 0.04  # every seed's coverage within this of τ
LINE_LOSSES = ["mse", "mae", "huber", "smooth_l1", "log_cosh"]


def _identities(ctx: LabContext) -> None:
    import torch.nn.functional as F

    from goodfit.losses import huber, log_cosh, mae, mse, quantile, smooth_l1

    g = torch.Generator().manual_seed(22)
    pred = torch.randn(500, generator=g, dtype=torch.float64) * 3
    y = torch.randn(500, generator=g, dtype=torch.float64)
    e = pred - y
    ae = e.abs()
    small = torch.linspace(-1e-3, 1e-3, 11, dtype=torch.float64)
    big = torch.tensor([30.0, -40.0, 200.0], dtype=torch.float64)
    zero = torch.zeros_like(big)
    sample = torch.randn(2001, generator=g, dtype=torch.float64).exp()  # skewed: mean ≠ median ≠ quantiles
    rows = [
        ("mse = mean e²", mse(pred, y), (e ** 2).mean()),
        ("mae = mean abs(e)", mae(pred, y), ae.mean()),
        ("huber(δ=1) piecewise", huber(pred, y), torch.where(ae <= 1, 0.5 * e ** 2, ae - 0.5).mean()),
        ("smooth_l1(β=2) = huber(δ=2) / 2", smooth_l1(pred, y, beta=2.0), huber(pred, y, delta=2.0) / 2),
        ("log_cosh = log(cosh e)", log_cosh(pred, y), torch.log(torch.cosh(e)).mean()),
        ("log_cosh(large e) = abs(e) − log 2", log_cosh(big, zero), (big.abs() - math.log(2)).mean()),
        ("log_cosh(tiny e) ≈ ½e² (rel.)", log_cosh(small, torch.zeros_like(small)) / (0.5 * small ** 2).mean(),
         torch.tensor(1.0, dtype=torch.float64)),
        ("quantile(τ=0.5) = ½·mae", quantile(pred, y, tau=0.5), 0.5 * mae(pred, y)),
        ("quantile(τ=0.9) = mean max(τu, (τ−1)u)", quantile(pred, y, tau=0.9),
         torch.maximum(0.9 * (y - pred), -0.1 * (y - pred)).mean()),
        ("quantile(τ list) = mean of the single-τ losses",
         quantile(torch.stack([pred, pred + 1], 1), y, tau=[0.2, 0.7]),
         (quantile(pred, y, tau=0.2) + quantile(pred + 1, y, tau=0.7)) / 2),
        ("huber(δ=1) = torch reference", huber(pred, y), F.huber_loss(pred, y)),
    ]
    table, worst = [], 0.0
    for name, a, b in rows:
        err = float((a - b).abs().max())
        worst = max(worst, err)
        table.append([name, float(a), err])
    tol_rel = 1e-6
    ctx.table("loss identities (float64)", ["identity", "value", "abs error"], table)
    ctx.check(worst < tol_rel, f"every identity holds (max abs error < {tol_rel:g})", f"{worst:.1e}")

    # the constant c minimizing each loss over a sample: mean, median, τ-quantile
    c = torch.linspace(0, 6, 6001, dtype=torch.float64)[:, None]          # a grid, step 0.001
    targets = sample[None, :].expand(len(c), -1)
    best = {name: float(c[fn(c.expand_as(targets), targets, reduction="none").mean(1).argmin()])
            for name, fn in (("mse", mse), ("mae", mae))}
    best["quantile τ=0.9"] = float(c[quantile(c.expand_as(targets), targets, tau=0.9, reduction="none")
                                     .mean(1).argmin()])
    truth = {"mse": float(sample.mean()), "mae": float(sample.median()),
             "quantile τ=0.9": float(torch.quantile(sample, 0.9))}
    ctx.table("the best constant prediction for a skewed sample (grid step 0.001)",
              ["loss", "argmin over c", "statistic", "value"],
              [[k, best[k], s, truth[k]] for k, s in zip(best, ("mean", "median", "0.9-quantile"))])
    ctx.check(all(abs(best[k] - truth[k]) <= 0.0015 for k in best),
              "the constant minimizing MSE is the mean, MAE the median, pinball(τ=0.9) the 0.9-quantile (within the "
              "grid step)")


def _fit_lines(x: torch.Tensor, y: torch.Tensor, losses: dict, steps: int) -> dict[str, torch.Tensor]:
    """For each loss, slope and intercept (B, 2) minimizing it for B independent data sets x, y (B, n).

    One Adam over all (loss, data set) pairs: the objective Σ_loss mean_{B·n}(…) is a sum of independent
    problems, each scaled by 1/B; Adam is elementwise and invariant to that scale, so every line gets
    exactly the updates it would get when fitted alone."""
    theta = torch.zeros(len(losses), x.shape[0], 2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        value = sum(fn(theta[i, :, :1] * x + theta[i, :, 1:], y) for i, fn in enumerate(losses.values()))
        opt.zero_grad()
        value.backward()
        opt.step()
        sched.step()
    return {name: theta[i].detach() for i, name in enumerate(losses)}


def _exact_l1_line(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The least-absolute-deviations line, exactly: an optimum of this linear program lies at a vertex,
    a line through two of the data points, so the best of all n(n−1)/2 such lines is the L1 fit."""
    i, j = torch.triu_indices(len(x), len(x), offset=1)
    slope = (y[j] - y[i]) / (x[j] - x[i])
    intercept = y[i] - slope * x[i]
    cost = (slope[:, None] * x + intercept[:, None] - y).abs().sum(1)
    best = int(cost.argmin())
    return torch.stack([slope[best], intercept[best]])


def _outliers(ctx: LabContext):
    from goodfit.losses import huber, log_cosh, mae, mse, smooth_l1

    fns = {"mse": mse, "mae": mae, "huber": lambda p, t: huber(p, t, delta=1.0),
           "smooth_l1": lambda p, t: smooth_l1(p, t, beta=1.0), "log_cosh": log_cosh}
    seeds = list(range(3 if ctx.quick else 8))
    steps = 1000
    g = torch.Generator().manual_seed(220)
    x = torch.rand(len(seeds), N_LINE, generator=g, dtype=torch.float64) * 4 - 2
    y = 1.5 * x + 0.5 + 0.5 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    dirty = y.clone()
    rows_out = [torch.randperm(N_LINE, generator=g)[:OUTLIERS] for _ in seeds]
    for i, idx in enumerate(rows_out):
        dirty[i, idx] += SHIFT
    grid = torch.linspace(-2, 2, 101, dtype=torch.float64)
    fits, shift = {}, {}
    for name, both in _fit_lines(torch.cat([x, x]), torch.cat([y, dirty]), fns, steps).items():
        clean, contaminated = both[:len(seeds)], both[len(seeds):]
        fits[name] = (clean, contaminated)
        diff = (contaminated[:, :1] - clean[:, :1]) * grid + (contaminated[:, 1:] - clean[:, 1:])
        shift[name] = diff.pow(2).mean(1).sqrt().numpy()   # per seed
    # references: least squares and the exact L1 (linear programming) fit
    design = torch.stack([x[0], torch.ones_like(x[0])], 1)
    lstsq = torch.linalg.lstsq(design, dirty[0][:, None]).solution.squeeze(1)
    err_ls = float((fits["mse"][1][0] - lstsq).abs().max())
    err_lp = float((fits["mae"][1][0] - _exact_l1_line(x[0], dirty[0])).abs().max())
    ctx.measure("MSE fit (Adam) vs least squares: max abs parameter difference", err_ls)
    ctx.measure("MAE fit (Adam) vs exact L1 line (best line through two points): max abs parameter difference",
                err_lp)
    ctx.check(err_ls < 1e-6 and err_lp < 1e-3, "the gradient fits reach the exact optima: MSE = least squares "
                                               "(< 1e-6), MAE = the exact L1 line (< 1e-3)", f"{err_ls:.1e}, {err_lp:.1e}")

    rows = []
    for name in fns:
        clean, contaminated = fits[name]
        rows.append([name, float(shift[name].mean()), float(shift[name].std(ddof=1)),
                     float(contaminated[:, 0].mean()), float(contaminated[:, 1].mean()),
                     float(shift["mse"].mean() / shift[name].mean())])
    ctx.table(f"{OUTLIERS} of {N_LINE} targets shifted by +{SHIFT:g} (true line: slope 1.5, intercept 0.5); "
              "shift = RMS of (contaminated fit − clean fit) over x ∈ [−2, 2], mean and sd over "
              f"{len(seeds)} independent data sets",
              ["loss", "shift", "sd", "slope (contaminated)", "intercept (contaminated)", "MSE shift / shift"], rows)
    ctx.measure("MSE: expected intercept shift ≈ fraction × shift", OUTLIERS / N_LINE * SHIFT)
    for name in ("mae", "huber"):
        ratio = float(shift["mse"].mean() / shift[name].mean())
        ctx.measure(f"shift ratio MSE / {name}", ratio)
        ctx.check(ratio >= K_ROBUST and (shift["mse"] > shift[name]).all(),
                  f"the MSE fit moves ≥ {K_ROBUST:g}× more than the {name} fit (mean over data sets), and more in "
                  "every one",
                  f"{shift['mse'].mean():.3f} vs {shift[name].mean():.3f}: {ratio:.1f}×")
    return x[0], dirty[0], rows_out[0], {k: v[1][0] for k, v in fits.items()}, fits["mse"][0][0]


def _quantiles(ctx: LabContext):
    from goodfit.losses import mse, quantile

    torch.set_num_threads(1)
    seeds = list(range(2 if ctx.quick else 5))
    n_train, n_test, steps = 2000, 5000, (1000 if ctx.quick else 1500)

    def sample(g, n):
        x = torch.rand(n, 1, generator=g) * 6 - 3
        return x, torch.sin(x[:, 0]) + (0.1 + 0.25 * x[:, 0].abs()) * torch.randn(n, generator=g)

    def mlp(out):
        return torch.nn.Sequential(torch.nn.Linear(1, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                   torch.nn.Linear(64, out))

    def train(model, x, y, loss, g):
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for _ in range(steps):
            idx = torch.randint(0, len(y), (128,), generator=g)
            value = loss(model(x[idx]), y[idx])
            opt.zero_grad()
            value.backward()
            opt.step()
            sched.step()
        return model

    region_edges = [0, 1, 2, 3]  # |x| regions: small noise near 0, large at the ends
    cover, band_q, band_c = [], [], []
    keep = None
    for seed in seeds:
        g = torch.Generator().manual_seed(2200 + seed)
        xtr, ytr = sample(g, n_train)
        xte, yte = sample(g, n_test)
        torch.manual_seed(seed)
        q_model = train(mlp(3), xtr, ytr, lambda p, t: quantile(p, t, tau=TAUS), g)
        torch.manual_seed(seed)
        m_model = train(mlp(1), xtr, ytr, mse, g)
        with torch.no_grad():
            q = q_model(xte)
            mean_te = m_model(xte)[:, 0]
            resid_sd = float((m_model(xtr)[:, 0] - ytr).std())
        cover.append((yte[:, None] <= q).float().mean(0).numpy())
        z = 1.2815515655446004  # Φ⁻¹(0.9): the constant-width Gaussian 80 % band around the MSE fit
        in_q = ((yte >= q[:, 0]) & (yte <= q[:, 2])).float()
        in_c = ((yte - mean_te).abs() <= z * resid_sd).float()
        ax = xte[:, 0].abs()
        band_q.append([float(in_q[(ax >= a) & (ax < b)].mean()) for a, b in zip(region_edges, region_edges[1:])])
        band_c.append([float(in_c[(ax >= a) & (ax < b)].mean()) for a, b in zip(region_edges, region_edges[1:])])
        if keep is None:
            keep = (xtr, ytr, q_model, m_model, resid_sd)
    cover = np.array(cover)
    mean_cov = cover.mean(0)
    ctx.table(f"empirical coverage P(y ≤ q̂_τ(x)) on {n_test} held-out points ({n_train} training points per seed)",
              ["τ", *[f"seed {s}" for s in seeds], "mean", "mean − τ"],
              [[t, *cover[:, i].tolist(), float(mean_cov[i]), float(mean_cov[i] - t)] for i, t in enumerate(TAUS)])
    worst_mean = float(np.abs(mean_cov - TAUS).max())
    worst_seed = float(np.abs(cover - TAUS).max())
    ctx.measure("max abs(mean coverage − τ)", worst_mean)
    ctx.measure("max abs(coverage − τ), any seed", worst_seed)
    ctx.check(worst_mean <= COV_TOL and worst_seed <= COV_TOL_SEED,
              f"quantile loss at τ gives ≈ τ coverage: mean over seeds within {COV_TOL}, every seed within "
              f"{COV_TOL_SEED}, for τ = {TAUS}", f"{worst_mean:.3f} / {worst_seed:.3f}")
    bq, bc = np.array(band_q).mean(0), np.array(band_c).mean(0)
    regions = [f"{a} ≤ abs(x) < {b}" for a, b in zip(region_edges, region_edges[1:])]
    ctx.table("coverage of the 80 % band by region (mean over seeds): quantile band [q̂_0.1, q̂_0.9] vs MSE fit ± "
              "1.28·(residual sd)", ["region", "quantile band", "constant band"],
              [[r, float(a), float(b)] for r, a, b in zip(regions, bq, bc)])
    off_q, off_c = float(np.abs(bq - 0.8).max()), float(np.abs(bc - 0.8).max())
    ctx.check(off_q < 0.05 and off_c > 2 * off_q,
              "the quantile band adapts to the changing noise: every region's coverage within 0.05 of 0.8, while the "
              "constant-width band misses by more than twice as much in some region",
              f"worst region: {off_q:.3f} vs {off_c:.3f}")
    return keep


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    _identities(ctx)
    x, dirty, out_idx, fits, clean_mse = _outliers(ctx)
    xtr, ytr, q_model, m_model, resid_sd = _quantiles(ctx)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    mask = torch.zeros(len(x), dtype=torch.bool)
    mask[out_idx] = True
    ax1.scatter(x[~mask], dirty[~mask], s=8, color="0.6", label="data")
    top = 7.5  # the outliers sit near y = 20: drawn at the top edge so the lines stay readable
    ax1.scatter(x[mask], torch.full((int(mask.sum()),), top), s=30, color="tab:red", marker="^",
                label=f"outliers (y + {SHIFT:g}, drawn at the top)")
    grid = torch.linspace(-2, 2, 50, dtype=torch.float64)
    ax1.plot(grid, 1.5 * grid + 0.5, "k--", lw=1, label="true line")
    for name, th in fits.items():
        ax1.plot(grid, th[0] * grid + th[1], lw=1.5, label=name)
    ax1.set_ylim(-4, 8)
    ax1.set_xlabel("x")
    ax1.set_ylabel("y")
    ax1.set_title("fits on the contaminated data (first seed)")
    ax1.legend(fontsize=7, ncol=2)
    xs = torch.linspace(-3, 3, 200)[:, None]
    with torch.no_grad():
        q = q_model(xs).numpy()
        m = m_model(xs)[:, 0].numpy()
    ax2.scatter(xtr[:, 0], ytr, s=3, color="0.7", label="training data")
    for i, t in enumerate(TAUS):
        ax2.plot(xs[:, 0], q[:, i], lw=1.8, label=f"q̂ τ={t}")
    ax2.plot(xs[:, 0], m + 1.2816 * resid_sd, "k:", lw=1, label="MSE fit ± 1.28 sd")
    ax2.plot(xs[:, 0], m - 1.2816 * resid_sd, "k:", lw=1)
    ax2.set_xlabel("x")
    ax2.set_title("quantile regression: the band follows the noise")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    ctx.figure(fig, "regression_losses")


LAB = Lab(id="2.2", title="Regression losses",
          question="回归任务损失函数（MSE、MAE 等）— Regression losses: MSE, MAE, Huber/Smooth-L1, log-cosh, quantile.",
          answer=ANSWER, run=run, uses="losses")
