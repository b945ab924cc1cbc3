"""One write discipline for every output (docs/reliability.md).

Every file or folder this package writes is first written under a *temporary name in its destination
folder*, flushed to the disk (``fsync`` of the file, then of the folder after the rename) and then
renamed to its final name in one ``rename``. So a final path only ever holds a complete output, the
old one or nothing, whatever ends the run (an error, Ctrl-C, SIGTERM, SIGKILL, a full disk, a power
cut after the folder's fsync).

Temporary names record their owner: ``.<stem>.partial-<pid>-<start>-<host>-<token><suffix>``, where
``<start>`` is the owner process' start time (clock ticks since boot, from ``/proc``) and ``<host>``
names the boot and pid namespace the pid belongs to. A later run removes the temporaries whose owner
is gone (no such pid, or the pid now belongs to a process started at another time) and never those of
a live run. A temporary from another boot, machine or container sharing the folder cannot be judged
by its pid; it is removed once it has not changed for :data:`FOREIGN_STALE_SECONDS` (a day).
:func:`atomic_write_path` cleans once per folder and process before its first write there;
:func:`remove_stale_partials` does it on request.

A data file and its metadata (a CSV table and its JSON sidecar, a ``.npy`` and its ``.json``) are made
visible together by :func:`write_with_sidecar`: both are written to temporaries, the metadata records
the data's SHA-256 and size, then the metadata is renamed first and the data second. A reader that
checks the hash (:func:`verify_sidecar`) accepts exactly the pairs written together; the one torn
state a kill between the two renames can leave (new metadata, old or no data) is refused with
:class:`~napari_flow_features.errors.MismatchedMetadataError`. A failure before the renames changes
nothing; a failure of the second rename puts the old metadata back.

Writers whose output size is known check the free space first (:func:`check_free_space`): "No space
left on device: needs N MB at PATH". A disk that fills during a write raises
:class:`~napari_flow_features.errors.OutOfSpaceError` and leaves no temporary behind.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .._cache_dirs import STAGING_DIR_STEM, WORK_DIR_STEM, temp_root
from ..errors import BadInputError, MismatchedMetadataError, OutOfSpaceError

_PARTIAL_RE = re.compile(r"^\..*\.partial-(\d+)-(\d+)-([0-9a-f]{6})-[0-9a-f]{8}")
FOREIGN_STALE_SECONDS = 24 * 3600
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_SPACE_WORDS = ("No space left on device", "Disk quota exceeded", "File too large")
_cleaned: set[tuple[int, str]] = set()  # (pid, folder) already cleaned by this process
# Every temporary name this process has handed out (absolute), for remove_own_temporaries.
_handed_out: set[str] = set()
_HANDED_OUT_PRUNE = 4096  # past this many names, forget those no longer on disk


# -- owners of temporaries ----------------------------------------------------------------------
def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot on Linux), or None if there is none.

    Together with the pid it names one process for the whole uptime: a reused pid has another
    start time.

    Parameters
    ----------
    pid
        The process id.

    Returns
    -------
    int or None
        The start time, or None for no such (visible) process.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        # Field 22; the command name (field 2) may hold spaces and parentheses, so split after it.
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        pass
    if not Path("/proc/self/stat").exists():  # not Linux: ask psutil when it is installed
        try:
            import psutil

            return int(psutil.Process(pid).create_time() * 100)
        except Exception:  # psutil missing, no such process, access denied
            return None
    return None


@functools.lru_cache(maxsize=1)
def host_tag() -> str:
    """Six hex digits naming this boot and pid namespace.

    Pids and start times compare only within one (another machine, container or a reboot has
    its own).
    """
    parts = []
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(
                os.readlink(source) if source.endswith("pid") else Path(source).read_text()
            )
        except OSError:
            parts.append(platform.node())
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:6]


def _owner_tag() -> str:
    pid = os.getpid()
    return f"{pid}-{process_start_time(pid) or 0}-{host_tag()}"


def owner_alive(pid: int, start: int) -> bool:
    """Whether the process that recorded ``(pid, start)`` is still running.

    Parameters
    ----------
    pid
        The process id a temporary's name records.
    start
        Its start time (0: unknown, then any process with that pid counts as the owner).

    Returns
    -------
    bool
        True while that very process runs.
    """
    now = process_start_time(pid)
    if now is None:  # no such process, or one this user cannot see (/proc hidepid)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # another user's live process
        return True
    return start == 0 or now == start


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def temp_sibling(final: str | os.PathLike) -> Path:
    """A hidden temporary name beside ``final``, owned by this process.

    The name keeps ``final``'s suffix (numpy and matplotlib pick the format from it). Long stems
    are shortened so the temporary name fits the file system even when ``final``'s name just
    fits.

    Parameters
    ----------
    final
        The path the temporary will be renamed to.

    Returns
    -------
    Path
        ``<folder>/.<stem>.partial-<pid>-<start>-<host>-<random><suffix>`` (not created).
    """
    final = Path(final)
    tag = f".partial-{_owner_tag()}-{secrets.token_hex(4)}{final.suffix}"
    stem = final.stem
    limit = _name_max(final.parent) - len(os.fsencode(tag)) - 1
    while len(os.fsencode(stem)) > limit:
        stem = stem[: max(len(stem) - 8, 0)] if len(stem) > 8 else stem[:-1]
        if not stem:
            break
    path = final.with_name(f".{stem}{tag}")
    _remember(path)
    return path


def _remember(path: Path) -> None:
    if len(_handed_out) >= _HANDED_OUT_PRUNE:  # a long-lived process: keep only live ones
        for name in list(_handed_out):
            if not os.path.lexists(name):
                _handed_out.discard(name)
    _handed_out.add(os.path.abspath(path))


def remove_own_temporaries() -> list[Path]:
    """Remove every temporary this process named that still exists; for a process ending early.

    A signal can land between a temporary's creation and the ``try`` whose clean-up would
    remove it: on the return from ``os.mkdir`` inside ``Path.mkdir``, or in a ``with``
    statement's ``__enter__`` after the generator made its folder. No clause sees those, so the
    command line calls this after Ctrl-C or SIGTERM. The names are unique to this process (owner
    tag and random token), so one that still exists is its own leftover.

    Returns
    -------
    list of Path
        What was removed.
    """
    removed = []
    for name in list(_handed_out):
        if os.path.lexists(name):
            _remove(Path(name))
            removed.append(Path(name))
    _handed_out.clear()
    return removed


# Kept for callers written before owners were recorded.
partial_path = temp_sibling


def remove_stale_partials(folder: str | os.PathLike, stem: str | None = None) -> list[Path]:
    """Remove the temporaries in ``folder`` whose owner process has ended.

    Temporaries of live processes, and names this package did not make, are kept; so are
    temporaries of another boot, machine or container until they are a day old.

    Parameters
    ----------
    folder
        The folder to clean (not recursive).
    stem
        Only temporaries made for this name (``.<stem>.partial-…``); default: all.

    Returns
    -------
    list of Path
        What was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    here = host_tag()
    for entry in entries:
        match = _PARTIAL_RE.match(entry.name)
        if match is None or (stem is not None and not entry.name.startswith(f".{stem}.partial-")):
            continue
        if match.group(3) == here:
            if owner_alive(int(match.group(1)), int(match.group(2))):
                continue
        else:  # another boot, machine or container: judge by age only
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime < FOREIGN_STALE_SECONDS:
                    continue
        path = Path(entry.path)
        # Gone meanwhile, or not ours to remove (another user's, in a shared /tmp): leave it.
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def make_work_dir(parent: str | os.PathLike | None = None, stem: str = WORK_DIR_STEM) -> Path:
    """Create a private, owner-tagged work folder for one run, after removing dead runs' ones.

    The folder is ``.<stem>.partial-<pid>-<start>-<host>-<random>`` in ``parent`` (default the
    temporary folder, ``$TMPDIR``), mode 0700, so a run killed with SIGKILL leaves a folder the
    next run recognises as a dead run's and removes, while a live run's folder is never touched.
    Remove it with :func:`shutil.rmtree` when the run is done with it.

    Parameters
    ----------
    parent
        Where to make it; default :func:`tempfile.gettempdir`.
    stem
        The name's stem: only stale folders of the same stem are removed from ``parent``.

    Returns
    -------
    Path
        The new, empty folder.
    """
    parent = Path(parent) if parent is not None else temp_root()
    remove_stale_partials(parent, stem)
    for _ in range(100):
        folder = temp_sibling(parent / stem)
        try:
            folder.mkdir(mode=0o700)  # never follows or reuses an existing name
        except FileExistsError:
            continue
        except OSError as exc:
            raise _translate(exc, folder) from exc
        except BaseException:  # Ctrl-C on os.mkdir's return: a random name, so it is ours
            _remove(folder)
            raise
        return folder
    raise FileExistsError(f"Cannot create a work folder in {parent}")


def _clean_once(folder: Path) -> None:
    key = (os.getpid(), os.fspath(folder.absolute()))
    if key not in _cleaned:
        _cleaned.add(key)
        remove_stale_partials(folder)


# -- checks before writing ----------------------------------------------------------------------
def check_output_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path if it is a writable folder.

    Parameters
    ----------
    folder
        The output folder.

    Returns
    -------
    Path
        ``folder``.

    Raises
    ------
    BadInputError
        Saying what is wrong: missing, a file, not writable.
    """
    folder = Path(folder)
    if folder.is_dir():
        if not os.access(folder, os.W_OK | os.X_OK):
            raise BadInputError(f"Output folder is not writable: {folder}")
        return folder
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise BadInputError(f"Output folder is a file, not a folder: {probe}")
    raise BadInputError(f"Output folder does not exist: {folder}")


def ensure_output_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) if needed; a file in the way is a named error."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise BadInputError(f"Output folder is a file, not a folder: {probe}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _translate(exc, folder) from exc
    return check_output_folder(folder)


def check_output_name(final: str | os.PathLike) -> Path:
    """``final`` if its name is usable.

    Usable: not empty, not ``.``/``..``, not too long for the file system, not an existing
    folder; otherwise a :class:`BadInputError` says which.

    Parameters
    ----------
    final
        The output path.

    Returns
    -------
    Path
        ``final``.
    """
    final = Path(final)
    name = final.name
    if name in ("", ".", ".."):
        raise BadInputError(f"Output path names no file: {final}")
    limit = _name_max(final.parent if final.parent.is_dir() else Path("."))
    if len(os.fsencode(name)) > limit:
        raise BadInputError(
            f"Output file name is too long ({len(os.fsencode(name))} bytes, the file system "
            f"allows {limit}): {final}"
        )
    if final.is_dir():
        raise BadInputError(f"Output path is a folder, not a file: {final}")
    return final


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes available to this user on the file system holding ``path``.

    Parameters
    ----------
    path
        A path; when it does not exist yet, its nearest existing ancestor is asked.

    Returns
    -------
    int
        Free bytes for unprivileged writes.
    """
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f}" if nbytes < 1e7 else f"{nbytes / 1e6:.0f}"


def check_free_space(path: str | os.PathLike, nbytes: int) -> None:
    """Raise :class:`OutOfSpaceError` unless the file system of ``path`` has ``nbytes`` free.

    Call it before computing an output whose size is known (flow: ``4 * (T-1) * H * W * 2``).

    Parameters
    ----------
    path
        Where the output goes.
    nbytes
        Its size in bytes.
    """
    available = free_bytes(path)
    if nbytes > available:
        raise OutOfSpaceError(
            f"No space left on device: needs {_mb(nbytes)} MB at {path} ({_mb(available)} MB free)"
        )


def preallocate(fd: int, nbytes: int, path: str | os.PathLike = "") -> None:
    """Reserve ``nbytes`` for an open file (``posix_fallocate``).

    Later writes then cannot run out of space; a full disk raises :class:`OutOfSpaceError` now.
    A no-op where the file system does not support it.

    Parameters
    ----------
    fd
        The open file's descriptor.
    nbytes
        The file's final size.
    path
        The output's final path, for the message.
    """
    if nbytes <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return
        if exc.errno in _SPACE_ERRNOS:
            raise OutOfSpaceError(
                f"No space left on device: needs {_mb(nbytes)} MB at {path}", exc.errno
            ) from exc
        raise


def is_out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk, a quota or the file-size limit is full.

    Also recognises pyarrow's and other libraries' errors that carry only the message.

    Parameters
    ----------
    exc
        The error.

    Returns
    -------
    bool
        True for a full disk, quota or file-size limit.
    """
    if isinstance(exc, OutOfSpaceError):
        return True
    if isinstance(exc, OSError) and exc.errno in _SPACE_ERRNOS:
        return True
    return isinstance(exc, (OSError, RuntimeError, ValueError)) and any(
        w in str(exc) for w in _SPACE_WORDS
    )


def _translate(exc: BaseException, final: Path) -> BaseException:
    """A full disk as :class:`OutOfSpaceError` naming the output; other errors unchanged."""
    if isinstance(exc, OutOfSpaceError) or not is_out_of_space(exc):
        return exc
    code = exc.errno if isinstance(exc, OSError) and exc.errno in _SPACE_ERRNOS else errno.ENOSPC
    what = "File size limit exceeded" if code == errno.EFBIG else "No space left on device"
    return OutOfSpaceError(f"{what} while writing {final} (nothing was written there)", code)


# -- flushing -----------------------------------------------------------------------------------
def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file, or a folder and everything in it, to the disk."""
    path = Path(path)
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            for name in files:
                fsync_path(Path(root) / name)
            fsync_dir(root)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename is durable only after this)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync folders
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


# -- the write discipline -----------------------------------------------------------------------
def _prepare(final: Path, expected_bytes: int | None) -> None:
    check_output_folder(final.parent)
    check_output_name(final)
    _clean_once(final.parent)
    if expected_bytes:
        check_free_space(final.parent, expected_bytes)


@contextlib.contextmanager
def atomic_write_path(
    final: str | os.PathLike, expected_bytes: int | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it is flushed and renamed to it.

    On any error, Ctrl-C or cancel the temporary is removed and ``final`` is left as it was; a
    full disk is raised as :class:`OutOfSpaceError`.

    Parameters
    ----------
    final
        The output's path.
    expected_bytes
        The output's size, when known: checked against the free space first.

    Yields
    ------
    Path
        The temporary to write.
    """
    final = Path(final)
    _prepare(final, expected_bytes)
    tmp = temp_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"The writer produced no file for {final}")
        fsync_path(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException as exc:
        _remove(tmp)
        _raise_translated(exc, final)
        raise


def _raise_translated(exc: BaseException, final: Path) -> None:
    """Raise the named error a failed write at ``final`` stands for (a full disk …).

    Returns when there is none, for the caller to re-raise ``exc`` itself.
    """
    translated = _translate(exc, final)
    if translated is not exc:
        raise translated from exc


@contextlib.contextmanager
def all_files_or_none(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder whose files all appear in ``folder`` together, or none of them.

    The staging folder is owner-tagged (:func:`make_work_dir`) inside ``folder`` (the same file
    system, so moving a file is a rename). When the block ends without error every file in it is
    moved into ``folder``; on any error (a full disk, Ctrl-C) the files already moved are removed,
    and the staging folder always is, so ``folder`` holds all of the outputs or none.

    Parameters
    ----------
    folder
        The existing output folder.

    Yields
    ------
    Path
        The staging folder to write the outputs into (files only, under their final names).
    """
    folder = Path(folder)
    staging = make_work_dir(folder, stem=STAGING_DIR_STEM)
    moved: list[Path] = []
    try:
        yield staging
        names = sorted(entry.name for entry in os.scandir(staging))
        for name in names:
            fsync_path(staging / name)
        for name in names:
            try:
                os.replace(staging / name, folder / name)
            except OSError as exc:  # a folder in the way, a name taken meanwhile
                if is_out_of_space(exc):
                    raise
                raise BadInputError(
                    f"Cannot put {name} in {folder} ({exc.strerror or exc}); none of the "
                    f"{len(names)} files ({', '.join(names)}) was left there"
                ) from exc
            moved.append(folder / name)
        fsync_dir(folder)
    except BaseException as exc:
        for path in moved:
            _remove(path)
        if isinstance(exc, OutOfSpaceError):  # name the output folder, not the staging one
            message = exc.message.replace(str(staging), str(folder))
            raise OutOfSpaceError(message, exc.errno or errno.ENOSPC) from exc
        _raise_translated(exc, folder)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, expected_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it is flushed and renamed to it.

    ``final`` must not exist (an existing folder is never replaced): a :class:`BadInputError`
    says so, also when another process took the name meanwhile.

    Parameters
    ----------
    final
        The folder to create.
    expected_bytes
        Its size, when known: checked against the free space first.

    Yields
    ------
    Path
        The temporary folder to fill.
    """
    final = Path(final)
    _prepare(final, expected_bytes)
    tmp = temp_sibling(final)
    try:
        tmp.mkdir()  # inside: Ctrl-C on os.mkdir's return must remove it too
        yield tmp
        fsync_path(tmp)
        try:
            os.rename(tmp, final)  # fails on an existing non-empty folder; we refuse empty too
        except OSError as exc:
            if final.exists():
                raise BadInputError(f"Already exists, not replaced: {final}") from exc
            raise
        fsync_dir(final.parent)
    except BaseException as exc:
        _remove(tmp)
        _raise_translated(exc, final)
        raise


@contextlib.contextmanager
def atomic_write_group(
    finals: Sequence[str | os.PathLike], expected_bytes: int | None = None
) -> Iterator[list[Path]]:
    """Yield one temporary path per final path; on success all are renamed into place.

    The renames go in the order given. If one fails the earlier ones are undone (the old files
    put back), so the group is all new or all old unless the process is killed between two
    renames.

    Parameters
    ----------
    finals
        The output paths.
    expected_bytes
        Their total size, when known: checked against the free space first.

    Yields
    ------
    list of Path
        One temporary per output, in the same order.
    """
    paths = [Path(f) for f in finals]
    for p in paths:
        _prepare(p, None)
    if expected_bytes:
        check_free_space(paths[0].parent, expected_bytes)
    temps = [temp_sibling(p) for p in paths]
    backups: list[tuple[Path, Path | None]] = []  # (final, its old content's backup or None)
    try:
        yield temps
        for tmp, final in zip(temps, paths, strict=True):
            if not tmp.exists():
                raise FileNotFoundError(f"The writer produced no file for {final}")
            fsync_path(tmp)
        for tmp, final in zip(temps, paths, strict=True):
            backup = None
            if final.exists():
                backup = temp_sibling(final)
                os.link(final, backup)  # the old file stays reachable until the group is in
            backups.append((final, backup))
            os.replace(tmp, final)
        for folder in {p.parent for p in paths}:
            fsync_dir(folder)
    except BaseException as exc:
        for final, backup in reversed(backups):
            if backup is None:
                _remove(final)
            elif final.exists() and os.path.samefile(backup, final):
                backup.unlink()  # never replaced (rename onto a hard link of itself is a no-op)
            else:
                os.replace(backup, final)
        for tmp in temps:
            _remove(tmp)
        _raise_translated(exc, paths[0])
        raise
    for _final, backup in backups:
        if backup is not None:
            _remove(backup)


# -- data + metadata pairs ----------------------------------------------------------------------
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


HASH_KEY = "data_sha256"
SIZE_KEY = "data_bytes"
FILE_KEY = "data_file"


@contextlib.contextmanager
def atomic_write_with_sidecar(
    final: str | os.PathLike,
    sidecar: str | os.PathLike,
    metadata: dict[str, Any],
    expected_bytes: int | None = None,
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Yield ``(data_tmp, meta)`` for a data file and its JSON metadata made visible together.

    Write the data to ``data_tmp`` and add fields to ``meta`` (a copy of ``metadata``) inside
    the block; on success the metadata gets ``data_sha256`` (unless the writer set it, e.g.
    :attr:`NpyWriter.sha256 <napari_flow_features.io.npy_stream.NpyWriter>` computed while
    writing), ``data_bytes`` and ``data_file``, is written as JSON, and both files become
    visible together (metadata renamed first, data second). Works in generators (``yield from``
    inside the block) where a callback cannot.

    Parameters
    ----------
    final
        The data's path.
    sidecar
        The metadata's path.
    metadata
        The metadata (copied).
    expected_bytes
        The data's size, when known: checked against the free space first.

    Yields
    ------
    tuple of (Path, dict)
        The data's temporary and the metadata to complete.
    """
    final, sidecar = Path(final), Path(sidecar)
    with atomic_write_group([sidecar, final], expected_bytes) as (meta_tmp, data_tmp):
        meta = dict(metadata)
        yield data_tmp, meta
        if not data_tmp.exists():
            raise FileNotFoundError(f"The writer produced no file for {final}")
        meta[HASH_KEY] = meta.get(HASH_KEY) or sha256_file(data_tmp)
        meta[SIZE_KEY] = data_tmp.stat().st_size
        meta[FILE_KEY] = final.name
        meta_tmp.write_text(json.dumps(meta, indent=2, allow_nan=True), encoding="utf-8")


def write_with_sidecar(
    final: str | os.PathLike,
    sidecar: str | os.PathLike,
    write_data: Callable[[Path], Any],
    metadata: dict[str, Any],
    expected_bytes: int | None = None,
) -> tuple[Path, Path]:
    """Write a data file and its JSON metadata so that they become visible together.

    ``write_data(tmp)`` writes the data to the temporary path it is given; the metadata gets
    ``data_sha256``, ``data_bytes`` and ``data_file`` (the data's name) and is written as JSON.
    Readers check the pair with :func:`verify_sidecar`. Returns ``(final, sidecar)``.
    """
    with atomic_write_with_sidecar(final, sidecar, metadata, expected_bytes) as (tmp, _meta):
        write_data(tmp)
    return Path(final), Path(sidecar)


def verify_sidecar(
    data: str | os.PathLike, metadata: dict[str, Any], sidecar: Any = "", full: bool = True
) -> None:
    """Raise :class:`MismatchedMetadataError` unless ``metadata`` was written for ``data``.

    Checks the size and (``full``) the SHA-256 the metadata records. Metadata without a recorded
    hash (written by hand or by an older version) is accepted as it is. The hash reads the whole
    file (about 1 s per GB).

    Parameters
    ----------
    data
        The data file.
    metadata
        Its metadata, as read.
    sidecar
        Where the metadata was read from, for the message.
    full
        Check the SHA-256 too (``False``: the size only).
    """
    data = Path(data)
    recorded = metadata.get(HASH_KEY)
    if recorded is None:
        return
    hint = (
        f"the metadata {sidecar} was written for another version of {data.name} (an edited "
        "file, or a run that ended between writing the two); rerun the step that wrote it, "
        "or delete the metadata file to read the data without it"
    )
    size = metadata.get(SIZE_KEY)
    if size is not None and data.stat().st_size != size:
        raise MismatchedMetadataError(
            f"Data and metadata do not belong together ({data.stat().st_size} bytes, metadata "
            f"records {size}): {hint}"
        )
    if full and sha256_file(data) != recorded:
        raise MismatchedMetadataError(
            f"Data and metadata do not belong together (SHA-256 differs): {hint}"
        )
