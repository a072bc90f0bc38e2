"""Progress display: a rich bar on a terminal (epoch, step, loss, val metric, ETA); plain
one-line-per-epoch output otherwise (logs, CI, pipes)."""
from __future__ import annotations

import time

from rich.console import Console


def _fmt(summary: dict, keys) -> str:
    return "  ".join(f"{k} {summary[k]:.4g}" for k in keys if k in summary)


class Progress:
    def __init__(self, console: Console | None = None, show_metric: str | None = None, refresh: float = 0.1):
        self.console = console or Console(stderr=True)
        self.metric = show_metric
        self.refresh = refresh
        self.bar = None
        self.last = 0.0

    def on_fit_start(self, trainer, state) -> None:
        self.epochs, self.per_epoch = trainer.epochs, len(trainer.train_loader)
        if not self.console.is_terminal:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
                                transient=False)
        self.task = self.bar.add_task(self._desc(state.epoch), total=self.epochs * self.per_epoch,
                                      completed=state.step, info="")
        self.bar.start()

    def _desc(self, epoch: int) -> str:
        return f"epoch {min(epoch + 1, self.epochs)}/{self.epochs}"

    def on_step_end(self, trainer, state, loss) -> None:
        if self.bar is None:
            return
        now = time.monotonic()
        if now - self.last < self.refresh:  # one clock read per step; the loss sync only at refresh
            return
        self.last = now
        info = f"loss {loss.item():.4g}"
        if self.metric and self.metric in state.last_eval:
            info += f"  val {self.metric} {state.last_eval[self.metric]:.4g}"
        self.bar.update(self.task, completed=state.step, description=self._desc(state.epoch), info=info)

    def on_epoch_end(self, trainer, state, summary) -> None:
        keys = ["train_loss", "val_loss"] + [k for k in summary if k.startswith("val_") and k not in ("val_loss", "val_time")] + ["lr"]
        line = f"epoch {summary['epoch']:>3}/{self.epochs}  {_fmt(summary, keys)}  ({summary['train_time']:.2f}s)"
        if self.bar is not None:
            self.bar.update(self.task, completed=state.step, description=self._desc(state.epoch))
            self.bar.console.print(line, highlight=False)
        else:
            self.console.print(line, highlight=False, soft_wrap=True)

    def on_fit_end(self, trainer, state) -> None:
        if self.bar is not None:
            self.bar.stop()
