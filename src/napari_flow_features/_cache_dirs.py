"""Every place this package keeps files between runs or during one: caches and temporaries.

One low module (standard library only, ``platformdirs`` on first use) so that a reader of a video
(``io/``) and the model code (``model/``) find the same folders without importing each other, and
so that one command can list and clear them all (docs/configuration.md, "Where files go").

=====================  ====================================================  ========================
what                   where                                                 function
=====================  ====================================================  ========================
cache root             ``$NAPARI_FLOW_FEATURES_CACHE``, else the user cache  :func:`cache_root`
                       folder (Linux: ``~/.cache/napari-flow-features``)
DeepMind checkpoints   ``<root>/checkpoints/<name>/``                        :func:`weights_cache_dir`
compiled models        ``<root>/runtimes/``                                  :func:`runtime_cache_dir`
video seek indexes     ``<root>/video-index/``                               :func:`video_index_dir`
temporaries of a run   owner-tagged ``.<stem>.partial-…`` folders in         :func:`temp_root`
                       ``$TMPDIR`` (``io._atomic.make_work_dir``)
=====================  ====================================================  ========================

A flow cache (``--flow-cache DIR``) is a folder the user names; it has no default location.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: The environment variable that moves the whole cache.
CACHE_ENV = "NAPARI_FLOW_FEATURES_CACHE"
#: The application name of the user cache folder.
APP_NAME = "napari-flow-features"

#: Stems of the owner-tagged work folders runs make in :func:`temp_root` (``.<stem>.partial-…``).
WORK_DIR_STEM = "flow-features"
#: The folder a LocalCluster's scheduler and workers keep their scratch space in.
DASK_DIR_STEM = "flow-features-dask"
#: The folder a command that writes several files at once (``sample``) fills before moving them.
STAGING_DIR_STEM = "flow-features-staging"


def cache_root() -> Path:
    """The package's cache folder.

    Returns
    -------
    pathlib.Path
        ``$NAPARI_FLOW_FEATURES_CACHE`` when set, else ``platformdirs.user_cache_dir
        ("napari-flow-features")`` (on Linux ``$XDG_CACHE_HOME/napari-flow-features``, by default
        ``~/.cache/napari-flow-features``).
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def weights_cache_dir() -> Path:
    """Where downloaded checkpoints are kept: ``checkpoints/`` in :func:`cache_root`.

    Returns
    -------
    pathlib.Path
        The folder holding one sub-folder per checkpoint name (``checkpoints/<name>/model.ckpt.*``).
    """
    return cache_root() / "checkpoints"


def runtime_cache_dir() -> Path:
    """Where compiled models (the OpenVINO runtime's) are kept: ``runtimes/`` in :func:`cache_root`.

    Returns
    -------
    pathlib.Path
        The folder of compiled models, one entry per weights, input shape and precision.
    """
    return cache_root() / "runtimes"


def video_index_dir() -> Path:
    """Where the seek indexes of videos are kept: ``video-index/`` in :func:`cache_root`.

    Returns
    -------
    pathlib.Path
        The folder of ``<key>.npz`` files, keyed by a video's path, size and modification time.
    """
    return cache_root() / "video-index"


def legacy_cache_dirs() -> list[Path]:
    """Folders earlier versions used for caches now kept elsewhere (to list and clear).

    Returns
    -------
    list of pathlib.Path
        ``checkpoints/runtimes`` and ``checkpoints/video-index`` in :func:`cache_root`: earlier
        builds kept compiled models and video indexes beside the checkpoints.
    """
    return [weights_cache_dir() / "runtimes", weights_cache_dir() / "video-index"]


def temp_root() -> Path:
    """The temporary folder runs make their owner-tagged work folders in.

    Returns
    -------
    pathlib.Path
        :func:`tempfile.gettempdir` (``$TMPDIR`` when set).
    """
    return Path(tempfile.gettempdir())
