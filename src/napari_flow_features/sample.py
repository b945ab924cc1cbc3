"""The built-in sample: a synthetic whisker video with a known motion field and landmark track.

A textured, static background with a striped bar that swings about a pivot like a whisker. The bar's
angle follows ``amplitude * sin(2π t / period)``; the landmark ("whisker base") is the point on the bar
at ``landmark_radius`` from the pivot. Every pixel's true flow is known: pixels on the bar rotate about
the pivot by the angle step to the next frame, the background does not move.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class WhiskerSample:
    """Frames, landmark track and ground truth of the synthetic whisker video.

    Attributes
    ----------
    video : numpy.ndarray
        ``(T, H, W)`` uint8 frames.
    landmarks : numpy.ndarray
        ``(T, 3)`` float64 rows ``(t, y, x)`` of the whisker base.
    angles_deg : numpy.ndarray
        ``(T,)`` bar angle in degrees; positive turns +x towards +y (clockwise on screen).
    ground_truth_flow : numpy.ndarray
        ``(T - 1, H, W, 2)`` float32 true flow ``(dx, dy)`` in pixels per frame.
    swing_direction : numpy.ndarray
        ``(T,)`` int8: +1 while the angle increases, -1 while it decreases.
    pivot : tuple of float
        ``(y, x)`` of the pivot.
    fps : float
        Frame rate.
    info : dict
        The generating parameters.
    """

    video: np.ndarray  #: (T, H, W) uint8
    landmarks: np.ndarray  #: (T, 3) float64 rows (t, y, x)
    angles_deg: (
        np.ndarray
    )  #: (T,) bar angle, degrees, positive turns +x towards +y (clockwise on screen)
    ground_truth_flow: np.ndarray  #: (T-1, H, W, 2) float32, dx, dy in pixels per frame
    swing_direction: np.ndarray  #: (T,) int8, +1 while the angle increases, -1 while it decreases
    pivot: tuple[float, float]  #: (y, x)
    fps: float
    info: dict = field(default_factory=dict)

    def metadata(self) -> dict:
        """Give napari layer metadata: geometry, labels and the ground-truth motion field.

        Returns
        -------
        dict
            Source, fps, pivot, angles, swing direction, ground-truth flow and the parameters.
        """
        return {
            "source": "synthetic whisker sample",
            "fps": self.fps,
            "pivot_yx": list(self.pivot),
            "angles_deg": self.angles_deg,
            "swing_direction": self.swing_direction,
            "ground_truth_flow": self.ground_truth_flow,
            **self.info,
        }


def _texture(shape: tuple[int, int], rng: np.random.Generator, sigma: float = 2.5) -> np.ndarray:
    """Smooth random texture in [0, 1] (band-limited noise, so optical flow has gradients to use)."""
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    smooth = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=shape)
    smooth -= smooth.min()
    return smooth / smooth.max()


def make_whisker_sample(
    n_frames: int = 96,
    height: int = 240,
    width: int = 320,
    amplitude_deg: float = 20.0,
    period: float = 32.0,
    length: float = 210.0,
    thickness: float = 7.0,
    landmark_radius: float = 40.0,
    seed: int = 0,
    fps: float = 30.0,
) -> WhiskerSample:
    """Generate the sample deterministically (same arguments, same bytes).

    Parameters
    ----------
    n_frames, height, width : int, default 96, 240, 320
        Video size.
    amplitude_deg : float, default 20.0
        Swing amplitude in degrees.
    period : float, default 32.0
        Swing period in frames.
    length, thickness : float, default 210.0, 7.0
        The bar's size in pixels.
    landmark_radius : float, default 40.0
        Distance of the landmark from the pivot along the bar, in pixels.
    seed : int, default 0
        Seed of the background texture.
    fps : float, default 30.0
        Frame rate recorded with the sample.

    Returns
    -------
    WhiskerSample
        Frames, landmark track, angles, ground-truth flow and swing direction.
    """
    rng = np.random.default_rng(seed)
    pivot = (height / 2.0, width * 0.18)
    t = np.arange(n_frames, dtype=np.float64)
    angles = amplitude_deg * np.sin(2 * np.pi * t / period)
    theta = np.deg2rad(angles)

    background = 60.0 + 100.0 * _texture((height, width), rng)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    ry, rx = yy - pivot[0], xx - pivot[1]

    video = np.empty((n_frames, height, width), dtype=np.uint8)
    masks = np.empty((n_frames, height, width), dtype=bool)
    half = thickness / 2.0
    for i, th in enumerate(theta):
        c, s = np.cos(th), np.sin(th)
        along = rx * c + ry * s  # distance along the bar from the pivot
        across = -rx * s + ry * c
        clamped = np.clip(along, 0.0, length)
        dist = np.hypot(along - clamped, across)
        alpha = np.clip(half + 0.5 - dist, 0.0, 1.0)
        stripes = 205.0 + 40.0 * np.sin(2 * np.pi * along / 14.0)
        video[i] = np.round(background * (1 - alpha) + stripes * alpha).astype(np.uint8)
        masks[i] = alpha >= 0.5

    # True flow: bar pixels rotate about the pivot by the next angle step.
    dtheta = np.diff(theta)
    gt = np.zeros((max(n_frames - 1, 0), height, width, 2), dtype=np.float32)
    for i, d in enumerate(dtheta):
        c, s = np.cos(d), np.sin(d)
        m = masks[i]
        gt[i, m, 0] = (c * rx[m] - s * ry[m] - rx[m]).astype(np.float32)
        gt[i, m, 1] = (s * rx[m] + c * ry[m] - ry[m]).astype(np.float32)

    landmarks = np.stack(
        [t, pivot[0] + landmark_radius * np.sin(theta), pivot[1] + landmark_radius * np.cos(theta)],
        axis=1,
    )
    direction = np.sign(np.append(dtheta, dtheta[-1] if len(dtheta) else 0.0)).astype(np.int8)
    direction[direction == 0] = 1
    return WhiskerSample(
        video=video,
        landmarks=landmarks,
        angles_deg=angles,
        ground_truth_flow=gt,
        swing_direction=direction,
        pivot=pivot,
        fps=fps,
        info={
            "amplitude_deg": amplitude_deg,
            "period_frames": period,
            "bar_length": length,
            "bar_thickness": thickness,
            "landmark_radius": landmark_radius,
            "seed": seed,
        },
    )


def save_whisker_sample(
    output_dir: str | os.PathLike, sample: WhiskerSample | None = None
) -> dict[str, str]:
    """Write the sample as a video, a landmark table and a ground-truth archive: all or none.

    The files appear together; on any failure (a full disk, Ctrl-C) none of them is left.

    Parameters
    ----------
    output_dir : str or os.PathLike
        Folder to write into (created if missing).
    sample : WhiskerSample, optional
        The sample (default: :func:`make_whisker_sample` with its defaults).

    Returns
    -------
    dict of str to str
        Paths by role: ``video`` (``whisker.mp4``), ``landmarks`` (``whisker_landmarks.csv``:
        frame, landmark, x, y) and ``ground_truth`` (``whisker_ground_truth.npz``: flow, angles,
        swing direction, pivot).
    """
    from .io._atomic import all_files_or_none, ensure_output_dir

    sample = sample or make_whisker_sample()
    out = ensure_output_dir(output_dir)
    names = {"video": "whisker.mp4", "landmarks": "whisker_landmarks.csv",
             "ground_truth": "whisker_ground_truth.npz"}  # fmt: skip
    # Written into a staging folder, then moved in together: a full disk leaves none of them.
    with all_files_or_none(out) as staging:
        _write_sample_files(sample, staging, names, out / names["video"])
    return {role: str(out / name) for role, name in names.items()}


def _write_sample_files(
    sample: WhiskerSample, folder: Path, names: dict[str, str], video_path: Path
) -> None:
    """Write the sample's files into ``folder`` (the landmark table records ``video_path``)."""
    import pandas as pd

    from .io._atomic import atomic_write_path
    from .io.tables import write_table
    from .io.video import write_video

    write_video(folder / names["video"], sample.video, fps=sample.fps, crf=12)
    table = pd.DataFrame(
        {
            "frame": sample.landmarks[:, 0].astype(int),
            "landmark": "whisker base",
            "x": sample.landmarks[:, 2],
            "y": sample.landmarks[:, 1],
        }
    )
    meta = {
        "source": str(video_path),
        "frame_shape": list(sample.video.shape[1:]),
        "landmark_radius": sample.info["landmark_radius"],
    }
    write_table(table, folder / names["landmarks"], meta)
    with atomic_write_path(folder / names["ground_truth"]) as tmp:
        np.savez_compressed(
            tmp,
            flow=sample.ground_truth_flow,
            angles_deg=sample.angles_deg,
            swing_direction=sample.swing_direction,
            pivot_yx=np.asarray(sample.pivot),
        )
