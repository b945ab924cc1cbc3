"""Download DeepMind's published kinetics-i3d checkpoints: hash-checked, atomic, cached.

Files come from ``<base URL>/<name>/{checkpoint, model.ckpt.index,
model.ckpt.data-00000-of-00001}`` (the kinetics-i3d repository's ``data/checkpoints`` folder by
default) through :mod:`pooch`, which retries failed transfers and refuses a file whose hash
differs from the known one. A download is accepted only when, in addition, its variable names and
shapes equal those of the published index shipped with this package and every tensor reads back
(TensorFlow checks each tensor's CRC32C as it reads). Checkpoints are cached under
:func:`cache_dir` (``platformdirs``' user cache folder, or ``$NAPARI_FLOW_FEATURES_CACHE``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from .. import _cache_dirs
from ..errors import BadInputError, OutOfSpaceError
from ..io._atomic import (
    check_free_space,
    ensure_output_dir,
    fsync_dir,
    fsync_path,
    is_out_of_space,
    remove_stale_partials,
    temp_sibling,
)

logger = logging.getLogger(__name__)

CHECKPOINTS = ("flow_imagenet", "flow_scratch", "rgb_imagenet", "rgb_scratch", "rgb_scratch_kin600")
FILES = ("checkpoint", "model.ckpt.index", "model.ckpt.data-00000-of-00001")
DEFAULT_BASE_URL = "https://github.com/deepmind/kinetics-i3d/raw/master/data/checkpoints"
URL_ENV = "NAPARI_FLOW_FEATURES_WEIGHTS_URL"
CACHE_ENV = _cache_dirs.CACHE_ENV
APP_NAME = _cache_dirs.APP_NAME
#: The published checkpoint each stream loads by default (``weights.source: pretrained``).
PRETRAINED = {"flow": "flow_imagenet", "rgb": "rgb_imagenet"}
#: Download attempts after the first for a transfer that may succeed when tried again (a
#: timeout, a broken connection, a server error, a hash mismatch).
DEFAULT_RETRIES = 2

#: SHA-256 of the small files of each published checkpoint (kinetics-i3d at commit 0667e88):
#: ``checkpoint`` (its text) and ``model.ckpt.index`` (byte-identical to the copies shipped in
#: ``model/reference/``). pooch refuses a download whose hash differs.
PUBLISHED_SHA256: dict[str, dict[str, str]] = {
    "flow_imagenet": {
        "checkpoint": "5d9a7305f9504a67a97c4710c727561ce090b9e8d962bb36c94e7a4abb9c7a23",
        "model.ckpt.index": "71594ac5f63cb0eb58512a13b56097dc0368d09e5959dffcc6e7a45b19832366",
    },
    "flow_scratch": {
        "checkpoint": "876831eb971cf44d553a3978aac4ba1657b4940fdc9f6c0cbe4005fce403a650",
        "model.ckpt.index": "81fccedbe8352f8509b05ca9f2959f5aac13552dc680c808acd4f39be82620e6",
    },
    "rgb_imagenet": {
        "checkpoint": "642bdb899ccd0655219ec352324b8f4c65e153b2ee847104691c1aee153c7398",
        "model.ckpt.index": "f4bfd6f4af485f276c68333d3eca3697b691bb647f0167a03fe021147ca7f8eb",
    },
    "rgb_scratch": {
        "checkpoint": "453f167f890c07b9186d43891f6c05d1730e3b99de47e5b8b1350da9275b4d90",
        "model.ckpt.index": "4fcd08b3e140f0267730e462295054c6a38f6cfd9991c310ee3d37bbdfd7030c",
    },
    "rgb_scratch_kin600": {
        "checkpoint": "dd1b025d2e155283f5e300ce95bf6d5b6bc0f7fe010db73daa6975eb896ab9cb",
        "model.ckpt.index": "366815af85b76e46222db13761f087584b3dc9c56abf67b822949846302e432a",
    },
}
#: Git object ids (SHA-1 of ``b"blob <size>\0" + content``) of each published data file, from the
#: kinetics-i3d repository's tree at commit 0667e88: the data files' own identity, checked after the
#: download. (Their SHA-256 was not published; the pinned index also holds every tensor's CRC32C.)
PUBLISHED_DATA_GIT_BLOB: dict[str, str] = {
    "flow_imagenet": "bf56831f663abc3de0d35f193030b73a3df7fb61",
    "flow_scratch": "1d6a0b68f32544af11111342857e47e30d13afa9",
    "rgb_imagenet": "2958652e0c9c48a65010c0ebda5c9cfd4edc7c18",
    "rgb_scratch": "fa7df95674dbf3579e7fccd954e51e706b4734c1",
    "rgb_scratch_kin600": "6392a74c3180e706cabada39d8f40a50a48642e5",
}


class WeightsUnavailableError(BadInputError):
    """The pretrained weights are not cached and cannot be downloaded (offline, blocked, moved)."""


#: A download progress callback: ``(file name, bytes so far, total bytes or None)``.
Progress = Callable[[str, int, int | None], None]


def cache_root() -> Path:
    """The package's cache folder (:func:`napari_flow_features._cache_dirs.cache_root`).

    Returns
    -------
    pathlib.Path
        ``$NAPARI_FLOW_FEATURES_CACHE`` when set, else ``platformdirs.user_cache_dir
        ("napari-flow-features")`` (on Linux ``$XDG_CACHE_HOME/napari-flow-features``, by default
        ``~/.cache/napari-flow-features``).
    """
    return _cache_dirs.cache_root()


def cache_dir() -> Path:
    """Where checkpoints are kept: ``checkpoints/`` in :func:`cache_root`.

    Returns
    -------
    pathlib.Path
        The folder holding one sub-folder per checkpoint name (``checkpoints/<name>/model.ckpt.*``).
    """
    return _cache_dirs.weights_cache_dir()


def _check_name(name: str) -> None:
    if name not in CHECKPOINTS:
        raise BadInputError(f"Unknown checkpoint {name!r}; choose one of {', '.join(CHECKPOINTS)}")


def _published_index(name: str) -> bytes:
    return resources.files(__package__).joinpath("reference", f"{name}.index").read_bytes()


def published_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Variable names and shapes of a published checkpoint, from the index shipped with the package.

    Parameters
    ----------
    name : str
        One of :data:`CHECKPOINTS`.

    Returns
    -------
    dict of str to tuple of int
        Each variable's name and shape.

    Raises
    ------
    BadInputError
        ``name`` is not a published checkpoint.
    """
    from .checkpoint import checkpoint_shapes

    _check_name(name)
    data = _published_index(name)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.ckpt.index").write_bytes(data)
        return {k: tuple(v) for k, v in checkpoint_shapes(Path(tmp) / "model.ckpt").items()}


def published_index_sha256(name: str) -> str:
    """SHA-256 of the published ``model.ckpt.index`` of a checkpoint (shipped with the package).

    The index holds every tensor's offset, size and CRC32C, so a data file whose tensors read back
    under this index is the published one.

    Parameters
    ----------
    name : str
        One of :data:`CHECKPOINTS`.

    Returns
    -------
    str
        The hexadecimal digest.
    """
    _check_name(name)
    return hashlib.sha256(_published_index(name)).hexdigest()


def git_blob_sha1(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The git object id of a file's content (what ``git hash-object`` prints).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    chunk : int, optional
        Bytes read at a time.

    Returns
    -------
    str
        SHA-1 of ``b"blob <size>"``, a zero byte and the content, in hexadecimal.
    """
    digest = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_checkpoint(name: str, folder: str | os.PathLike[str]) -> Path:
    """Check that a folder holds a complete checkpoint with the published variables.

    Parameters
    ----------
    name : str
        The published checkpoint it should match (one of :data:`CHECKPOINTS`).
    folder : str or os.PathLike
        The folder holding ``model.ckpt.index`` and ``model.ckpt.data-00000-of-00001``.

    Returns
    -------
    pathlib.Path
        The checkpoint prefix (``folder/model.ckpt``).

    Raises
    ------
    BadInputError
        A file is missing, the variables or shapes differ from the published ones, or a tensor
        does not read back (a CRC32C mismatch).
    """
    prefix = Path(folder) / "model.ckpt"
    for f in FILES[1:]:
        if not (Path(folder) / f).is_file():
            raise BadInputError(f"Checkpoint file missing: {Path(folder) / f}")
    import tensorflow as tf  # after the cheap check: a missing copy is known without TensorFlow

    from .checkpoint import checkpoint_shapes

    got = {k: tuple(v) for k, v in checkpoint_shapes(prefix).items()}
    want = published_shapes(name)
    if got != want:
        diff = sorted(set(got) ^ set(want)) or sorted(k for k in got if got[k] != want.get(k))
        raise BadInputError(
            f"Downloaded {name} does not match the published variables (e.g. {diff[:3]}): {folder}"
        )
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for key in got:
            reader.get_tensor(key)
    except (tf.errors.DataLossError, tf.errors.OpError, ValueError) as exc:
        raise BadInputError(f"Downloaded {name} is corrupt ({exc}): {folder}") from exc
    return prefix


class _ProgressBridge:
    """The progress-bar object pooch's ``HTTPDownloader`` drives, reported as :data:`Progress`.

    pooch sets ``total`` from ``Content-Length`` (refused here when the disk cannot hold it), calls
    ``update(chunk_size)`` per chunk, then ``reset()``, ``update(total)`` and ``close()``.
    """

    def __init__(self, file: str, folder: Path, callback: Progress | None) -> None:
        self._file = file
        self._folder = folder
        self._callback = callback
        self._total: int | None = None
        self._finishing = False
        self.done = 0

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = int(value) or None
        if self._total is not None:
            check_free_space(self._folder, self._total)

    def update(self, n: int) -> None:
        if self._finishing:  # pooch's final update(total): the byte count is already known
            done = self._total if self._total is not None else self.done
        else:
            done = self.done + n
            if self._total is not None:
                done = min(done, self._total)
        if done != self.done or done == 0:
            self.done = done
            if self._callback is not None:
                self._callback(self._file, done, self._total)

    def reset(self) -> None:
        self._finishing = True

    def close(self) -> None:
        pass


class _Permanent(Exception):
    """A failure that trying again cannot fix (a refused connection, HTTP 4xx).

    pooch retries only ``ValueError`` and ``requests.RequestException``; this is neither.
    """


class _Downloader:
    """pooch's ``HTTPDownloader`` that fails at once when retrying cannot help."""

    def __init__(self, bridge: _ProgressBridge, timeout: float) -> None:
        import pooch

        self._http = pooch.HTTPDownloader(progressbar=bridge, chunk_size=1 << 20, timeout=timeout)

    def __call__(self, url: str, output_file: Any, pup: Any, check_only: bool = False) -> Any:
        import requests

        try:
            return self._http(url, output_file, pup, check_only=check_only)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            reason = exc.response.reason if exc.response is not None else ""
            message = f"Download failed: HTTP {status} {reason} for {url}"
            if 400 <= status < 500 and status not in (408, 429):
                raise _Permanent(message) from exc
            raise
        except requests.ConnectionError as exc:
            if isinstance(exc, requests.ConnectTimeout):
                raise
            raise _Permanent(f"Download failed ({exc}) for {url}") from exc


def _known_hashes(name: str, base: str, given: Mapping[str, str] | None) -> dict[str, str | None]:
    """Build pooch's registry (file to known hash or None) for one checkpoint.

    DeepMind's own URL gets the published SHA-256 (a mirror is checked against the published
    variables and CRC32Cs only); the caller's hashes come on top.
    """
    registry: dict[str, str | None] = dict.fromkeys(FILES)
    if base == DEFAULT_BASE_URL:
        registry.update({f: f"sha256:{h}" for f, h in PUBLISHED_SHA256[name].items()})
    for f, h in (given or {}).items():
        if f not in FILES:
            raise BadInputError(f"No checkpoint file {f!r}; the files are {', '.join(FILES)}")
        registry[f] = h if ":" in h else f"sha256:{h}"
    return registry


def _download_all(
    name: str,
    base: str,
    staging: Path,
    registry: dict[str, str | None],
    progress: Progress | None,
    timeout: float,
    retries: int,
) -> None:
    import pooch
    import requests

    pup = pooch.create(
        path=staging,
        base_url=f"{base}/{name}/",
        registry=registry,
        retry_if_failed=retries,
    )
    for f in FILES:
        url = f"{base}/{name}/{f}"
        logger.info("downloading %s", url)
        try:
            pup.fetch(f, downloader=_Downloader(_ProgressBridge(f, staging, progress), timeout))
        except _Permanent as exc:
            raise BadInputError(str(exc)) from exc
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            reason = exc.response.reason if exc.response is not None else ""
            raise BadInputError(f"Download failed: HTTP {status} {reason} for {url}") from exc
        except requests.RequestException as exc:
            raise BadInputError(f"Download failed ({exc}) for {url}") from exc
        except ValueError as exc:  # pooch: the hash differs from the known one
            raise BadInputError(
                f"Downloaded {f} of {name} is not the expected file ({exc}); it was not kept"
            ) from exc
        except OutOfSpaceError:
            raise
        except OSError as exc:
            if is_out_of_space(exc):
                raise OutOfSpaceError(
                    f"No space left on device while downloading {url} into {staging.parent} "
                    "(the partial download was removed)"
                ) from exc
            raise


def fetch_checkpoint(
    name: str,
    dest: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    progress: Progress | None = None,
    timeout: float = 60.0,
    *,
    known_hashes: Mapping[str, str] | None = None,
    retries: int = DEFAULT_RETRIES,
) -> Path:
    """Download a published checkpoint (or reuse a verified copy) and return its prefix.

    Files download into a hidden sibling folder owned by this process (``io/_atomic.py``: a later
    run removes it if this one is killed) and are flushed and moved into place only after every
    check passed; a failure leaves nothing behind.

    Parameters
    ----------
    name : str
        One of :data:`CHECKPOINTS`.
    dest : str or os.PathLike, optional
        The folder to hold the files; by default ``cache_dir() / name``.
    base_url : str, optional
        Where ``<name>/<file>`` are served; by default ``$NAPARI_FLOW_FEATURES_WEIGHTS_URL`` or
        DeepMind's repository (:data:`DEFAULT_BASE_URL`).
    progress : callable, optional
        Called as ``progress(file name, bytes so far, total or None)`` while downloading.
    timeout : float, optional
        Seconds to wait for the server to connect or send.
    known_hashes : mapping of str to str, optional
        Expected hashes of files (``"sha256:<hex>"`` or a bare SHA-256), checked by pooch; added to
        the published SHA-256 that DeepMind's URL is always checked against.
    retries : int, optional
        Attempts after the first for a failure that may pass when tried again (timeout, broken
        transfer, server error, hash mismatch); a refused connection or HTTP 4xx fails at once.

    Returns
    -------
    pathlib.Path
        The checkpoint prefix (``<folder>/model.ckpt``).

    Raises
    ------
    BadInputError
        Unknown name, a failed download (the message starts ``Download failed``), a file whose hash
        differs from the known one, or a checkpoint that fails verification.
    OutOfSpaceError
        The files do not fit on the disk.
    """
    _check_name(name)
    folder = Path(dest) if dest is not None else cache_dir() / name
    with contextlib.suppress(BadInputError):
        return verify_checkpoint(name, folder)
    base = (base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    registry = _known_hashes(name, base, known_hashes)
    ensure_output_dir(folder.parent)
    remove_stale_partials(folder.parent)
    staging = temp_sibling(folder)
    staging.mkdir()
    try:
        _download_all(name, base, staging, registry, progress, timeout, retries)
        if base == DEFAULT_BASE_URL:
            data = staging / FILES[2]
            if git_blob_sha1(data) != PUBLISHED_DATA_GIT_BLOB[name]:
                raise BadInputError(
                    f"Downloaded {name} is not the published checkpoint: its data file has git id "
                    f"{git_blob_sha1(data)}, the published one {PUBLISHED_DATA_GIT_BLOB[name]}"
                )
        verify_checkpoint(name, staging)
        fsync_path(staging)
        ensure_output_dir(folder)
        # The index last: a run killed between these renames leaves a set that fails verification
        # (the next fetch downloads again), never one that passes with mixed files.
        for f in sorted(FILES, key=lambda f: f == "model.ckpt.index"):
            os.replace(staging / f, folder / f)
        fsync_dir(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("verified checkpoint %s in %s", name, folder)
    return folder / "model.ckpt"


def terminal_progress() -> Progress:
    """A tqdm progress bar per file on stderr (the first-use download of the pretrained weights).

    Returns
    -------
    callable
        A :data:`Progress` callback for :func:`fetch_checkpoint`.
    """
    import sys

    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def show(file: str, done: int, total: int | None) -> None:
        bar = bars.get(file)
        if bar is None:
            bar = bars[file] = tqdm(
                total=total, desc=f"downloading {file}", unit="B", unit_scale=True,
                file=sys.stderr, leave=False,
            )  # fmt: skip
        if bar.disable:  # closed (its last byte was shown)
            return
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()

    return show


def pretrained_checkpoint(name: str, progress: Progress | None = None) -> Path:
    """The prefix of DeepMind's published checkpoint in the cache, downloaded on first use.

    Parameters
    ----------
    name : str
        One of :data:`CHECKPOINTS` (see :data:`PRETRAINED` for each stream's default).
    progress : callable, optional
        A :data:`Progress` callback for the download.

    Returns
    -------
    pathlib.Path
        The checkpoint prefix in :func:`cache_dir`.

    Raises
    ------
    WeightsUnavailableError
        Nothing is cached and the download failed (offline, blocked, moved); the message says how
        to provide the weights.
    """
    folder = cache_dir() / name
    try:
        return fetch_checkpoint(name, progress=progress)
    except BadInputError as exc:
        if "Download failed" not in str(exc):
            raise
        raise WeightsUnavailableError(
            f"DeepMind's pretrained {name} weights are not in the cache ({folder}) and could not be "
            f"downloaded ({exc}). Offline? On a machine with internet run `flow-features weights "
            f"fetch {name} --dest DIR` and copy DIR to {folder} (or set {CACHE_ENV} to a cache "
            "holding checkpoints/" + name + "), or give the copy directly: `--checkpoint "
            "DIR/model.ckpt` (config: weights.source deepmind, weights.checkpoint). Random weights "
            "only if you ask: `--weights random` (config: weights.source random)."
        ) from exc
