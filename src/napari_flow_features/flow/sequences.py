"""I3D input preparation: flow preprocessing and sliding windows over frame-aligned flow.

Plain NumPy (no TensorFlow), so the napari process can use it. Conventions (DESIGN.md):

- preprocessing clips flow to ``[-bound, bound]`` and scales it to ``[-1, 1]``; DeepMind also
  quantised it to 256 levels (a linear map of ``[-20, 20]`` onto 0..255) first;
- flow of a T-frame video has T-1 fields; for windowing it is edge-padded at the end to T entries so
  that row t of every output belongs to video frame t (the padded entries are reported);
- windows have L frames at stride S, the last one aligned to the end; a video shorter than L is
  edge-padded to L.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError


def preprocess_flow(
    flow: np.ndarray,
    bound: float = 20.0,
    quantize: bool = False,
    check_finite: bool = True,
    *,
    flow_bound: float | None = None,
) -> np.ndarray:
    """Clip flow to ``[-bound, bound]`` px, optionally quantise to 256 levels, scale to ``[-1, 1]``.

    Quantisation is DeepMind's: ``q = round((f + bound) / (2 bound) * 255)`` in 0..255, then
    ``q / 255 * 2 - 1``.

    Parameters
    ----------
    flow : array_like
        Optical flow in pixels per frame, ``(..., 2)`` with ``[..., 0]`` = dx and ``[..., 1]`` = dy.
    bound : float
        Clipping bound in pixels per frame (DeepMind: 20).
    quantize : bool
        Quantise to 256 levels before scaling, as DeepMind's released flow was.
    check_finite : bool
        Refuse NaN or infinite flow (it would poison every feature of the clip).
    flow_bound : float, optional
        ``bound`` under the configuration's name (``flow_bound``, docs/configuration.md).

    Returns
    -------
    numpy.ndarray
        A new float32 array of the same shape, in ``[-1, 1]``.

    Raises
    ------
    BadInputError
        For a non-positive ``bound``, a last axis that is not 2, or non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> preprocess_flow(np.array([[-30.0, 10.0]]))
    array([[-1. ,  0.5]], dtype=float32)
    """
    bound = _one_of("bound", bound, 20.0, "flow_bound", flow_bound)
    return preprocess_flow_inplace(np.array(flow, dtype=np.float32), bound, quantize, check_finite)


def _one_of(seed_name: str, seed_value: Any, default: Any, name: str, value: Any) -> Any:
    """A setting given under its configuration name or the seed's (not both, differently)."""
    if value is None:
        return seed_value
    if seed_value != default and seed_value != value:
        raise BadInputError(f"{seed_name}={seed_value!r} and {name}={value!r} disagree: give one")
    return value


def preprocess_flow_inplace(
    arr: np.ndarray, bound: float = 20.0, quantize: bool = False, check_finite: bool = True
) -> np.ndarray:
    """:func:`preprocess_flow` overwriting a float32 array (no copies of a large clip).

    Parameters
    ----------
    arr : numpy.ndarray
        Float32 flow ``(..., 2)``; overwritten.
    bound, quantize, check_finite
        As for :func:`preprocess_flow`.

    Returns
    -------
    numpy.ndarray
        ``arr`` itself.
    """
    if bound <= 0:
        raise BadInputError(f"bound must be positive, got {bound}")
    if arr.dtype != np.float32:
        raise BadInputError(f"In-place preprocessing needs float32 flow, got {arr.dtype}")
    if arr.shape[-1:] != (2,):
        raise BadInputError(f"Flow must end with a (dx, dy) axis of size 2; got shape {arr.shape}")
    if check_finite and not np.isfinite(arr.sum()):  # one pass; any NaN or inf makes the sum so
        bad = int((~np.isfinite(arr)).sum())
        raise BadInputError(f"Flow contains {bad} NaN or infinite values")
    np.clip(arr, -bound, bound, out=arr)
    if quantize:
        arr += np.float32(bound)
        arr *= np.float32(255.0 / (2.0 * bound))
        np.round(arr, out=arr)
        arr *= np.float32(2.0 / 255.0)
        arr -= np.float32(1.0)
    else:
        arr *= np.float32(1.0 / bound)
    return arr


def window_starts(n_frames: int, length: int = 16, stride: int = 8) -> list[int]:
    """First frame of each window: 0, S, 2S, … with the last window aligned to the end.

    Parameters
    ----------
    n_frames : int
        Frames in the video (T).
    length : int
        Window length L in frames.
    stride : int
        Frames between window starts S.

    Returns
    -------
    list of int
        The window starts; ``[0]`` when the video is no longer than one window.
    """
    if length < 1 or stride < 1:
        raise BadInputError(f"clip length and stride must be at least 1; got {length}, {stride}")
    if n_frames < 1:
        raise BadInputError("No frames to window")
    if n_frames <= length:
        return [0]
    starts = list(range(0, n_frames - length + 1, stride))
    if starts[-1] != n_frames - length:
        starts.append(n_frames - length)
    return starts


@dataclass(frozen=True)
class FlowWindow:
    """One clip of ``length`` frame-aligned flow entries.

    ``frames[i]`` is the video frame whose flow sits at position i (repeated at edges when padded);
    ``padded[i]`` says the entry is a copy (end of video, or a video shorter than the clip).
    """

    source: str
    index: int
    start: int
    frames: np.ndarray
    padded: np.ndarray

    def to_dict(self) -> dict:
        """The window as JSON-ready values (for the index written beside saved sequences)."""
        return {
            "source": self.source,
            "index": self.index,
            "start": self.start,
            "frames": self.frames.tolist(),
            "padded": self.padded.tolist(),
        }


def frame_windows(
    n_frames: int, length: int = 16, stride: int = 8, source: str = "", n_flow: int | None = None
) -> list[FlowWindow]:
    """Windows over a video of ``n_frames`` frames whose flow has ``n_flow`` (default T-1) fields.

    Parameters
    ----------
    n_frames : int
        Frames in the video (T).
    length, stride : int
        Window length L and stride S in frames.
    source : str
        Recorded in each window (the flow file).
    n_flow : int, optional
        Flow fields available; positions at or past it are padded copies.

    Returns
    -------
    list of FlowWindow
        One per start of :func:`window_starts`.
    """
    n_flow = n_frames - 1 if n_flow is None else n_flow
    out = []
    for k, s in enumerate(window_starts(n_frames, length, stride)):
        positions = np.arange(s, s + length)
        frames = np.minimum(positions, n_frames - 1)
        padded = (positions >= n_frames) | (frames >= n_flow)
        out.append(FlowWindow(source, k, s, frames, padded))
    return out


def window_data(flow: Any, window: FlowWindow) -> np.ndarray:
    """The ``(L, H, W, 2)`` raw flow of a window (edge-padded by repeating the last flow field).

    Parameters
    ----------
    flow : array_like
        A ``(T-1, H, W, 2)`` flow sequence (a memory map or lazy array is read only where needed).
    window : FlowWindow
        The window to read.

    Returns
    -------
    numpy.ndarray
        A new float32 array ``(L, H, W, 2)``.
    """
    n_flow = flow.shape[0]
    idx = np.minimum(window.frames, n_flow - 1)
    lo, hi = int(idx.min()), int(idx.max()) + 1
    if hi - lo == len(idx):  # no padding: one copy straight from the (memory-mapped) flow
        return np.array(flow[lo:hi], dtype=np.float32)
    return np.asarray(flow[lo:hi], dtype=np.float32)[idx - lo]


def _natural_key(p: Path) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]


def find_flow_files(flow_dir: str | os.PathLike) -> list[Path]:
    """Flow sequences in a folder, in natural order (``2`` before ``10``).

    Window files written by :meth:`OpticalFlowSequenceLoader.save_sequences` are skipped; a folder
    that itself holds ``.flo`` files is one sequence.

    Parameters
    ----------
    flow_dir : str or os.PathLike
        The folder.

    Returns
    -------
    list of pathlib.Path
        ``.npy``/``.npz`` files and sub-folders holding ``.flo`` files.

    Raises
    ------
    BadInputError
        When the folder is missing or holds no flow.
    """
    flow_dir = Path(flow_dir)
    if not flow_dir.is_dir():
        raise BadInputError(f"Flow folder not found: {flow_dir}")
    found = [
        p
        for p in flow_dir.iterdir()
        if not p.name.startswith(".")
        and not p.name.endswith("_sequences.npy")  # our own window files
        and (
            (p.is_file() and p.suffix.lower() in (".npy", ".npz"))
            or (p.is_dir() and any(p.glob("*.flo")))
        )
    ]
    if not found and any(flow_dir.glob("*.flo")):
        found = [flow_dir]  # the folder itself is one .flo sequence
    if not found:
        raise BadInputError(f"No flow files (.npy, .npz, folders of .flo) in {flow_dir}")
    return sorted(found, key=_natural_key)


def _open_sequence(path: Path) -> Any:
    from ..io.flow_files import read_flow

    flow = read_flow(path)
    if flow.ndim == 3:
        raise BadInputError(
            f"Need a flow sequence (T, H, W, 2), got one field {flow.shape}: {path}"
        )
    return flow


class OpticalFlowSequenceLoader:
    """Lazily yield preprocessed I3D windows from the flow files in a folder.

    Iterating yields ``(FlowWindow, data)`` with ``data`` of shape ``(L, H, W, 2)`` float32,
    reading only the flow fields each window covers.

    Parameters
    ----------
    flow_dir : str, os.PathLike or sequence of them
        A folder of ``.npy``/``.npz`` flow sequences and/or sub-folders of ``.flo`` files, or a list
        of such paths.
    sequence_length : int
        Window length L in frames (the seed's name; ``clip_length=`` is the same).
    stride : int
        Frames between window starts S (the last window is aligned to the end).
    bound : float
        Clipping bound of the preprocessing (see :func:`preprocess_flow`; ``flow_bound=`` is the
        same).
    quantize : bool
        Quantise to 256 levels as DeepMind did.
    preprocess : bool
        ``False`` yields the raw flow in pixels.
    clip_length, flow_bound : optional
        ``sequence_length`` and ``bound`` under the configuration's names
        (docs/configuration.md).

    Examples
    --------
    >>> loader = OpticalFlowSequenceLoader("flows", sequence_length=16, stride=8)  # doctest: +SKIP
    >>> batch = loader.create_sequence_batch(loader.files, batch_size=8)  # doctest: +SKIP
    >>> batch.shape  # doctest: +SKIP
    (8, 16, 240, 320, 2)
    """

    def __init__(
        self,
        flow_dir: str | os.PathLike | Sequence[str | os.PathLike],
        sequence_length: int = 16,
        stride: int = 8,
        bound: float = 20.0,
        quantize: bool = False,
        preprocess: bool = True,
        *,
        clip_length: int | None = None,
        flow_bound: float | None = None,
    ) -> None:
        sequence_length = _one_of(
            "sequence_length", sequence_length, 16, "clip_length", clip_length
        )
        bound = _one_of("bound", bound, 20.0, "flow_bound", flow_bound)
        #: The folder given (None for a list of files): relative names are looked up in it.
        self.flow_dir: Path | None = None
        if isinstance(flow_dir, (str, os.PathLike)):
            self.flow_dir = Path(flow_dir)
            self.files = find_flow_files(flow_dir)
        else:
            self.files = [Path(p) for p in flow_dir]
            if not self.files:
                raise BadInputError("No flow files given")
        window_starts(1, sequence_length, stride)  # validates length and stride
        self.sequence_length = int(sequence_length)
        self.stride = int(stride)
        self.bound = float(bound)
        self.quantize = bool(quantize)
        self.preprocess = bool(preprocess)

    def windows(self, path: str | os.PathLike) -> list[FlowWindow]:
        """The windows of one flow file (the video had one frame more than the flow).

        Parameters
        ----------
        path : str or os.PathLike
            A flow sequence.

        Returns
        -------
        list of FlowWindow
            Its windows, in order.
        """
        flow = _open_sequence(Path(path))
        return frame_windows(flow.shape[0] + 1, self.sequence_length, self.stride, str(path))

    def iter_file(self, path: str | os.PathLike) -> Iterator[tuple[FlowWindow, np.ndarray]]:
        """Windows of one file, reading only the flow each window covers.

        Parameters
        ----------
        path : str or os.PathLike
            A flow sequence.

        Yields
        ------
        tuple of (FlowWindow, numpy.ndarray)
            Each window and its ``(L, H, W, 2)`` float32 data (preprocessed unless
            ``preprocess=False``).
        """
        flow = _open_sequence(Path(path))
        for window in frame_windows(
            flow.shape[0] + 1, self.sequence_length, self.stride, str(path)
        ):
            data = window_data(flow, window)
            if self.preprocess:
                data = preprocess_flow(data, self.bound, self.quantize)
            yield window, data

    def __iter__(self) -> Iterator[tuple[FlowWindow, np.ndarray]]:
        return self._iter_files(self.files)

    def _iter_files(self, files: Sequence[Path]) -> Iterator[tuple[FlowWindow, np.ndarray]]:
        for path in files:
            yield from self.iter_file(path)

    def __len__(self) -> int:
        return sum(len(self.windows(p)) for p in self.files)

    def iter_batches(
        self, batch_size: int = 8, flow_files: Sequence[str | os.PathLike] | None = None
    ) -> Iterator[tuple[np.ndarray, list[FlowWindow]]]:
        """Batches of consecutive windows, across files in order; all files must share H and W.

        Parameters
        ----------
        batch_size : int
            Windows per batch (the last batch may hold fewer).
        flow_files : sequence of str or os.PathLike, optional
            The files to read (see :meth:`create_sequence_batch`); default: :attr:`files`.

        Yields
        ------
        tuple of (numpy.ndarray, list of FlowWindow)
            A ``[B, L, H, W, 2]`` float32 batch and the window of each of its clips.

        Raises
        ------
        BadInputError
            For a ``batch_size`` below 1 or files of different frame sizes.
        """
        if batch_size < 1:
            raise BadInputError(f"batch_size must be at least 1, got {batch_size}")
        files = self.files if flow_files is None else self._resolve(flow_files)
        batch: list[np.ndarray] = []
        infos: list[FlowWindow] = []
        for window, data in self._iter_files(files):
            if batch and data.shape != batch[0].shape:
                raise BadInputError(
                    f"Cannot batch flow of different sizes: {window.source} is {data.shape[1:3]}, "
                    f"{infos[0].source} is {batch[0].shape[1:3]}"
                )
            batch.append(data)
            infos.append(window)
            if len(batch) == batch_size:
                yield np.stack(batch), infos
                batch, infos = [], []
        if batch:
            yield np.stack(batch), infos

    def _resolve(self, flow_files: Sequence[str | os.PathLike]) -> list[Path]:
        """Paths as given, or, for a relative name that does not exist, inside :attr:`flow_dir`."""
        if isinstance(flow_files, (str, os.PathLike)):
            flow_files = [flow_files]  # one file, not the characters of its name
        paths = []
        for name in flow_files:
            path = Path(name)
            if not path.exists() and not path.is_absolute() and self.flow_dir is not None:
                inside = self.flow_dir / path
                path = inside if inside.exists() else path
            paths.append(path)
        if not paths:
            raise BadInputError("No flow files given")
        return paths

    def create_sequence_batch(
        self, flow_files: Sequence[str | os.PathLike] | None = None, batch_size: int = 8
    ) -> np.ndarray:
        """The first ``batch_size`` windows of ``flow_files`` as one ``[B, L, H, W, 2]`` batch.

        Windows follow DESIGN.md with this loader's length, stride and preprocessing: the windows
        of the first file in order, then those of the next, until ``batch_size`` are taken.

        Parameters
        ----------
        flow_files : sequence of str or os.PathLike, optional
            Flow sequences (``.npy``, ``.npz``, folders of ``.flo``); a relative name that does not
            exist as given is looked up in the loader's folder. Default: all of :attr:`files`.
        batch_size : int
            Windows in the batch; fewer when the files hold fewer.

        Returns
        -------
        numpy.ndarray
            ``[B, L, H, W, 2]`` float32, preprocessed to ``[-1, 1]`` unless ``preprocess=False``.

        Raises
        ------
        BadInputError
            For a missing or unreadable file, files of different frame sizes, or a
            ``batch_size`` below 1.

        Examples
        --------
        >>> loader = OpticalFlowSequenceLoader("flows", sequence_length=16, stride=8)  # doctest: +SKIP
        >>> loader.create_sequence_batch(["a.npy", "b.npy"], batch_size=8).shape  # doctest: +SKIP
        (8, 16, 240, 320, 2)
        """
        for batch, _ in self.iter_batches(batch_size, flow_files):
            return batch
        raise BadInputError("The flow files hold no windows")

    def save_sequences(self, output_dir: str | os.PathLike) -> list[Path]:
        """Write each file's windows as ``<stem>_sequences.npy`` ``[N, L, H, W, 2]``.

        Written streamed and atomically, with ``<stem>_sequences.json`` listing every window's
        start, frames and padding and the preprocessing used.

        Parameters
        ----------
        output_dir : str or os.PathLike
            Created if missing.

        Returns
        -------
        list of pathlib.Path
            The ``.npy`` files written, one per flow file.
        """
        from ..io._atomic import atomic_write_path
        from ..io.npy_stream import NpyWriter

        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for path in self.files:
            flow = _open_sequence(path)
            windows = frame_windows(flow.shape[0] + 1, self.sequence_length, self.stride, str(path))
            stem = path.stem if path.is_file() else path.name
            out = output_dir / f"{stem}_sequences.npy"
            shape = (len(windows), self.sequence_length, *flow.shape[1:3], 2)
            # Buffered writes, space reserved up front: a full disk is an error, not a SIGBUS.
            with NpyWriter(out, shape, np.float32) as arr:
                for window in windows:
                    data = window_data(flow, window)
                    if self.preprocess:
                        data = preprocess_flow(data, self.bound, self.quantize)
                    arr.write(data[None])
            index = {
                "source": str(path),
                "sequence_length": self.sequence_length,
                "stride": self.stride,
                "bound": self.bound,
                "quantize": self.quantize,
                "preprocessed": self.preprocess,
                "windows": [w.to_dict() for w in windows],
            }
            with atomic_write_path(out.with_suffix(".json")) as tmp:
                tmp.write_text(json.dumps(index))
            written.append(out)
        return written


def create_sequence_batch(
    flow_files: Sequence[str | os.PathLike],
    batch_size: int = 8,
    sequence_length: int = 16,
    stride: int = 8,
    bound: float = 20.0,
    quantize: bool = False,
) -> np.ndarray:
    """The first ``batch_size`` preprocessed windows of ``flow_files`` as ``[B, L, H, W, 2]`` float32.

    The function form of :meth:`OpticalFlowSequenceLoader.create_sequence_batch`.

    Parameters
    ----------
    flow_files : sequence of str or os.PathLike
        Flow sequences (``.npy``, ``.npz``, folders of ``.flo``).
    batch_size : int
        Windows in the batch; fewer when the files hold fewer.
    sequence_length, stride : int
        Window length L and stride S in frames.
    bound, quantize
        Preprocessing, as for :func:`preprocess_flow`.

    Returns
    -------
    numpy.ndarray
        ``[B, L, H, W, 2]`` float32 in ``[-1, 1]``.
    """
    if isinstance(flow_files, (str, os.PathLike)):
        flow_files = [flow_files]
    loader = OpticalFlowSequenceLoader(list(flow_files), sequence_length, stride, bound, quantize)
    return loader.create_sequence_batch(batch_size=batch_size)
