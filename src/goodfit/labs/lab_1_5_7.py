"""1.5.7 Where normalization goes: before vs after the activation; pre- vs post-norm residual blocks at high LR."""
from __future__ import annotations

import math

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
**Inside a layer: before or after the activation.** The original BatchNorm paper normalizes the
pre-activation, conv/linear → norm → activation, so that the nonlinearity sees a controlled
distribution (and a bias before BN is redundant: BN's mean subtraction cancels it). The other
order, conv → activation → norm, hands the *next* layer zero-mean, unit-variance inputs (a ReLU's
output is neither), and is often as good or better in practice. For BatchNorm the difference is
usually small; for per-sample norms (LayerNorm/GroupNorm over channels and positions) the order
matters more, because LN before a ReLU normalizes across all units of the sample and then cuts half
of them. There is no universal winner: treat it as a hyperparameter, keep it consistent.

**Around a residual block: pre-norm vs post-norm.**
- *Post-norm* (original ResNet, original Transformer "post-LN"): x_{l+1} = act/Norm(x_l + F(x_l)).
  The normalization/nonlinearity sits on the trunk after every addition, so the identity path from
  the output back to the input is interrupted L times: gradients near the output are large and those
  reaching early layers pass through every norm. Such nets need learning-rate warmup and smaller peak
  learning rates, and become hard to train as depth grows.
- *Pre-norm* (pre-activation ResNet, "pre-LN" Transformers, GPT-2 onward): x_{l+1} = x_l + F(Norm(x_l)).
  The trunk is a clean identity (a final norm before the head), so the gradient reaches every block
  directly; training is stable at higher learning rates, often without warmup, and scales to
  hundreds of layers. The price: the trunk's scale grows with depth and later blocks' contributions
  shrink relative to it, so a well-tuned post-norm net can end slightly better when it trains at all.

Practice: pre-norm for deep or large-LR training (the default in modern Transformers and in goodfit's
resnet, `model.residual: pre`); post-norm with warmup when matching an original architecture.

**The lab** (digits, SGD with momentum 0.9, no warmup, 3 epochs) trains (1) a plain CNN with the norm
before or after the activation, with BatchNorm and with LayerNorm, at several learning rates, and
(2) a 6-block residual net with LayerNorm in pre-norm and post-norm order over a learning-rate sweep,
recording the training loss of the last 10 steps and the validation accuracy.
"""


def _train(cfg, lr: float, seed: int, data) -> tuple[float, float]:
    """Final training loss (mean of the last 10 steps; inf if non-finite) and val accuracy after 3 epochs."""
    import torch

    from goodfit.data import TensorLoader
    from goodfit.engine import Trainer
    from goodfit.losses import cross_entropy
    from goodfit.models import build_model

    torch.manual_seed(seed)
    model = build_model(cfg, data.input_shape, data.num_outputs)
    losses: list[torch.Tensor] = []

    class Record:
        def on_step_end(self, trainer, state, loss):
            losses.append(loss)

    Trainer(model=model, loss_fn=cross_entropy, optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
            train_loader=TensorLoader(data.x_train, data.y_train, 64, seed=seed), epochs=3,
            callbacks=[Record()]).fit()
    tail = torch.stack(losses[-10:]).mean().item()
    model.eval()
    with torch.no_grad():
        acc = (model(data.x_val).argmax(1) == data.y_val).float().mean().item()
    return (tail if math.isfinite(tail) else math.inf), acc


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    import torch

    from goodfit.data import load_data
    from goodfit.recipe import Model, load_recipe

    torch.set_num_threads(1)
    recipe = load_recipe("digits-cnn")
    data = load_data(recipe.data, recipe.task, 0)
    if ctx.quick:
        norms, place_lrs, res_lrs, seeds = ["layer"], [0.3], [0.3], [0]
    else:
        norms, place_lrs, res_lrs, seeds = ["batch", "layer"], [0.05, 0.3, 1.0], [0.03, 0.1, 0.3, 1.0], [0, 1, 2]
    positions = ["before_activation", "after_activation"]

    # ---------------------------------------------------------------- (1) norm before / after the activation
    place = {(n, p, lr): [_train(Model(name="cnn", width=16, depth=3, norm=n, norm_position=p, dropout=0.0),
                                 lr, s, data) for s in seeds]
             for n in norms for p in positions for lr in place_lrs}
    ctx.table(f"plain CNN (3 conv blocks, width 16): final train loss per seed {seeds} / mean val accuracy",
              ["norm", "position", "lr", "final train loss", "val acc"],
              [[n, p, lr, " ".join(f"{v[0]:.3f}" for v in vals), float(np.mean([v[1] for v in vals]))]
               for (n, p, lr), vals in place.items()])
    for lr in (lr for lr in place_lrs if lr <= 0.3):
        before, after = ([v[0] for v in place["layer", p, lr]] for p in positions)
        ctx.check(all(a < b for a, b in zip(after, before)),
                  f"LayerNorm in a CNN, lr {lr}: normalizing after the activation trains better than before it "
                  "(lower final loss in every seed)", f"after {np.round(after, 3)} vs before {np.round(before, 3)}")
    if "batch" in norms:
        small = [v[0] for p in positions for lr in place_lrs if lr <= 0.3 for v in place["batch", p, lr]]
        ctx.check(all(v < 0.25 for v in small),
                  "BatchNorm is insensitive to the placement at lr ≤ 0.3: both orders reach a final loss < 0.25 in "
                  "every seed", f"max {max(small):.3f}")

    # ---------------------------------------------------------------- (2) pre- vs post-norm residual blocks
    res = {(r, lr): [_train(Model(name="resnet", width=8, depth=6, norm="layer", residual=r, dropout=0.0), lr, s, data)
                     for s in seeds] for r in ("pre", "post") for lr in res_lrs}
    ctx.table(f"residual net, 6 blocks, LayerNorm: final train loss per seed {seeds} / mean val accuracy",
              ["residual", "lr", "final train loss", "val acc"],
              [[r, lr, " ".join(f"{v[0]:.3f}" for v in vals), float(np.mean([v[1] for v in vals]))]
               for (r, lr), vals in res.items()])
    low, high = min(res_lrs), 0.3
    if low < high:
        ctx.check(all(v[0] < 0.5 for r in ("pre", "post") for v in res[r, low]),
                  f"at a moderate lr ({low}) both orders train (final loss < 0.5 in every seed)")
    pre_hi, post_hi = [v[0] for v in res["pre", high]], [v[0] for v in res["post", high]]
    ctx.check(all(p < q - 0.3 for p, q in zip(pre_hi, post_hi)) and min(post_hi) > 1.0,
              f"at a high lr ({high}) post-norm breaks down (final loss > 1.0) while pre-norm still trains: lower by "
              "more than 0.3 in every seed", f"pre {np.round(pre_hi, 3)} vs post {np.round(post_hi, 3)}")

    def largest_stable(r):
        ok = [lr for lr in res_lrs if all(v[0] < 0.7 for v in res[r, lr])]
        return max(ok) if ok else 0.0

    stable = {r: largest_stable(r) for r in ("pre", "post")}
    ctx.measure("largest lr with final loss < 0.7 in every seed (pre, post)", f"{stable['pre']:g}, {stable['post']:g}")
    if not ctx.quick:
        ctx.check(stable["pre"] >= 3 * stable["post"] > 0,
                  "pre-norm's largest stable learning rate is at least 3× post-norm's")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    for (n, p), style in zip([(n, p) for n in norms for p in positions], ["o-", "o--", "s-", "s--"]):
        ax1.plot(place_lrs, [np.mean([min(v[0], 3.0) for v in place[n, p, lr]]) for lr in place_lrs], style,
                 label=f"{n} norm, {p.replace('_', ' ')}")
    ax1.set_xscale("log")
    ax1.set_xlabel("learning rate (SGD, momentum 0.9)")
    ax1.set_ylabel("final train loss (mean over seeds, capped at 3)")
    ax1.set_title("plain CNN: norm before vs after the activation")
    ax1.legend(fontsize=8)
    for r, style in (("pre", "o-"), ("post", "s-")):
        ax2.plot(res_lrs, [np.mean([min(v[0], 3.0) for v in res[r, lr]]) for lr in res_lrs], style,
                 label=f"{r}-norm blocks")
    ax2.axhline(math.log(10), color="k", ls=":", lw=1, label="chance (ln 10)")
    ax2.set_xscale("log")
    ax2.set_xlabel("learning rate (SGD, momentum 0.9, no warmup)")
    ax2.set_title("residual net (LayerNorm): pre- vs post-norm")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "norm_placement")


LAB = Lab(id="1.5.7", title="Where normalization layers go",
          question="归一化层通常放在网络的什么位置？不同位置对模型训练和性能有何影响？ — Where normalization layers go and what "
                   "placement changes.",
          answer=ANSWER, run=run, uses="norms, models")
