"""Errors a user can cause. Each carries a one-line message naming the file and the fix.

The CLI maps them to exit codes; anything else is a bug and may raise with a traceback.
"""

from __future__ import annotations


class PancDiffError(Exception):
    """Base of every user-facing error; ``exit_code`` is what the CLI returns."""

    exit_code = 2


class InputError(PancDiffError):
    """Bad input: missing, unreadable, not a CT, mismatched geometry (exit 2)."""

    exit_code = 2


class DependencyError(PancDiffError):
    """A missing optional package, model weights or device (exit 3)."""

    exit_code = 3


class WeightsError(DependencyError):
    """Weights missing, corrupt or not matching their recorded SHA-256 (exit 3)."""


class Cancelled(PancDiffError):
    """The user interrupted the run (exit 130); outputs are rolled back."""

    exit_code = 130
