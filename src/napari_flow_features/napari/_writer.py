"""npe2 writers: feature tables from Points layers, images as .npy/.tif, flow as .flo/.npy.

Every write is atomic (temporary name in the target folder, then rename).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_points_table(path: str, data: Any, meta: dict) -> list[str]:
    """Points layer (``(t, y, x)`` + features) → ``.csv`` (+ JSON sidecar) or ``.parquet``."""
    from ..io.tables import points_to_table, write_table

    metadata = {**meta.get("metadata", {}), "layer_name": meta.get("name")}
    table = points_to_table(data, meta.get("features"), metadata)
    return [str(write_table(table, path))]


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Image layer → ``.npy`` or ``.tif``; a flow layer saves its raw float flow to ``.npy``."""
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
    """A flow layer's field → Middlebury ``.flo`` (one field: the current one of a sequence is not
    guessed, so a sequence is refused with a hint to save ``.npy``)."""
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
