"""JSON reports written atomically (nothing half-written at the final path, see reliability.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``path`` through a temporary file and a rename.

    Parameters
    ----------
    path : str or PathLike
        The report file.
    payload : Any
        Anything :func:`json.dumps` accepts.

    Returns
    -------
    Path
        ``path``.
    """
    from ._atomic import atomic_write_path

    target = Path(path)
    with atomic_write_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return target
