"""Errors that map to the command line's exit codes (DESIGN §1.2)."""
from __future__ import annotations


class GoodfitError(Exception):
    """Base class of goodfit's own errors."""

    exit_code = 1


class UserError(GoodfitError):
    """Bad recipe, data or argument: exit 2 with one clear message and a hint, no traceback."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class TrainingFailed(GoodfitError):
    """The run failed for a training reason (unrecoverable divergence): exit 3."""

    exit_code = 3
