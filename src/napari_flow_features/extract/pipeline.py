"""The extraction pipeline: source → flow → windows → encoder → post-encoder → one row per frame.

Pure (no Qt). Windows go through the encoder ``batch_size`` at a time and rows are produced as soon
as the windows they need are done, so memory is bounded by the batch and the map size; with the
``none`` post-encoder the maps stream into an on-disk ``.npy``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadInputError, CancelledError
from .landmarks import Landmarks, landmarks_from_points  # noqa: F401 (public here too)
from .post_encoders import (
    INTERPOLATIONS,
    POST_ENCODERS,
    assign_frames,
    gap,
    inside_frame,
    interpolate_time,
    sample_point,
)

Progress = Callable[[int, int], None]


@dataclass
class FeatureResult:
    """The per-frame table (DESIGN.md columns, metadata in ``table.attrs``), the feature maps for the
    ``none`` post-encoder (a read-only ``[N, T', H', W', C]`` memory map), and the run metadata."""

    table: pd.DataFrame
    feature_maps: Any = None
    metadata: dict = field(default_factory=dict)
    heatmap: np.ndarray | None = None  #: (T, H', W') activation per frame when asked for


class _SpanFlow:
    """Flow of a whole video that holds only the fields ``first .. first + len(fields) - 1``
    (all that the needed windows read)."""

    def __init__(self, fields: Any, first: int, n_fields: int) -> None:
        self.fields, self.first = fields, first
        self.shape = (n_fields, *fields.shape[1:])
        self.dtype = fields.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        lo, hi, _ = key.indices(self.shape[0])
        if lo < self.first or hi > self.first + len(self.fields):
            raise IndexError(f"flow fields {lo}..{hi - 1} were not computed")
        return np.asarray(self.fields[lo - self.first : hi - self.first])


def _resolve_source(source: Any) -> tuple[str, Any, str]:
    """``("video", frames, name)`` or ``("flow", flow, name)``."""
    from ..io.flow_files import read_flow, validate_flow_array
    from ..io.video import VIDEO_EXTENSIONS, VideoArray

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return "video", VideoArray(path), str(path)
        flow, name = read_flow(path), str(path)
    elif hasattr(source, "shape") and np.dtype(source.dtype).kind == "f":
        flow, name = source, "flow array"
    elif hasattr(source, "shape"):
        if len(source.shape) not in (3, 4):
            raise BadInputError(
                f"A video must be (T, H, W) or (T, H, W, 3); got {tuple(source.shape)}"
            )
        return "video", source, str(getattr(source, "path", "video array"))
    else:
        raise BadInputError(f"Cannot extract features from {type(source).__name__}")
    validate_flow_array(flow, name)
    if flow.ndim != 4:
        raise BadInputError(
            f"Need a flow sequence (T-1, H, W, 2); got one field {flow.shape}: {name}"
        )
    return "flow", flow, name


def _cached_flow_path(cache: Any, source: Any, method: str) -> Path | None:
    """Where the flow of video ``source`` by ``method`` is kept in ``cache`` (None: no cache). The
    key is a file's path, size and modification time, or an in-memory video's content hash, so
    it changes when the video does."""
    if cache is None:
        return None
    import hashlib

    source = getattr(source, "path", source)  # a VideoArray is its file
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).resolve()
        stat = path.stat()
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{method}"
    else:
        frames = np.ascontiguousarray(source)
        key = f"array|{frames.shape}|{hashlib.sha1(frames.data).hexdigest()}|{method}"
    folder = Path(cache)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"


def _flow_file_spec(source: Any) -> tuple[dict, list | None]:
    """Flow method and the video's (H, W) from a flow file's sidecar (``<file>.json``, written by
    :class:`OpticalFlowComputer`); ``({"flow_method": "given"}, None)`` without one."""
    if not isinstance(source, (str, os.PathLike)):
        return {"flow_method": "given"}, None
    sidecar = Path(str(source) + ".json")
    try:
        spec = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {"flow_method": "given"}, None
    info = {"flow_method": spec.get("flow_method", "given")}
    if spec.get("flow_preset"):
        info["flow_preset"] = spec["flow_preset"]
    if spec.get("source"):
        info["flow_source_video"] = spec["source"]
    return info, spec.get("video_shape")


def _check_cancel(cancel: Any) -> None:
    if cancel is None:
        return
    stop = cancel.is_set() if isinstance(cancel, threading.Event) else cancel()
    if stop:
        raise CancelledError("Feature extraction cancelled")


def extract_features(
    source: Any,
    extractor: Any,
    post_encoder: str = "gap",
    points: Any = None,
    interpolation: str = "bilinear",
    clip_length: int | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    flow_method: str = "farneback",
    interpolate_missing: bool = False,
    maps_path: str | os.PathLike | None = None,
    frames: list[int] | None = None,
    heatmap: str | int | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    flow_cache: str | os.PathLike | None = None,
) -> FeatureResult:
    """Per-frame features for a video (flow computed on the way) or a flow sequence.

    ``post_encoder``: ``"none"`` (maps to ``maps_path`` or a temporary ``.npy``; the table maps each
    frame to its window and time position), ``"gap"`` or ``"point"`` (needs ``points``; rows per frame
    and landmark). ``frames`` restricts the run to the windows those frames need (see
    :func:`extract_frame`). ``heatmap`` (``"mean"``, ``"l2"`` or a channel index) also returns each
    frame's activation map ``(T, H', W')`` reduced over channels (NaN for frames not run).
    ``progress(done, total)`` counts windows; ``cancel`` is checked between batches and raises
    :class:`CancelledError`. ``flow_cache``: a folder that keeps the flow of the last video file
    run in full (keyed by path, size, modification time and method) so the next run on it, with
    any post-encoder, skips the flow (``flow_reused`` in the metadata).
    """
    workdir = Path(tempfile.mkdtemp(prefix="flow-features-"))
    try:
        return _extract_features(
            workdir,
            source,
            extractor,
            post_encoder=post_encoder,
            points=points,
            interpolation=interpolation,
            clip_length=clip_length,
            stride=stride,
            batch_size=batch_size,
            flow_method=flow_method,
            interpolate_missing=interpolate_missing,
            maps_path=maps_path,
            frames=frames,
            heatmap=heatmap,
            progress=progress,
            cancel=cancel,
            flow_cache=flow_cache,
        )
    finally:
        # Flow computed from a video is only needed during the run; the folder stays only when it
        # holds the feature maps of the none post-encoder.
        for name in ("flow.npy", "flow.npy.json"):
            (workdir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            workdir.rmdir()


def _extract_features(
    workdir: Path,
    source: Any,
    extractor: Any,
    post_encoder: str = "gap",
    points: Any = None,
    interpolation: str = "bilinear",
    clip_length: int | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    flow_method: str = "farneback",
    interpolate_missing: bool = False,
    maps_path: str | os.PathLike | None = None,
    frames: list[int] | None = None,
    heatmap: str | int | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    flow_cache: str | os.PathLike | None = None,
) -> FeatureResult:
    if post_encoder not in POST_ENCODERS:
        raise BadInputError(
            f"post_encoder must be one of {', '.join(POST_ENCODERS)}, not {post_encoder!r}"
        )
    if interpolation not in INTERPOLATIONS:
        raise BadInputError(f"interpolation must be bilinear or nearest, not {interpolation!r}")
    if post_encoder == "point" and points is None:
        raise BadInputError(
            "Spatial Point Extraction needs landmarks: give a Points layer or table"
        )
    cfg = extractor.config
    for key, value in (
        ("clip_length", clip_length),
        ("stride", stride),
        ("batch_size", batch_size),
    ):
        if value is not None:
            if int(value) < 1:
                raise BadInputError(f"{key} must be at least 1, got {value}")
            cfg[key] = int(value)
    kind, data, name = _resolve_source(source)
    n_frames = len(data) if kind == "video" else data.shape[0] + 1
    windows = extractor.windows(n_frames)
    length = cfg["clip_length"]
    starts = [w.start for w in windows]
    # Which windows are needed (the window assignment does not depend on T').
    assign = assign_frames(starts, n_frames, length, 1)
    wanted = np.arange(n_frames) if frames is None else np.asarray(sorted(set(frames)), int)
    if wanted.size and (wanted.min() < 0 or wanted.max() >= n_frames):
        raise BadInputError(f"Frame out of range: the video has frames 0..{n_frames - 1}")
    needed = sorted(set(assign.window[wanted].tolist()))

    if kind == "video":
        from ..flow.compute import OpticalFlowComputer

        if n_frames < 2:
            raise BadInputError(f"Optical flow needs at least 2 frames; the video has {n_frames}")
        cached = _cached_flow_path(flow_cache, source, flow_method)
        flow_info = {"flow_method": flow_method, "flow_reused": False}
        if cached is not None and cached.is_file():
            flow = np.load(cached, mmap_mode="r", allow_pickle=False)
            frame_hw = tuple(flow.shape[1:3])
            flow_info["flow_reused"] = True
        elif cached is not None and frames is None:
            for old in cached.parent.glob("*.npy*"):  # one video's flow at a time (they are big)
                old.unlink(missing_ok=True)
            computer = OpticalFlowComputer(flow_method)
            frame_hw = computer.spec_for(data).input_shape
            flow = computer.compute(data, cached, cancel=cancel)
        else:
            # Flow only for the frames the needed windows cover (one window for extract_frame).
            first = windows[needed[0]].start
            last = min(windows[needed[-1]].start + length, n_frames - 1)
            span = [data[i] for i in range(first, last + 1)] if frames is not None else data
            computer = OpticalFlowComputer(flow_method)
            frame_hw = computer.spec_for(span).input_shape
            fields = computer.compute(span, workdir / "flow.npy", cancel=cancel)
            flow = _SpanFlow(fields, first if frames is not None else 0, n_frames - 1)
    else:
        flow, frame_hw = data, tuple(data.shape[1:3])
        flow_info, video_hw = _flow_file_spec(source)
    extractor._check_flow(flow)
    # Landmarks are in video pixels; flow computed at another size (its sidecar says so) maps them
    # by pixel centres, align-corners=False: x_flow = (x + 0.5) * W_flow / W_video - 0.5.
    to_flow = None
    if kind == "flow" and video_hw is not None and tuple(video_hw) != frame_hw:
        to_flow = (frame_hw[0] / video_hw[0], frame_hw[1] / video_hw[1])
        flow_info["landmarks_scaled_to_flow"] = list(to_flow)
    landmarks = None
    if post_encoder == "point":
        landmarks = landmarks_from_points(points, n_frames, interpolate_missing)

    rows: list[dict] = []
    feats: list[np.ndarray] = []
    maps_out = None
    taus = None
    heat = None
    outside: list[tuple] = []
    batch = cfg["batch_size"]
    for b in range(0, len(needed), batch):
        _check_cancel(cancel)
        ks = needed[b : b + batch]
        clips = np.stack([extractor.preprocess_window(flow, windows[k]) for k in ks])
        maps = extractor.encode(clips)  # (B, T', H', W', C)
        t_steps = maps.shape[1]
        if post_encoder == "none" and maps_out is None:
            target = Path(maps_path) if maps_path is not None else workdir / "feature_maps.npy"
            maps_out = np.lib.format.open_memmap(
                target, mode="w+", dtype=np.float32, shape=(len(needed), *maps.shape[1:])
            )
        if taus is None:
            taus = assign_frames(starts, n_frames, length, t_steps)
        if heatmap is not None and heat is None:
            heat = np.full((n_frames, *maps.shape[2:4]), np.nan, np.float32)
        for j, k in enumerate(ks):
            if maps_out is not None:
                maps_out[b + j] = maps[j]
            for t in wanted[assign.window[wanted] == k]:
                tau = float(taus.tau[t])
                if heat is not None:
                    heat[t] = reduce_channels(interpolate_time(maps[j], tau), heatmap)
                if post_encoder == "none":
                    rows.append({"frame": int(t), "window": b + j, "tau": tau})
                    continue
                fmap = interpolate_time(maps[j], tau)
                if post_encoder == "gap":
                    rows.append({"frame": int(t)})
                    feats.append(gap(fmap))
                    continue
                for k_id, (lid, (x, y)) in enumerate(
                    zip(landmarks.ids, landmarks.xy[:, t], strict=True)
                ):
                    fx, fy = x, y
                    if to_flow is not None:
                        fx, fy = (x + 0.5) * to_flow[1] - 0.5, (y + 0.5) * to_flow[0] - 0.5
                    if np.isfinite(fx) and not inside_frame(fx, fy, frame_hw):
                        outside.append((int(t), lid, float(x), float(y)))
                    rows.append({"frame": int(t), **landmarks.row_fields(k_id, t)})
                    feats.append(sample_point(fmap, fx, fy, frame_hw, interpolation))
        if progress is not None:
            progress(min(b + batch, len(needed)), len(needed))

    table = pd.DataFrame(rows)
    if feats:
        mat = np.stack(feats).astype(np.float32)
        cols = pd.DataFrame(mat, columns=[f"f{c:04d}" for c in range(mat.shape[1])])
        table = pd.concat([table.reset_index(drop=True), cols], axis=1)
    table = table.sort_values("frame", kind="stable")  # landmarks keep their order in a frame
    table = table.reset_index(drop=True)
    missing_rows = int(table["f0000"].isna().sum()) if feats else 0
    if outside:
        warnings.warn(
            f"{len(outside)} landmark positions lie outside the {frame_hw[1]}x{frame_hw[0]} frame "
            f"(first: frame {outside[0][0]}, x={outside[0][2]:.1f}, y={outside[0][3]:.1f}); "
            "their rows are NaN",
            stacklevel=2,
        )
    meta = {
        **extractor.describe(),
        **flow_info,
        "post_encoder": post_encoder,
        "interpolation": interpolation if post_encoder == "point" else None,
        "source": name,
        "n_frames": n_frames,
        "frame_shape": list(frame_hw),
        "n_windows": len(needed),
        "windows": [int(k) for k in needed],
        "padded_frames": [n_frames - 1],
        "missing_landmark_rows": missing_rows - len(outside) if post_encoder == "point" else 0,
        "outside_frame_rows": len(outside),
        "interpolated_landmark_positions": landmarks.filled if landmarks else 0,
        "landmarks": [str(i) for i in landmarks.ids] if landmarks else [],
    }
    if heat is not None:
        meta["heatmap"] = str(heatmap)
        meta["heatmap_cell_px"] = [frame_hw[0] / heat.shape[1], frame_hw[1] / heat.shape[2]]
    table.attrs = meta
    if maps_out is not None:
        maps_out.flush()
        maps_out = np.load(maps_out.filename, mmap_mode="r", allow_pickle=False)
    return FeatureResult(table=table, feature_maps=maps_out, metadata=meta, heatmap=heat)


def reduce_channels(fmap: np.ndarray, how: str | int) -> np.ndarray:
    """``(H', W', C)`` → ``(H', W')``: the channel mean, the L2 norm over channels, or one channel."""
    if how == "mean":
        return fmap.mean(axis=-1)
    if how == "l2":
        return np.sqrt((fmap.astype(np.float64) ** 2).sum(axis=-1)).astype(np.float32)
    try:
        channel = int(how)
    except (TypeError, ValueError):
        raise BadInputError(
            f"heatmap must be 'mean', 'l2' or a channel number, not {how!r}"
        ) from None
    if not 0 <= channel < fmap.shape[-1]:
        raise BadInputError(
            f"Channel {channel} does not exist: the map has {fmap.shape[-1]} channels"
        )
    return fmap[..., channel]


def extract_frame(source: Any, extractor: Any, frame: int, **kwargs: Any) -> FeatureResult:
    """Features of one frame, running only the window that frame takes its row from."""
    return extract_features(source, extractor, frames=[int(frame)], **kwargs)
