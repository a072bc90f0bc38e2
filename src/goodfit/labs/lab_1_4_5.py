"""1.4.5 Weight decay vs L2: equal under SGD, different under Adam (AdamW); norms and biases excluded."""
from __future__ import annotations

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
**L2 regularization** adds a penalty to the loss, L̃(w) = L(w) + (λ/2)‖w‖², whose gradient is
∇L + λw. **Weight decay** shrinks the weights directly in the update: w ← w − η·(update) − ηλ·w.

- **SGD (with or without momentum)**: the L2 gradient term λw enters the update exactly as decay
  does: w ← w − η(∇L + λw) = (1 − ηλ)w − η∇L. The two are *the same algorithm*; torch's
  `SGD(weight_decay=λ)` is literally L2. (With momentum the λw term also goes through the momentum
  buffer in both.)
- **Adaptive optimizers (Adam, RMSprop, Adagrad)**: the L2 gradient λw is divided by √v̂ like every
  other gradient, so weights with large gradient history are decayed *less*, and when the penalty
  dominates, Adam's normalization cancels λ altogether (each weight then moves by ≈ η per step
  whatever λ is). **AdamW** (Loshchilov & Hutter 2019) *decouples* the decay:
  w ← w − η·m̂/(√v̂ + ε) − ηλ·w, so every weight shrinks by the same factor (1 − ηλ) per step, as
  intended. Adam + L2 ≠ AdamW; torch's `Adam(weight_decay=λ)` is the L2 (coupled) form.

**Practical cautions**
- Use AdamW (decoupled) with Adam; λ for AdamW is typically 0.01–0.1, much larger than an L2
  coefficient, because it is multiplied by η: the per-step shrink is ηλ. Changing η (or the schedule)
  changes the effective decay; some libraries scale λ with η, torch's AdamW does (decay = η·λ).
- **Exclude biases and normalization parameters** (BN/LN γ, β) from decay: biases are few and do
  not cause overfitting, and shrinking γ, β pulls every normalized unit toward a fixed scale and
  offset the data may not want. goodfit's optimizer factory does this by default
  (`optimizer.decay_norm_and_bias: false`); embeddings are often excluded too.
- For weights followed by BatchNorm the function is invariant to their scale, so decay does not
  constrain the function at all: it keeps ‖w‖ small, which *raises the effective learning rate*
  (the gradient scales as 1/‖w‖). It still matters, through that effect on the dynamics.
- Decay and L2 are not free with other knobs: with a cosine/step schedule the effective decay
  changes over training; with larger batches (fewer steps) the total decay per epoch falls.
- Tune λ on validation data (log scale), jointly with η.

**The lab** trains a small CNN (with BatchNorm) on digits in float64 with identical batches:
SGD with `weight_decay` against SGD with goodfit's L2 penalty in the loss; Adam + L2 against AdamW
and against Adam followed by an explicit decay step; then the pure-penalty case that shows Adam
normalizing λ away; and the optimizer factory's parameter groups.
"""

LAM, STEPS = 1e-2, 30


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    import torch
    import torch.nn.functional as F

    from goodfit.data import TensorLoader, load_data
    from goodfit.models import build_model
    from goodfit.nn.penalty import WeightPenalty
    from goodfit.optim import param_groups
    from goodfit.recipe import Model, load_recipe

    torch.set_num_threads(1)
    steps = 15 if ctx.quick else STEPS
    recipe = load_recipe("digits-cnn")
    data = load_data(recipe.data, recipe.task, 0)
    loader = TensorLoader(data.x_train, data.y_train, 64, seed=0)
    batches = [(x.double(), y) for epoch in range(2) for x, y in loader.epoch(epoch)][:steps]
    cfg = Model(name="cnn", width=8, depth=2, norm="batch", dropout=0.0, init="he")
    torch.manual_seed(0)
    start = build_model(cfg, data.input_shape, data.num_outputs).double()

    def fresh():
        model = build_model(cfg, data.input_shape, data.num_outputs).double()
        model.load_state_dict(start.state_dict())
        return model

    def train(make_opt, l2=0.0, decay_step=None):
        """Train a copy of `start` on the fixed batches; returns (model, flat weights after each step)."""
        model = fresh()
        groups = param_groups(model, 0.0)  # decayed weights in group 0, biases/norm in group 1
        opt = make_opt(model)
        penalty = WeightPenalty(groups[0]["params"], l2=l2) if l2 else None
        path = []
        for x, y in batches:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            if penalty is not None:
                loss = loss + penalty()
            loss.backward()
            if decay_step is not None:
                decay_step(groups[0]["params"])
            opt.step()
            path.append(torch.cat([p.detach().flatten() for p in model.parameters()]).clone())
        return model, path

    def groups_of(model, wd):
        return param_groups(model, wd)

    lr_sgd, lr_adam = 0.05, 1e-3
    # ---------------------------------------------------------------- SGD: decay == L2
    _, sgd_wd = train(lambda m: torch.optim.SGD(groups_of(m, LAM), lr=lr_sgd, momentum=0.9))
    _, sgd_l2 = train(lambda m: torch.optim.SGD(groups_of(m, 0.0), lr=lr_sgd, momentum=0.9), l2=LAM)
    _, sgd_none = train(lambda m: torch.optim.SGD(groups_of(m, 0.0), lr=lr_sgd, momentum=0.9))
    d_sgd = (sgd_wd[-1] - sgd_l2[-1]).abs().max().item()
    effect_sgd = (sgd_wd[-1] - sgd_none[-1]).abs().max().item()
    ctx.measure(f"SGD+momentum, {steps} steps: max |w_decay − w_L2| (float64)", d_sgd)
    ctx.measure("… for scale: max |w_decay − w_no-decay|", effect_sgd)
    ctx.check(d_sgd < 1e-10 * max(effect_sgd, 1.0) and effect_sgd > 1e-4,
              f"SGD: weight_decay={LAM} and L2 (λ/2)‖w‖² in the loss give identical weights (allclose to 1e-10 "
              "in float64), while the decay itself does change them", f"{d_sgd:.2e} vs effect {effect_sgd:.2e}")

    # ---------------------------------------------------------------- Adam: L2 != AdamW
    _, adam_coupled = train(lambda m: torch.optim.Adam(groups_of(m, LAM), lr=lr_adam))
    _, adam_l2 = train(lambda m: torch.optim.Adam(groups_of(m, 0.0), lr=lr_adam), l2=LAM)
    _, adamw = train(lambda m: torch.optim.AdamW(groups_of(m, LAM), lr=lr_adam))

    def shrink(params):
        with torch.no_grad():
            for p in params:
                p.mul_(1 - lr_adam * LAM)

    _, adam_then_decay = train(lambda m: torch.optim.Adam(groups_of(m, 0.0), lr=lr_adam), decay_step=shrink)
    _, adam_none = train(lambda m: torch.optim.Adam(groups_of(m, 0.0), lr=lr_adam))
    d_coupled = (adam_coupled[-1] - adam_l2[-1]).abs().max().item()
    d_w = (adamw[-1] - adam_then_decay[-1]).abs().max().item()
    moved = (adamw[-1] - adam_none[-1]).norm().item()
    d_l2_w = (adam_l2[-1] - adamw[-1]).norm().item()
    ctx.measure("torch Adam(weight_decay=λ) vs Adam + L2 penalty: max |Δw|", d_coupled)
    ctx.measure("AdamW vs Adam followed by w ← (1 − ηλ)w: max |Δw|", d_w)
    ctx.measure("‖w_Adam+L2 − w_AdamW‖ / ‖w_AdamW − w_Adam‖ (difference relative to the decay's own effect)",
                d_l2_w / moved)
    ctx.check(d_coupled < 1e-10, "torch's Adam(weight_decay) is L2: identical to Adam with (λ/2)‖w‖² in the loss",
              f"{d_coupled:.2e}")
    ctx.check(d_w < 1e-10, "AdamW is Adam plus a decoupled shrink w ← (1 − ηλ)·w of the decayed weights "
                           "(identical to 1e-10)", f"{d_w:.2e}")
    ctx.check(d_l2_w > 10 * moved, "with Adam the two differ: Adam + L2 lands farther from AdamW than 10× the "
                                   "distance AdamW's decay moves the weights (L2's λw is rescaled by 1/√v̂)",
              f"{d_l2_w / moved:.1f}×")

    # ---------------------------------------------------------------- Adam normalizes λ away
    lams = [1e-4, 1e-2, 1.0]
    norm_l2, norm_w = {}, {}
    for lam in lams:
        for name, opt_cls, wd, l2 in (("l2", torch.optim.Adam, 0.0, lam), ("w", torch.optim.AdamW, lam, 0.0)):
            w = torch.full((1000,), 1.0, dtype=torch.float64).mul_(torch.linspace(0.5, 1.5, 1000, dtype=torch.float64))
            w.requires_grad_(True)
            opt = opt_cls([w], lr=lr_adam, weight_decay=wd)
            for _ in range(200):  # the penalty alone: no data gradient
                opt.zero_grad()
                (0.5 * l2 * w.pow(2).sum() if l2 else 0.0 * w.sum()).backward()
                opt.step()
            (norm_l2 if name == "l2" else norm_w)[lam] = w.detach().mean().item()
    ctx.table("penalty alone for 200 steps (η = 1e-3, weights start at mean 1.0): mean weight afterwards",
              ["λ", "Adam + L2", "AdamW", "AdamW theory (1 − ηλ)^200"],
              [[lam, norm_l2[lam], norm_w[lam], (1 - lr_adam * lam) ** 200] for lam in lams])
    spread_l2 = max(norm_l2.values()) - min(norm_l2.values())
    ctx.check(spread_l2 < 1e-3 and abs(norm_l2[1.0] - (1 - 200 * lr_adam)) < 0.01
              and all(abs(norm_w[lam] - (1 - lr_adam * lam) ** 200) < 1e-9 for lam in lams),
              "Adam normalizes the L2 strength away: with the penalty alone every λ from 1e-4 to 1 moves each weight "
              "by ≈ η per step (same result to 1e-3), while AdamW shrinks by exactly (1 − ηλ) per step",
              f"Adam+L2 spread {spread_l2:.1e}")

    # ---------------------------------------------------------------- norm and bias parameters
    model = fresh()
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = [names[id(p)] for p in groups[1]["params"]]
    exempt_kinds = all(n.endswith("bias") or isinstance(model.get_submodule(n.rsplit(".", 1)[0]),
                                                         (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d))
                       for n in no_decay)
    ctx.log("not decayed: " + ", ".join(no_decay))
    opt = torch.optim.AdamW(groups, lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(10):  # zero data gradient: only the decay acts
        opt.zero_grad()
        (0.0 * model(batches[0][0]).sum()).backward()
        opt.step()
    after = dict(model.named_parameters())
    decayed_ok = all(torch.allclose(after[n], before[n] * (1 - 0.1 * 0.05) ** 10) for n in before if n not in no_decay)
    kept = all(torch.equal(after[n], before[n]) for n in no_decay)
    ctx.check(groups[1]["weight_decay"] == 0.0 and len(no_decay) > 0 and exempt_kinds and decayed_ok and kept,
              "goodfit's parameter groups exclude every bias and normalization γ/β from decay: after 10 AdamW steps "
              "with no data gradient, decayed weights shrank by (1 − ηλ)^10 exactly and the others did not move",
              f"{len(no_decay)} exempt tensors")
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    x = batches[0][0]
    model.train()
    with torch.no_grad():
        out1 = model(x)
        conv.weight.mul_(0.5)
        out2 = model(x)
    rel = ((out1 - out2).abs().max() / out1.abs().max()).item()
    ctx.check(rel < 1e-3,
              "a weight followed by BatchNorm is scale-invariant (halving it changes the output by < 0.1%, only "
              "through BN's ε), so decay on it changes the effective learning rate, not the function", f"{rel:.1e}")

    # ---------------------------------------------------------------- figure
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.3))
    t = np.arange(1, steps + 1)
    for label, path, ref in (("SGD: decay − L2", sgd_wd, sgd_l2), ("Adam: torch wd − L2", adam_coupled, adam_l2),
                             ("AdamW − (Adam + explicit decay)", adamw, adam_then_decay),
                             ("AdamW − (Adam + L2)", adamw, adam_l2)):
        diff = [max((a - b).abs().max().item(), 1e-18) for a, b in zip(path, ref)]
        ax1.semilogy(t, diff, marker="o", ms=3, label=label)
    ax1.set_xlabel("step")
    ax1.set_ylabel("max |Δw| (float64)")
    ax1.set_title("same algorithm (≈1e-16) or not")
    ax1.legend(fontsize=8)
    ax2.semilogx(lams, [norm_l2[lam] for lam in lams], "o-", label="Adam + L2")
    ax2.semilogx(lams, [norm_w[lam] for lam in lams], "s-", label="AdamW")
    ax2.set_xlabel("λ")
    ax2.set_ylabel("mean weight after 200 penalty-only steps")
    ax2.set_title("Adam + L2 ignores λ; AdamW follows it")
    ax2.legend()
    fig.tight_layout()
    ctx.figure(fig, "decay_vs_l2")


LAB = Lab(id="1.4.5", title="Weight decay vs L2 regularization",
          question="权重衰减（Weight Decay）和L2正则化的关系是什么？在实际使用中需要注意什么？ — Weight decay vs L2; practical "
                   "cautions.",
          answer=ANSWER, run=run, uses="optimizers, param groups")
