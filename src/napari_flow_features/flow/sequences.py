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
    flow: np.ndarray, bound: float = 20.0, quantize: bool = False, check_finite: bool = True
) -> np.ndarray:
    """Clip flow to ``[-bound, bound]`` px, optionally quantise to 256 levels, scale to ``[-1, 1]``.

    Quantisation is DeepMind's: ``q = round((f + bound) / (2 bound) * 255)`` in 0..255, then
    ``q / 255 * 2 - 1``. Returns a new float32 array. NaN or infinite flow is an error (it would
    poison every feature of the clip) unless ``check_finite=False``.
    """
    return preprocess_flow_inplace(np.array(flow, dtype=np.float32), bound, quantize, check_finite)


def preprocess_flow_inplace(
    arr: np.ndarray, bound: float = 20.0, quantize: bool = False, check_finite: bool = True
) -> np.ndarray:
    """:func:`preprocess_flow` overwriting a float32 array (no copies of a large clip)."""
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
    """First frame of each window: 0, S, 2S, … with the last window aligned to the end."""
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
    """Windows over a video of ``n_frames`` frames whose flow has ``n_flow`` (default T-1) fields."""
    n_flow = n_frames - 1 if n_flow is None else n_flow
    out = []
    for k, s in enumerate(window_starts(n_frames, length, stride)):
        positions = np.arange(s, s + length)
        frames = np.minimum(positions, n_frames - 1)
        padded = (positions >= n_frames) | (frames >= n_flow)
        out.append(FlowWindow(source, k, s, frames, padded))
    return out


def window_data(flow: Any, window: FlowWindow) -> np.ndarray:
    """The ``(L, H, W, 2)`` raw flow of a window (edge-padded by repeating the last flow field)."""
    n_flow = flow.shape[0]
    idx = np.minimum(window.frames, n_flow - 1)
    lo, hi = int(idx.min()), int(idx.max()) + 1
    if hi - lo == len(idx):  # no padding: one copy straight from the (memory-mapped) flow
        return np.array(flow[lo:hi], dtype=np.float32)
    return np.asarray(flow[lo:hi], dtype=np.float32)[idx - lo]


def _natural_key(p: Path) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]


def find_flow_files(flow_dir: str | os.PathLike) -> list[Path]:
    """Flow sequences in a folder: ``.npy``/``.npz`` files and sub-folders holding ``.flo`` files
    (window files written by :meth:`OpticalFlowSequenceLoader.save_sequences` are skipped).
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

    Parameters
    ----------
    flow_dir
        A folder of ``.npy``/``.npz`` flow sequences and/or sub-folders of ``.flo`` files, or a list
        of such paths.
    sequence_length, stride
        Window length L and stride S in frames.
    bound, quantize
        Preprocessing (see :func:`preprocess_flow`); ``preprocess=False`` yields raw flow.

    Iterating yields ``(FlowWindow, data)`` with ``data`` of shape ``(L, H, W, 2)`` float32.
    """

    def __init__(
        self,
        flow_dir: str | os.PathLike | Sequence[str | os.PathLike],
        sequence_length: int = 16,
        stride: int = 8,
        bound: float = 20.0,
        quantize: bool = False,
        preprocess: bool = True,
    ) -> None:
        if isinstance(flow_dir, (str, os.PathLike)):
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
        """The windows of one flow file (the video had one frame more than the flow)."""
        flow = _open_sequence(Path(path))
        return frame_windows(flow.shape[0] + 1, self.sequence_length, self.stride, str(path))

    def iter_file(self, path: str | os.PathLike) -> Iterator[tuple[FlowWindow, np.ndarray]]:
        """Windows of one file, reading only the flow each window covers."""
        flow = _open_sequence(Path(path))
        for window in frame_windows(
            flow.shape[0] + 1, self.sequence_length, self.stride, str(path)
        ):
            data = window_data(flow, window)
            if self.preprocess:
                data = preprocess_flow(data, self.bound, self.quantize)
            yield window, data

    def __iter__(self) -> Iterator[tuple[FlowWindow, np.ndarray]]:
        for path in self.files:
            yield from self.iter_file(path)

    def __len__(self) -> int:
        return sum(len(self.windows(p)) for p in self.files)

    def iter_batches(self, batch_size: int = 8) -> Iterator[tuple[np.ndarray, list[FlowWindow]]]:
        """``([B, L, H, W, 2] float32, windows)`` batches; all files must share H and W."""
        if batch_size < 1:
            raise BadInputError(f"batch_size must be at least 1, got {batch_size}")
        batch: list[np.ndarray] = []
        infos: list[FlowWindow] = []
        for window, data in self:
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

    def save_sequences(self, output_dir: str | os.PathLike) -> list[Path]:
        """Write each file's windows as ``<stem>_sequences.npy`` ``[N, L, H, W, 2]`` (streamed, atomic)
        with ``<stem>_sequences.json`` listing every window's start, frames and padding.
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
    """The first ``batch_size`` preprocessed windows of ``flow_files`` as ``[B, L, H, W, 2]`` float32."""
    loader = OpticalFlowSequenceLoader(list(flow_files), sequence_length, stride, bound, quantize)
    for batch, _ in loader.iter_batches(batch_size):
        return batch
    raise BadInputError("The flow files hold no windows")
