"""Exceptions raised for input a user can fix."""

from __future__ import annotations


class BadInputError(ValueError):
    """Input (a file, an array, a parameter) that cannot be used, with the reason in the message."""


class CancelledError(RuntimeError):
    """A long computation stopped because the caller asked it to."""
