"""``flow-features cache info|clear``: what this package keeps on disk, and removing it.

``info`` lists every folder the package writes outside your output files, with its size, and what
an uninstall (``pip uninstall napari-flow-features``) leaves behind; ``clear`` removes the chosen
ones without asking and prints what it removed. Files shared with other programs (Keras's
``~/.keras/keras.json``, OpenVINO's ``~/intel/``) are listed, never removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._cache_dirs import DASK_DIR_STEM, STAGING_DIR_STEM, WORK_DIR_STEM
from ._common import console

#: Owner-tagged work folders runs make in the temporary folder (``io._atomic.make_work_dir``):
#: the extraction's (``flow-features``) and the napari model worker's.
WORK_STEMS = (WORK_DIR_STEM, f"{WORK_DIR_STEM}-worker", DASK_DIR_STEM, STAGING_DIR_STEM)


@dataclass
class Location:
    """One kind of thing the package keeps on disk.

    Attributes
    ----------
    key
        Short name (``weights``, ``runtimes``, ...), also the ``clear`` option that removes it.
    what
        What it holds, in a few words.
    paths
        The files or folders (those that exist).
    removable
        Whether ``cache clear`` removes it (False: shared with other programs, or not ours).
    note
        What to know before removing it by hand.
    """

    key: str
    what: str
    paths: list[Path] = field(default_factory=list)
    removable: bool = True
    note: str = ""

    @property
    def nbytes(self) -> int:
        """Bytes in its files."""
        from ..model.runtime_cache import folder_bytes

        return sum(folder_bytes(p) if p.is_dir() else _file_bytes(p) for p in self.paths)


def _file_bytes(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _work_folders() -> tuple[list[Path], list[Path]]:
    """Owner-tagged work folders in ``$TMPDIR``: (of ended runs, of live runs)."""
    from ..io._atomic import _PARTIAL_RE, owner_alive

    stale: list[Path] = []
    live: list[Path] = []
    tmp = Path(tempfile.gettempdir())
    with_stem = tuple(f".{stem}.partial-" for stem in WORK_STEMS)
    for path in sorted(tmp.glob(".flow-features*.partial-*")):
        match = _PARTIAL_RE.match(path.name)
        if match is None or not path.name.startswith(with_stem) or not _mine(path):
            continue
        alive = owner_alive(int(match.group(1)), int(match.group(2)))
        (live if alive else stale).append(path)
    return stale, live


def _mine(path: Path) -> bool:
    """Whether this user owns ``path`` (a shared ``/tmp`` holds other users' runs too)."""
    try:
        return path.lstat().st_uid == os.getuid()
    except (OSError, AttributeError):  # no getuid on Windows: a per-user temporary folder
        return True


def cache_locations() -> list[Location]:
    """Every place the package writes outside its outputs, and what others leave in the home.

    Returns
    -------
    list of Location
        Weights, compiled runtimes, the video index, work folders in ``$TMPDIR`` (of ended and of
        live runs), anything else in the cache folder, then Keras's and OpenVINO's own files.
    """
    from .._cache_dirs import legacy_cache_dirs, runtime_cache_dir, video_index_dir
    from ..model.weights import CHECKPOINTS, cache_dir, cache_root

    root, checkpoints, runtimes = cache_root(), cache_dir(), runtime_cache_dir()
    video_index, legacy = video_index_dir(), legacy_cache_dirs()
    weights = [checkpoints / name for name in CHECKPOINTS]
    known = {root, checkpoints, runtimes, video_index, *weights, *legacy}
    other = [p for p in _children(root) + _children(checkpoints) if p not in known]
    stale, live = _work_folders()
    home = Path.home()
    found = [
        Location("weights", "DeepMind's I3D checkpoints (weights fetch)", weights),
        Location("runtimes", "compiled OpenVINO models (capped: see docs)", [runtimes]),
        Location("video-index", "frame indexes of videos read", [video_index]),
        Location("legacy", "compiled models and indexes where earlier versions kept them", legacy),
        Location("work", "work folders of ended runs in $TMPDIR", stale),
        Location("other", "anything else in the cache folder", other),
        Location(
            "running",
            "work folders of live runs in $TMPDIR",
            live,
            False,
            "in use: removed by their run when it ends",
        ),
        Location(
            "keras",
            "Keras's settings (written by any Keras import)",
            [home / ".keras" / "keras.json"],
            False,
            "shared with every Keras program: remove ~/.keras yourself if unused",
        ),
        Location(
            "intel",
            "OpenVINO's telemetry consent and id (not written by this package)",
            [home / "intel"],
            False,
            "shared with other OpenVINO tools: `opt_in_out --opt_out` or remove it",
        ),
    ]
    for location in found:
        location.paths = [p for p in location.paths if p.exists() or p.is_symlink()]
    return found


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MB"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``cache`` sub-command and its ``info`` and ``clear`` actions.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The top-level parser's sub-commands.

    Returns
    -------
    argparse.ArgumentParser
        The sub-command's parser.
    """
    p: argparse.ArgumentParser = sub.add_parser(
        "cache", help="what the package keeps on disk: list it, or remove it"
    )
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = csub.add_parser(
        "info",
        help="list the cache folders, their sizes and what an uninstall leaves",
        description="The cache folder is $NAPARI_FLOW_FEATURES_CACHE, default "
        "~/.cache/napari-flow-features; compiled runtimes are capped at "
        "$NAPARI_FLOW_FEATURES_RUNTIME_CACHE_MB (default 512). A --flow-cache folder is yours: "
        "it is wherever you pointed it.",
    )
    info.set_defaults(func=run_info)
    clear = csub.add_parser(
        "clear",
        help="remove cached files (asks nothing; prints what it removed)",
        description="Removes compiled runtimes, downloaded weights, or everything the package "
        "keeps (weights, runtimes, video index, work folders of ended runs). Keras's and "
        "OpenVINO's own files in your home are never removed.",
    )
    which = clear.add_mutually_exclusive_group(required=True)
    which.add_argument("--runtimes", action="store_true", help="compiled OpenVINO models")
    which.add_argument("--weights", action="store_true", help="downloaded I3D checkpoints")
    which.add_argument("--all", action="store_true", help="everything the package keeps")
    clear.set_defaults(func=run_clear)
    return p


def run_info(args: argparse.Namespace) -> int:
    """Print each location with its size, then what an uninstall leaves.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit status (0).
    """
    from ..model.weights import cache_root

    locations = cache_locations()
    console.result(f"cache folder: {cache_root()}")
    total = 0
    for loc in locations:
        size = loc.nbytes
        total += size if loc.removable else 0
        state = "" if loc.removable else "  (not removed by cache clear)"
        console.result(f"{loc.key:12} {_size(size):>10}  {loc.what}{state}")
        for path in loc.paths:
            console.result(f"{'':12} {'':>10}  {path}")
        if loc.note and loc.paths:
            console.result(f"{'':12} {'':>10}  note: {loc.note}")
    console.result(
        f"{'total':12} {_size(total):>10}  removable with: flow-features cache clear --all"
    )
    console.result(
        "an uninstall leaves all of the above; a --flow-cache folder stays where you put it"
    )
    return 0


def run_clear(args: argparse.Namespace) -> int:
    """Remove the chosen locations and print each path removed with its size.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit status (0).
    """
    from ..model.weights import cache_dir, cache_root

    keys = {"runtimes", "legacy"} if args.runtimes else {"weights"} if args.weights else None
    removed = 0
    for loc in cache_locations():
        if not loc.removable or (keys is not None and loc.key not in keys):
            continue
        for path in loc.paths:
            size = loc.nbytes if len(loc.paths) == 1 else Location(loc.key, "", [path]).nbytes
            try:
                gone = _remove(path)
            except OSError as exc:
                console.result(f"could not remove {path}: {exc}")
                continue
            if gone:
                removed += 1
                console.result(f"removed {path} ({_size(size)})")
    if args.all:  # the cache folder itself, once empty
        for folder in (cache_dir(), cache_root()):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                console.result(f"removed {folder}")
    if not removed:
        console.result("nothing to remove")
    return 0


def _remove(path: Path) -> bool:
    """Remove a file or folder tree; False when it was already gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
        return True
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
