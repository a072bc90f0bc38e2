"""Build the doctor for a recipe's run: its context and the pre-flight findings."""
from __future__ import annotations

import torch
from threadpoolctl import threadpool_limits

from goodfit.data.quality import linear_baseline_mse
from goodfit.doctor.callback import DoctorCallback
from goodfit.doctor.preflight import data_findings, small_batch_batchnorm
from goodfit.doctor.rules import Context


def doctor_for(recipe, data, model) -> DoctorCallback:
    """The DoctorCallback a `goodfit train` run attaches (the run directory is set once it exists)."""
    ctx = Context(task=recipe.task, num_classes=data.num_classes, lr=recipe.optimizer.lr,
                  batch_size=recipe.train.batch_size * recipe.train.accumulate,
                  restore_best=recipe.train.early_stopping.restore_best,
                  grad_clip=recipe.train.grad_clip is not None,
                  label_smoothing=recipe.loss.label_smoothing,
                  penalized=bool(recipe.regularization.l1 or recipe.regularization.l2), width=recipe.model.width)
    # numpy/scipy thread pools keep to the run's thread budget: idle BLAS workers left spinning after the checks
    # took CPU from the training loop on small machines (measured: 1-2% of a tiny MLP's step time on 2 cores)
    with threadpool_limits(limits=torch.get_num_threads()):
        found = data_findings(data, recipe.task)
        if recipe.task == "regression" and recipe.loss.name == "mse" and len(data.x_train) >= 10:
            ctx.baseline_loss = linear_baseline_mse(data.x_train, data.y_train)
    found += [f for f in (small_batch_batchnorm(model, recipe.train.batch_size),) if f is not None]
    return DoctorCallback(ctx, every=recipe.doctor.every, auto_repair=recipe.doctor.auto_repair, preflight=found)
