"""npe2 writers: feature tables from Points layers, images as .npy/.tif, flow as .flo/.npy.

Every write is atomic (temporary name in the target folder, then rename).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLUGIN = "napari-flow-features"

#: Layer metadata keys this plugin writes (sample landmarks, tables read, extraction runs).
OUR_METADATA = ("landmark", "features_run", "source_type", "endpoint", "post_encoder",
                "layer_name", "landmark_key")  # fmt: skip


def carries_our_data(meta: dict) -> bool:
    """Tell whether a Points layer carries this plugin's data.

    Parameters
    ----------
    meta : dict
        The layer's attributes as npe2 hands them to a writer (``metadata``, ``features``).

    Returns
    -------
    bool
        True with any of our metadata keys or feature columns ``f0000…``.
    """
    from ..io.tables import feature_columns

    metadata = meta.get("metadata") or {}
    features = meta.get("features")
    has_features = features is not None and bool(feature_columns(list(features)))
    return any(key in metadata for key in OUR_METADATA) or has_features


def on_activate(*_: Any) -> None:
    """Put our Points writer first when npe2 activates the plugin in a session.

    Saving a landmark or feature layer to ``.csv`` then picks the feature-table writer by default
    (it hands plain Points layers to napari's own CSV writer).

    Parameters
    ----------
    *_ : object
        npe2's activation context (unused).
    """
    prefer_points_writer()


def prefer_points_writer() -> bool:
    """Put this plugin's Points writer first in npe2's writer list.

    npe2 orders writers of the same specificity by registration, which puts napari's own CSV writer
    first.

    Returns
    -------
    bool
        Whether the order could be changed (npe2 keeps the list in a private attribute).
    """
    from npe2 import PluginManager

    writers = getattr(getattr(PluginManager.instance(), "_contrib", None), "_writers", None)
    if not isinstance(writers, list):
        return False
    ours = [w for w in writers if w[3].command == f"{PLUGIN}.write_points_table"]
    writers[:] = ours + [w for w in writers if w[3].command != f"{PLUGIN}.write_points_table"]
    return bool(ours)


def write_points_table(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Points layer as a feature table: ``.csv`` (+ JSON sidecar) or ``.parquet``.

    A plain Points layer (none of our metadata or features) saved to ``.csv`` is written by
    napari's own CSV writer, as it would be without this plugin.

    Parameters
    ----------
    path : str
        The output file.
    data : numpy.ndarray
        The layer's ``(N, 3)`` ``(t, y, x)`` points.
    meta : dict
        The layer's attributes (``name``, ``metadata``, ``features``).

    Returns
    -------
    list of str
        The written path.

    Raises
    ------
    BadInputError
        The points are not ``(t, y, x)`` rows, or the suffix is not a table format.
    """
    from ..io.tables import points_to_table, write_table

    if not carries_our_data(meta) and str(path).lower().endswith(".csv"):
        written = _napari_points_csv(path, data, meta)
        if written is not None:
            return written
    metadata = {**meta.get("metadata", {}), "layer_name": meta.get("name")}
    table = points_to_table(data, meta.get("features"), metadata)
    return [str(write_table(table, path))]


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write an Image layer as ``.npy`` or ``.tif``; a flow layer saves its raw float flow to ``.npy``.

    Parameters
    ----------
    path : str
        The output file.
    data : array_like
        The layer's data (a lazy array is read whole).
    meta : dict
        The layer's attributes (``metadata``, ``rgb``).

    Returns
    -------
    list of str
        The written path.

    Raises
    ------
    BadInputError
        The suffix is neither ``.npy`` nor ``.tif``/``.tiff``.
    """
    import numpy as np

    from ..errors import BadInputError
    from ..io._atomic import atomic_write_path
    from ..io.flow_files import write_flow_npy

    path_ = Path(path)
    suffix = path_.suffix.lower()
    flow = meta.get("metadata", {}).get("flow")
    if suffix == ".npy":
        if flow is not None:
            return [str(write_flow_npy(path_, flow))]
        arr = np.asarray(data)
        with atomic_write_path(path_) as tmp:
            np.save(tmp, arr, allow_pickle=False)
        return [str(path_)]
    if suffix in (".tif", ".tiff"):
        import tifffile

        arr = np.asarray(data)
        with atomic_write_path(path_) as tmp:
            tifffile.imwrite(tmp, arr, photometric="rgb" if meta.get("rgb") else "minisblack")
        return [str(path_)]
    raise BadInputError(f"Images are saved as .npy or .tif, not {suffix!r}: {path}")


def write_flo(path: str, data: Any, meta: dict) -> list[str]:
    """Write a flow layer's field as a Middlebury ``.flo`` file.

    ``.flo`` holds one field; the current one of a sequence is not guessed, so a sequence is
    refused with a hint to save ``.npy``.

    Parameters
    ----------
    path : str
        The output file.
    data : array_like
        The layer's data (unused: the raw flow is in its metadata).
    meta : dict
        The layer's attributes; ``metadata['flow']`` holds the flow.

    Returns
    -------
    list of str
        The written path.

    Raises
    ------
    BadInputError
        The layer holds no flow, or a sequence of more than one field.
    """
    import numpy as np

    from ..errors import BadInputError
    from ..io.flow_files import write_flo as _write_flo

    flow = meta.get("metadata", {}).get("flow")
    if flow is None:
        raise BadInputError(
            f"Layer {meta.get('name')!r} holds no optical flow; only flow layers save as .flo"
        )
    if flow.ndim == 4:
        if flow.shape[0] != 1:
            raise BadInputError(
                f".flo holds one field but {meta.get('name')!r} has {flow.shape[0]}; save as .npy"
            )
        flow = flow[0]
    return [str(_write_flo(path, np.asarray(flow)))]


def _napari_points_csv(path: str, data: Any, meta: dict) -> list[str] | None:
    """Write napari's own Points CSV (``index, axis-0, …``) atomically.

    ``None`` when napari's writer is not importable.
    """
    try:
        from napari_builtins.io import napari_write_points
    except ImportError:
        return None
    from ..io._atomic import atomic_write_path

    with atomic_write_path(Path(path)) as tmp:
        napari_write_points(str(tmp), data, meta)
    return [str(path)]
