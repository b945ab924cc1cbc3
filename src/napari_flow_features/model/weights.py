"""Download DeepMind's published kinetics-i3d checkpoints, verified, atomically, with a cache.

Files come from ``<base URL>/<name>/{checkpoint, model.ckpt.index, model.ckpt.data-00000-of-00001}``
(the kinetics-i3d repository's ``data/checkpoints`` folder by default). A download is accepted only
when its variable names and shapes equal those of the published index shipped with this package and
every tensor reads back (TensorFlow checks each tensor's CRC32C as it reads).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from ..errors import BadInputError
from ..io._atomic import (
    check_free_space,
    ensure_output_dir,
    fsync_dir,
    fsync_path,
    is_out_of_space,
    remove_stale_partials,
    temp_sibling,
)

CHECKPOINTS = ("flow_imagenet", "flow_scratch", "rgb_imagenet", "rgb_scratch", "rgb_scratch_kin600")
FILES = ("checkpoint", "model.ckpt.index", "model.ckpt.data-00000-of-00001")
DEFAULT_BASE_URL = "https://github.com/deepmind/kinetics-i3d/raw/master/data/checkpoints"
URL_ENV = "NAPARI_FLOW_FEATURES_WEIGHTS_URL"
CACHE_ENV = "NAPARI_FLOW_FEATURES_CACHE"
#: The published checkpoint each stream loads by default (``weights.source: pretrained``).
PRETRAINED = {"flow": "flow_imagenet", "rgb": "rgb_imagenet"}


class WeightsUnavailableError(BadInputError):
    """The pretrained weights are not cached and cannot be downloaded (offline, blocked, moved)."""


Progress = Callable[[str, int, int | None], None]  # (file name, bytes so far, total or None)


def cache_dir() -> Path:
    """Where checkpoints are kept: ``$NAPARI_FLOW_FEATURES_CACHE`` or ``~/.cache/napari-flow-features``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "napari-flow-features"
    )
    return Path(root) / "checkpoints"


def published_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Variable names and shapes of the published checkpoint ``name`` (from the shipped index)."""
    from .checkpoint import checkpoint_shapes

    if name not in CHECKPOINTS:
        raise BadInputError(f"Unknown checkpoint {name!r}; choose one of {', '.join(CHECKPOINTS)}")
    data = resources.files(__package__).joinpath("reference", f"{name}.index").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.ckpt.index").write_bytes(data)
        return {k: tuple(v) for k, v in checkpoint_shapes(Path(tmp) / "model.ckpt").items()}


def published_index_sha256(name: str) -> str:
    """SHA-256 of the published ``model.ckpt.index`` of ``name`` (shipped with the package). The
    index holds every tensor's offset, size and CRC32C, so a data file whose tensors read back
    under this index is the published one.
    """
    import hashlib

    data = resources.files(__package__).joinpath("reference", f"{name}.index").read_bytes()
    return hashlib.sha256(data).hexdigest()


def verify_checkpoint(name: str, folder: str | os.PathLike) -> Path:
    """Check a downloaded checkpoint; returns its prefix or raises :class:`BadInputError`."""
    import tensorflow as tf

    from .checkpoint import checkpoint_shapes

    prefix = Path(folder) / "model.ckpt"
    for f in FILES[1:]:
        if not (Path(folder) / f).is_file():
            raise BadInputError(f"Checkpoint file missing: {Path(folder) / f}")
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


def _download(url: str, target: Path, progress: Progress | None, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
            total = response.headers.get("Content-Length")
            total = int(total) if total is not None and total.isdigit() else None
            if total is not None:
                check_free_space(target.parent, total)
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                done += len(block)
                if progress is not None:
                    progress(target.name, done, total)
    except urllib.error.HTTPError as exc:
        raise BadInputError(f"Download failed: HTTP {exc.code} {exc.reason} for {url}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise BadInputError(f"Download failed ({exc}) for {url}") from exc
    except OSError as exc:
        if is_out_of_space(exc):
            from ..errors import OutOfSpaceError

            raise OutOfSpaceError(
                f"No space left on device while downloading {url} into {target.parent} "
                "(the partial download was removed)"
            ) from exc
        raise
    if total is not None and done != total:
        raise BadInputError(f"Download of {url} ended early: {done} of {total} bytes")


def fetch_checkpoint(
    name: str,
    dest: str | os.PathLike | None = None,
    base_url: str | None = None,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download checkpoint ``name`` into ``dest`` (default: the cache) and return its prefix.

    A complete, verified copy already in ``dest`` is reused. Files download into a hidden sibling
    folder owned by this process (``io/_atomic.py``: a later run removes it if this one is killed)
    and are flushed and moved into place only after verification; a failure leaves nothing behind.
    A full disk raises :class:`~napari_flow_features.errors.OutOfSpaceError`.
    """
    if name not in CHECKPOINTS:
        raise BadInputError(f"Unknown checkpoint {name!r}; choose one of {', '.join(CHECKPOINTS)}")
    folder = Path(dest) if dest is not None else cache_dir() / name
    with contextlib.suppress(BadInputError):
        return verify_checkpoint(name, folder)
    base = (base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    ensure_output_dir(folder.parent)
    remove_stale_partials(folder.parent)
    staging = temp_sibling(folder)
    staging.mkdir()
    try:
        for f in FILES:
            _download(f"{base}/{name}/{f}", staging / f, progress, timeout)
        verify_checkpoint(name, staging)
        if base == DEFAULT_BASE_URL:  # DeepMind's own files: byte for byte the published index
            from ..io._atomic import sha256_file

            got = sha256_file(staging / "model.ckpt.index")
            if got != published_index_sha256(name):
                raise BadInputError(
                    f"Downloaded {name} is not the published checkpoint: its index has SHA-256 "
                    f"{got}, the published one {published_index_sha256(name)}"
                )
        fsync_path(staging)
        ensure_output_dir(folder)
        # The index last: a run killed between these renames leaves a set that fails verification
        # (the next fetch downloads again), never one that passes with mixed files.
        for f in sorted(FILES, key=lambda f: f == "model.ckpt.index"):
            os.replace(staging / f, folder / f)
        fsync_dir(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / "model.ckpt"


def terminal_progress() -> Progress:
    """A tqdm progress bar per file on stderr (the first-use download of the pretrained weights)."""
    import sys

    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def show(file: str, done: int, total: int | None) -> None:
        bar = bars.get(file)
        if bar is None:
            bar = bars[file] = tqdm(
                total=total, desc=f"downloading {file}", unit="B", unit_scale=True,
                file=sys.stderr, leave=False,
            )  # fmt: skip
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()

    return show


def pretrained_checkpoint(name: str, progress: Progress | None = None) -> Path:
    """The prefix of DeepMind's published checkpoint ``name`` in the cache, downloaded (verified,
    atomically) on first use. Without a network and without a cached copy this is a
    :class:`WeightsUnavailableError` that says how to provide the weights.
    """
    folder = cache_dir() / name
    try:
        return fetch_checkpoint(name, progress=progress)
    except BadInputError as exc:
        if "Download failed" not in str(exc) and "ended early" not in str(exc):
            raise
        raise WeightsUnavailableError(
            f"DeepMind's pretrained {name} weights are not in the cache ({folder}) and could not be "
            f"downloaded ({exc}). Offline? On a machine with internet run `flow-features weights "
            f"fetch {name} --dest DIR` and copy DIR to {folder} (or set {CACHE_ENV} to a cache "
            "holding checkpoints/" + name + "), or give the copy directly: `--checkpoint "
            "DIR/model.ckpt` (config: weights.source deepmind, weights.checkpoint). Random weights "
            "only if you ask: `--weights random` (config: weights.source random)."
        ) from exc
