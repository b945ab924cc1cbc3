"""Exceptions raised for input a user can fix."""

from __future__ import annotations


class BadInputError(ValueError):
    """Input (a file, an array, a parameter) that cannot be used, with the reason in the message."""


class CancelledError(Exception):
    """A long computation stopped because the caller asked it to.

    Not a RuntimeError on purpose: napari's generator workers treat a RuntimeError raised inside
    the generator as an aborted thread and never report the run as finished."""
