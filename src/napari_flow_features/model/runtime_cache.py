"""The compiled-model cache: one folder per model and input shape, bounded in size.

Each entry is a folder ``<key>/`` holding ``model.xml`` and ``model.bin`` (OpenVINO IR), written
under a temporary name and renamed into place, so an entry appears whole or not at all. Its
``last-used`` file's modification time is set on every use: the cache keeps at most
``$NAPARI_FLOW_FEATURES_RUNTIME_CACHE_MB`` megabytes (default 512) and removes the least recently
used entries first. An entry being read by a live process carries an owner-tagged
``.in-use.partial-<pid>-…`` file for that time and is never removed; once a model is compiled its
files are no longer needed (OpenVINO maps the ``.bin`` while reading; on Linux and macOS a removed
file stays readable to whoever has it open or mapped).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import BadInputError
from ..io._atomic import remove_stale_partials, temp_sibling

logger = logging.getLogger(__name__)

CAP_ENV = "NAPARI_FLOW_FEATURES_RUNTIME_CACHE_MB"
DEFAULT_CAP_MB = 512
LAST_USED = "last-used"
IN_USE = "in-use"


def cap_bytes() -> int:
    """The cache's size cap in bytes (``$NAPARI_FLOW_FEATURES_RUNTIME_CACHE_MB``, default 512 MB).

    Returns
    -------
    int
        The cap; 0 keeps only the entries in use.

    Raises
    ------
    BadInputError
        The variable is set to something other than a whole number ≥ 0.
    """
    text = os.environ.get(CAP_ENV, "").strip()
    if not text:
        return DEFAULT_CAP_MB * 2**20
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise BadInputError(f"{CAP_ENV} must be a whole number of megabytes ≥ 0, not {text!r}")
    return value * 2**20


def folder_bytes(folder: Path) -> int:
    """Bytes in the files under ``folder`` (0 when it is missing)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def entries(cache: Path) -> list[Path]:
    """The complete entries of ``cache`` (folders with a ``model.xml``), oldest use first."""
    if not cache.is_dir():
        return []
    found = [
        p for p in cache.iterdir() if not p.name.startswith(".") and (p / "model.xml").is_file()
    ]
    return sorted(found, key=last_used)


def last_used(entry: Path) -> float:
    """When ``entry`` was last used (its ``last-used`` file's time, else the folder's)."""
    for path in (entry / LAST_USED, entry):
        with contextlib.suppress(OSError):
            return path.stat().st_mtime
    return 0.0


def touch(entry: Path) -> None:
    """Record a use of ``entry`` now (a read-only cache is left as it is)."""
    with contextlib.suppress(OSError):
        (entry / LAST_USED).touch()
        os.utime(entry / LAST_USED)


def in_use(entry: Path) -> bool:
    """Whether a live process is reading ``entry`` (markers of ended processes are removed)."""
    with contextlib.suppress(OSError):
        remove_stale_partials(entry, IN_USE)
        return any(p.name.startswith(f".{IN_USE}.partial-") for p in entry.iterdir())
    return False


@contextlib.contextmanager
def using(entry: Path) -> Iterator[None]:
    """Mark ``entry`` as in use by this process for the block, and record the use."""
    marker = temp_sibling(entry / IN_USE)
    try:
        marker.touch(exist_ok=False)
    except OSError:  # a read-only or vanished entry: nothing to protect
        marker = None  # type: ignore[assignment]
    touch(entry)
    try:
        yield
    finally:
        if marker is not None:
            with contextlib.suppress(OSError):
                marker.unlink()


def remove_entry(entry: Path) -> bool:
    """Take ``entry`` out of the cache at once (rename), then delete it; False if that failed."""
    hidden = temp_sibling(entry.parent / f"removing-{entry.name}")
    try:
        os.replace(entry, hidden)
    except OSError:
        return False
    shutil.rmtree(hidden, ignore_errors=True)
    return True


def prune(cache: Path, keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Remove least recently used entries until the cache fits its cap.

    Parameters
    ----------
    cache
        The cache folder.
    keep
        An entry never removed (the one just written).
    limit
        The cap in bytes; default :func:`cap_bytes`.

    Returns
    -------
    list of Path
        The entries removed.
    """
    limit = cap_bytes() if limit is None else limit
    with contextlib.suppress(OSError):
        remove_stale_partials(cache)  # half-written entries of killed runs
    found = entries(cache)
    sizes = {entry: folder_bytes(entry) for entry in found}
    total = sum(sizes.values())
    removed: list[Path] = []
    for entry in found:  # oldest use first
        if total <= limit:
            break
        if entry == keep or in_use(entry):
            continue
        if remove_entry(entry):
            total -= sizes[entry]
            removed.append(entry)
    if removed:
        logger.info(
            "runtime cache: removed %d least recently used entries (cap %d MB)",
            len(removed),
            limit // 2**20,
        )
    return removed


def new_entry_dir(entry: Path) -> Path:
    """An owner-tagged temporary folder beside ``entry`` to write it into (created)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(entry)
    tmp.mkdir(mode=0o700)
    (tmp / LAST_USED).touch()
    return tmp


def publish(tmp: Path, entry: Path) -> None:
    """Rename the written ``tmp`` into place as ``entry`` (another process's copy wins a race)."""
    tmp.chmod(0o755)
    os.utime(tmp / LAST_USED, (time.time(), time.time()))
    try:
        os.replace(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not entry.is_dir():
            raise
