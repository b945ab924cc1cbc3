"""Independent NumPy references for the value-pinning tests (DESIGN.md's formulas, written again).

Nothing here imports the package: these are the expected values the code under test is compared to.
"""

from __future__ import annotations

import math

import numpy as np


def resized_hw(hw: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``(H, W)`` after resizing so the longest side is at most ``max_side`` (never enlarged)."""
    h, w = hw
    factor = min(1.0, max_side / max(h, w))
    return round(h * factor), round(w * factor)


def map_hw(hw: tuple[int, int], stride: int) -> tuple[int, int]:
    """Feature-map ``(H', W')`` of a SAME-padded network: ``ceil(H / stride)``."""
    return math.ceil(hw[0] / stride), math.ceil(hw[1] / stride)


def rescale(x: float, y: float, from_hw: tuple[int, int], to_hw: tuple[int, int]):
    """Pixel centres, align-corners=False: ``x' = (x + 0.5) * W' / W - 0.5`` (and y with H)."""
    return (x + 0.5) * to_hw[1] / from_hw[1] - 0.5, (y + 0.5) * to_hw[0] / from_hw[0] - 0.5


def bilinear(fmap: np.ndarray, x: float, y: float, in_hw: tuple[int, int]) -> np.ndarray:
    """Sample ``(H', W', C)`` at pixel ``(x, y)`` of an ``in_hw`` frame: 4 neighbours, clamped."""
    mh, mw = fmap.shape[:2]
    u, v = rescale(x, y, in_hw, (mh, mw))
    u, v = min(max(u, 0.0), mw - 1.0), min(max(v, 0.0), mh - 1.0)
    j0, i0 = math.floor(u), math.floor(v)
    j1, i1 = min(j0 + 1, mw - 1), min(i0 + 1, mh - 1)
    a, b = u - j0, v - i0
    f = fmap.astype(np.float64)
    return (
        (1 - a) * (1 - b) * f[i0, j0]
        + a * (1 - b) * f[i0, j1]
        + (1 - a) * b * f[i1, j0]
        + a * b * f[i1, j1]
    )


def nearest(fmap: np.ndarray, x: float, y: float, in_hw: tuple[int, int]) -> np.ndarray:
    """The cell ``floor(u + 0.5), floor(v + 0.5)`` (halves round up), clamped to the map."""
    mh, mw = fmap.shape[:2]
    u, v = rescale(x, y, in_hw, (mh, mw))
    j = min(max(math.floor(u + 0.5), 0), mw - 1)
    i = min(max(math.floor(v + 0.5), 0), mh - 1)
    return fmap[i, j].astype(np.float64)


def at_time(maps: np.ndarray, tau: float) -> np.ndarray:
    """``maps[tau]`` linear between the two nearest of the ``T'`` steps of ``(T', ...)`` maps."""
    lo = math.floor(tau)
    hi = min(lo + 1, maps.shape[0] - 1)
    w = tau - lo
    return (1 - w) * maps[lo].astype(np.float64) + w * maps[hi].astype(np.float64)
