"""Exceptions raised for input a user can fix, and for a disk that cannot take an output."""

from __future__ import annotations

import errno


class BadInputError(ValueError):
    """Input (a file, an array, a parameter) that cannot be used, with the reason in the message."""


class CorruptFileError(BadInputError):
    """A file that exists but cannot be read as what it claims to be.

    Truncated, garbled, the wrong type of content, or a metadata field of the wrong type.
    """


class MismatchedMetadataError(CorruptFileError):
    """A data file and its metadata that do not belong together.

    The content hash recorded in the metadata differs from the data's (the data was replaced,
    edited or only half replaced).
    """


class UnsafePathError(BadInputError):
    """A name or a recorded path that would lead outside the folder it must stay in.

    For example ``..``, an absolute path, or a symbolic link pointing elsewhere.
    """


class OutOfSpaceError(OSError):
    """The destination cannot hold an output; nothing is left at the output's final path.

    No space left on the device, a quota, or the process' file-size limit. An :class:`OSError`
    (``errno.ENOSPC``) so that code catching ``OSError`` keeps working.

    Parameters
    ----------
    message : str
        What could not be written, and where (also ``str(error)``).
    code : int, default errno.ENOSPC
        The ``errno`` of the failure.
    """

    def __init__(self, message: str, code: int = errno.ENOSPC) -> None:
        super().__init__(code, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CancelledError(Exception):
    """A long computation stopped because the caller asked it to.

    Not a RuntimeError on purpose: napari's generator workers treat a RuntimeError raised inside
    the generator as an aborted thread and never report the run as finished.
    """
