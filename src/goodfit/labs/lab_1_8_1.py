"""1.8.1 What the learning rate means: gradient descent on quadratics converges iff lr < 2/λmax."""
from __future__ import annotations

import math

import numpy as np
import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
Gradient descent moves the parameters **against the gradient**, w ← w − η ∇f(w). The gradient fixes
the *direction* (steepest descent for a plain step); the learning rate η only sets the *length* of
the step, ‖Δw‖ = η ‖∇f‖. So η is not a dimensionless knob: ∇f has units of f per unit of w, and η
converts it into a displacement in w. What counts as "large" is decided by the **curvature** of f.

Near a minimum every smooth loss is a quadratic, f(w) ≈ ½ (w − w*)ᵀ A (w − w*), with A the Hessian
(eigenvalues λ₁ ≥ … ≥ λ_d > 0, eigenvectors u_i). One step is then linear, w − w* ← (I − ηA)(w − w*),
and in the eigenbasis each coordinate evolves on its own:

  c_i ← (1 − η λ_i) c_i,  so  c_i(k) = (1 − η λ_i)^k c_i(0).

- η < 1/λ_i: the coordinate shrinks monotonically (too small an η: slow, |1 − ηλ_i| ≈ 1);
- 1/λ_i < η < 2/λ_i: it flips sign every step but still shrinks (the zig-zag across a valley);
- η > 2/λ_i: |1 − ηλ_i| > 1, it grows geometrically: **divergence**.

Hence **GD converges iff η < 2/λmax**, and the error contracts per step by the factor
ρ(η) = max_i |1 − ηλ_i|. The best constant step balances the steepest and the flattest direction,
η* = 2/(λmax + λmin), giving ρ* = (κ − 1)/(κ + 1) with κ = λmax/λmin: a large condition number makes
GD slow however η is chosen, because the LR the steep direction allows is tiny for the flat one. This
is the physical meaning of the LR: a step size measured in units of 1/curvature (halving the loss's
scale doubles the usable LR), bounded by the sharpest direction, and what adaptive optimizers,
preconditioning, warmup and normalization all try to manage.

The lab runs gradient descent on quadratics with different spectra (a 2-D valley, uniform and
log-spaced spectra, one outlier eigenvalue, and the least-squares loss of the diabetes data, whose
Hessian is XᵀX/n), each from random rotations and starting points, at η = 0.9, 0.99, 1.01 and 1.1 ×
2/λmax, and checks the predicted contraction factor against the measured one.
"""

CRITICAL_FACTORS = (0.9, 0.99, 1.01, 1.1)
CONVERGED = 1e-8      # f(w_N) / f(w_0) at most this: converged
DIVERGED = 1e8        # f(w_N) / f(w_0) above this (or non-finite): diverged
RATE_TOL = 0.01       # relative error allowed between measured and predicted contraction factors


def spectra(quick: bool) -> dict[str, np.ndarray]:
    """Named eigenvalue sets of the Hessian A."""
    from sklearn.datasets import load_diabetes

    x = load_diabetes().data
    x = (x - x.mean(0)) / x.std(0)
    out = {
        "2-D valley λ = (1, 10)": np.array([1.0, 10.0]),
        "10-D uniform 1…100": np.linspace(1.0, 100.0, 10),
        "30-D log-spaced 0.01…1": np.logspace(-2, 0, 30),
        "20-D one outlier (19 × 1, 50)": np.r_[np.ones(19), 50.0],
        "diabetes least squares XᵀX/n": np.linalg.eigvalsh(x.T @ x / len(x)),
    }
    if quick:
        out.pop("30-D log-spaced 0.01…1")
    return out


def rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    """A random orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def gd(a: np.ndarray, w0: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """f(w_k)/f(w_0) for k = 0…steps of w ← w − lr·A w (rows of w0 are independent starts); stops once diverged."""
    w = w0.copy()
    f0 = 0.5 * np.einsum("nd,de,ne->n", w, a, w)
    ratios = [np.ones(len(w))]
    for _ in range(steps):
        w = w - lr * w @ a
        f = 0.5 * np.einsum("nd,de,ne->n", w, a, w)
        ratios.append(f / f0)
        if np.all(ratios[-1] > DIVERGED):
            break
    return np.array(ratios)


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    torch.set_num_threads(1)
    seeds = 2 if ctx.quick else 5
    starts = 4
    rows, ok_conv, ok_div, rate_err = [], True, True, 0.0
    for name, lam in spectra(ctx.quick).items():
        kappa = lam.max() / lam.min()
        steps = int(min(20_000, 10 * kappa + 1000))  # the slowest mode (λmin) and the near-critical one (λmax)
        lr_c = 2.0 / lam.max()
        finals = {c: [] for c in CRITICAL_FACTORS}
        first = {c: 0 for c in CRITICAL_FACTORS if c > 1}
        for seed in range(seeds):
            rng = np.random.default_rng([181, seed, len(lam)])
            q = rotation(len(lam), rng)
            a = (q * lam) @ q.T
            w0 = rng.standard_normal((starts, len(lam)))
            for c in CRITICAL_FACTORS:
                r = gd(a, w0, c * lr_c, steps)
                finals[c].append(r[-1])
                if c > 1:  # the step by which every start passed the divergence threshold
                    passed = np.all(~np.isfinite(r) | (r > DIVERGED), axis=1)
                    first[c] = max(first[c], int(np.argmax(passed)) if passed.any() else steps + 1)
            # contraction factor: predicted max|1 − ηλ| against the measured decay of f over the last steps
            lr = 0.5 * lr_c
            r = gd(a, w0, lr, 400)
            measured = float(np.median((r[-1] / r[-101]) ** (1 / 200)))  # f ∝ ρ^(2k) once the slowest mode dominates
            predicted = float(np.max(np.abs(1 - lr * lam)))
            rate_err = max(rate_err, abs(measured / predicted - 1))
        f = {c: np.concatenate(v) for c, v in finals.items()}
        conv = all(np.all(f[c] <= CONVERGED) for c in (0.9, 0.99))
        div = all(np.all(~np.isfinite(f[c]) | (f[c] > DIVERGED)) for c in (1.01, 1.1))
        ok_conv &= conv
        ok_div &= div
        rows.append([name, len(lam), f"{kappa:.3g}", f"{lr_c:.4g}", steps,
                     *[f"{np.max(f[c]):.1e}" for c in CRITICAL_FACTORS if c < 1],
                     *[f"> {DIVERGED:g} by step {first[c]}" for c in CRITICAL_FACTORS if c > 1]])
    ctx.table(f"GD on f(w) = ½wᵀAw, {seeds} random rotations × {starts} random starts per spectrum: below "
              f"2/λmax the largest f(w_N)/f(w_0), above it the step by which every run passed f/f₀ > {DIVERGED:g}",
              ["spectrum", "d", "κ", "2/λmax", "steps N", *[f"η = {c:g}·2/λmax" for c in CRITICAL_FACTORS]], rows)
    ctx.check(ok_conv, f"every spectrum, rotation and start converges at η = 0.9 and 0.99 × 2/λmax "
                       f"(f(w_N)/f(w_0) ≤ {CONVERGED:g})")
    ctx.check(ok_div, f"every spectrum, rotation and start diverges at η = 1.01 and 1.1 × 2/λmax "
                      f"(f(w_N)/f(w_0) > {DIVERGED:g} or non-finite)")
    ctx.measure("max relative error, measured vs predicted contraction max|1 − ηλ| (η = 1/λmax)", rate_err)
    ctx.check(rate_err < RATE_TOL, f"the per-step contraction of the error equals max_i |1 − ηλ_i| "
                                   f"(within {RATE_TOL:.0%}, all spectra and seeds)", f"{rate_err:.2e}")

    # ------------------------------------------------------------ the contraction factor over η: sweep and optimum
    lam = np.linspace(1.0, 4.0, 10)  # κ = 4: the optimum sits well inside (0, 2/λmax)
    rng = np.random.default_rng(1810)
    q = rotation(len(lam), rng)
    a = (q * lam) @ q.T
    w0 = rng.standard_normal((8, len(lam)))
    factors = np.linspace(0.05, 1.15, 23 if ctx.quick else 45)
    measured = []
    for c in factors:
        r = gd(a, w0, c * 2 / lam.max(), 150)
        measured.append(float(np.median(r[-1] ** (1 / (2 * (len(r) - 1))))))
    measured = np.array(measured)
    theory = np.array([np.max(np.abs(1 - c * 2 / lam.max() * lam)) for c in factors])
    best = factors[int(np.argmin(measured))]
    eta_star = (2 / (lam.max() + lam.min())) / (2 / lam.max())
    ctx.measure("10-D spectrum 1…4: fastest η in the sweep / (2/λmax)", float(best))
    ctx.measure("predicted optimum η* = 2/(λmax + λmin), in units of 2/λmax", float(eta_star))
    ctx.check(abs(best - eta_star) <= factors[1] - factors[0] + 1e-12,
              "the fastest constant LR in the sweep is η* = 2/(λmax + λmin) (within one grid step)",
              f"{best:.3f} vs {eta_star:.3f}")

    # ------------------------------------------------------------ 2-D trajectories, with torch's SGD
    lam2 = np.array([1.0, 10.0])
    angle = math.radians(30)
    q2 = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    a2 = (q2 * lam2) @ q2.T
    start = np.array([-3.0, 1.0])
    lr_c2 = 2 / lam2.max()
    paths, flips, gaps = {}, {}, []
    for label, c in (("small η = 0.2·2/λmax", 0.2), ("near-critical η = 0.95·2/λmax", 0.95),
                     ("too large η = 1.05·2/λmax", 1.05)):
        w = torch.tensor(start, dtype=torch.float64, requires_grad=True)
        sgd = torch.optim.SGD([w], lr=c * lr_c2)
        at = torch.tensor(a2)
        path = [w.detach().clone().numpy()]
        for _ in range(40):
            sgd.zero_grad()
            (0.5 * w @ at @ w).backward()
            sgd.step()
            path.append(w.detach().clone().numpy())
        path = np.array(path)
        closed = np.array([np.linalg.matrix_power(np.eye(2) - c * lr_c2 * a2, k) @ start for k in range(41)])
        gaps.append(float(np.max(np.abs(path - closed) / (1 + np.abs(closed)))))
        coords = path @ q2  # eigen-coordinates (steep axis λ = 10 is column 1)
        flips[label] = (int(np.sum(np.diff(np.sign(coords[:, 1])) != 0)), int(np.sum(np.diff(np.sign(coords[:, 0])) != 0)))
        paths[label] = path
    ctx.check(max(gaps) < 1e-9, "torch.optim.SGD on the 2-D quadratic follows the closed form w_k = (I − ηA)^k w_0 "
                                "(relative error < 1e-9)", f"{max(gaps):.1e}")
    near = flips["near-critical η = 0.95·2/λmax"]
    small = flips["small η = 0.2·2/λmax"]
    ctx.measure("sign flips in 40 steps along the steep / flat eigen-direction: η = 0.2·2/λmax", f"{small[0]} / {small[1]}")
    ctx.measure("sign flips in 40 steps along the steep / flat eigen-direction: η = 0.95·2/λmax", f"{near[0]} / {near[1]}")
    ctx.check(near[0] == 40 and near[1] == 0 and small == (0, 0),
              "1/λ < η < 2/λ makes that coordinate flip sign every step (zig-zag across the valley) while the flat "
              "one and a small η move monotonically")

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.8))
    g = np.linspace(-6, 6, 241)
    xx, yy = np.meshgrid(g, g)
    pts = np.stack([xx, yy], -1)
    zz = 0.5 * np.einsum("...i,ij,...j->...", pts, a2, pts)
    ax1.contour(xx, yy, zz, levels=np.geomspace(0.05, 200, 14), colors="0.75", linewidths=0.7)
    colors = ["tab:green", "tab:orange", "tab:red"]
    for (label, path), col in zip(paths.items(), colors):
        shown = path[np.all(np.abs(path) < 6, axis=1).cumprod().astype(bool)]
        ax1.plot(shown[:, 0], shown[:, 1], "o-", ms=2.5, lw=1, color=col, label=label)
        k = np.arange(len(path))
        fk = 0.5 * np.einsum("ki,ij,kj->k", path, a2, path)
        ax2.semilogy(k, fk / fk[0], color=col, label=label)
    ax1.plot(*start, "ks")
    ax1.set_xlim(-6, 6)
    ax1.set_ylim(-6, 6)
    ax1.set_aspect("equal")
    ax1.set_title("GD on ½wᵀAw, λ = (1, 10): paths")
    ax1.legend(fontsize=7, loc="lower right")
    ax2.set_xlabel("step k")
    ax2.set_ylabel("f(w_k) / f(w_0)")
    ax2.set_title("loss: slow, fast-but-zig-zag, divergent")
    ax2.legend(fontsize=7)
    ax3.plot(factors, measured, "o", ms=3, label="measured (median of 8 starts)")
    ax3.plot(factors, theory, "-", color="k", lw=1, label="max|1 − ηλ_i|")
    ax3.axvline(1.0, color="tab:red", ls=":", label="η = 2/λmax")
    ax3.axvline(eta_star, color="tab:green", ls=":", label="η* = 2/(λmax + λmin)")
    ax3.axhline(1.0, color="0.6", lw=0.7)
    ax3.set_xlabel("η / (2/λmax)")
    ax3.set_ylabel("per-step contraction of ‖w − w*‖_A")
    ax3.set_title("10-D spectrum 1…4: rate vs LR")
    ax3.legend(fontsize=7)
    ctx.figure(fig, "lr_on_quadratics")


LAB = Lab(id="1.8.1", title="What the learning rate means",
          question="学习率的核心物理意义是什么？它在梯度下降过程中如何影响模型参数的更新方向和步长？ — What the LR means "
                   "physically; effect on direction and step.",
          answer=ANSWER, run=run, uses="optim")
