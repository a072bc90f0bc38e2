"""A simulated crash for resume tests: kill the run at an optimizer step, as a SIGKILL would,
without letting the run finish anything (only the metrics log's buffered lines are flushed, which
resume truncates to the checkpoint's offset anyway)."""
from goodfit.engine.callbacks import MetricsLog


class Crash(Exception):
    pass


class CrashAt:
    """Raise Crash at the end of optimizer step `step` (after that step's checkpoint, if one was due)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, state, loss):
        if state.step == self.step:
            for cb in trainer.callbacks:
                if isinstance(cb, MetricsLog):
                    cb.close()
            raise Crash
