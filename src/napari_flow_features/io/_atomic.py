"""Atomic file writes: write to a temporary name in the target folder, then rename."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def partial_path(final: str | os.PathLike) -> Path:
    """A hidden temporary sibling of ``final`` that keeps its suffix (numpy appends ``.npy`` otherwise)."""
    final = Path(final)
    return final.with_name(f".{final.stem}.partial-{secrets.token_hex(4)}{final.suffix}")


@contextlib.contextmanager
def atomic_write_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``final`` in one rename.

    On any error (or a cancel) the temporary file is removed and ``final`` is left as it was.
    """
    final = Path(final)
    if not final.parent.exists():
        raise FileNotFoundError(f"Output folder does not exist: {final.parent}")
    tmp = partial_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
