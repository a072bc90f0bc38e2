"""The doctor as a Lightning callback (an optional import: goodfit does not depend on Lightning).

    from goodfit.doctor.lightning import lightning_doctor
    doctor = lightning_doctor(task="classification", num_classes=10)
    lightning.Trainer(callbacks=[doctor]).fit(module, ...)
    doctor.diagnosis        # a goodfit.doctor.Diagnosis after fit

The LightningModule's training_step returns the loss (or a dict with "loss"); validation logs
"val_loss" (and the epoch's "train_loss" if you log it) through self.log, as usual.
"""
from __future__ import annotations

from goodfit.doctor.api import Doctor
from goodfit.errors import UserError


def _callback_base():
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError:
            raise UserError("the Lightning doctor needs Lightning installed",
                            "pip install lightning (or use goodfit.Doctor in your own loop)") from None
    return Callback


def _value(metrics, key):
    v = metrics.get(key)
    return None if v is None else float(v)


def lightning_doctor(**doctor_options):
    """A Lightning Callback that feeds goodfit.Doctor; options as goodfit.Doctor's (task, num_classes, every, ...)."""

    class GoodfitDoctor(_callback_base()):
        def __init__(self):
            super().__init__()
            self.doctor: Doctor | None = None
            self.diagnosis = None

        def on_fit_start(self, trainer, pl_module):
            self.doctor = Doctor(pl_module, trainer.optimizers[0], **doctor_options)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if loss is not None:
                self.doctor.step(loss)
            if self.doctor.should_stop:  # a non-finite loss: stop as goodfit's own loop would
                trainer.should_stop = True

        def on_train_epoch_end(self, trainer, pl_module):
            metrics = trainer.callback_metrics
            extra = {k[4:]: float(v) for k, v in metrics.items() if k.startswith("val_") and k != "val_loss"}
            self.doctor.epoch(train_loss=_value(metrics, "train_loss"), val_loss=_value(metrics, "val_loss"), **extra)

        def on_fit_end(self, trainer, pl_module):
            self.diagnosis = self.doctor.report()
            self.doctor.close()

    return GoodfitDoctor()
