"""Frames of any bit depth (flow/frames.py): the documented rule, and flow that does not depend on
how the same picture is stored."""

from __future__ import annotations

import numpy as np
import pytest

from napari_flow_features.errors import BadInputError
from napari_flow_features.flow.compute import OpticalFlowComputer
from napari_flow_features.flow.frames import NormalisedFrames, stack_value_range, to_uint8


def moving_blobs(n: int = 6, h: int = 64, w: int = 80, dx: float = 1.5, dy: float = -0.75):
    """A smooth textured pattern translating by (dx, dy) px per frame, as uint8."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    frames = []
    for t in range(n):
        x, y = xx - dx * t, yy - dy * t
        f = (
            0.5
            + 0.25 * np.sin(x / 4.0) * np.cos(y / 5.0)
            + 0.2 * np.sin((x + y) / 7.0)
            + 0.05 * np.cos(x / 2.3 - y / 3.1)
        )
        frames.append(np.clip(np.rint(f * 255), 0, 255).astype(np.uint8))
    return np.stack(frames)


def test_the_rule_by_dtype():
    v8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert to_uint8(v8) is v8
    np.testing.assert_array_equal(to_uint8(v8.astype(np.uint16) * 257), v8)  # dtype range
    np.testing.assert_array_equal(to_uint8(v8 / 255.0), v8)  # [0, 1] floats, rounded not cut
    np.testing.assert_array_equal(to_uint8(v8.astype(np.float32)), v8)  # [0, 255] floats
    np.testing.assert_array_equal(to_uint8(v8.astype(np.float64) * 40 - 3000), v8)  # own range
    signed = (v8.astype(np.int32) * 257 - 32768).astype(np.int16)
    np.testing.assert_array_equal(to_uint8(signed), v8)
    np.testing.assert_array_equal(to_uint8(np.eye(3, dtype=bool)), np.eye(3, dtype=np.uint8) * 255)
    twelve_bit = v8.astype(np.uint16) * 16  # a 12-bit camera in uint16: give the range
    np.testing.assert_array_equal(to_uint8(twelve_bit, (0, 4080)), v8)
    with pytest.raises(BadInputError, match="lo < hi"):
        to_uint8(v8, (5, 5))
    with pytest.raises(BadInputError, match="numbers"):
        to_uint8(np.array(["a"]))


def test_stack_range_is_one_for_all_frames():
    stack = moving_blobs(5).astype(np.uint16) * 16
    view = NormalisedFrames(stack)
    lo, hi = stack_value_range(stack)
    assert view.value_range == (lo, hi) and view.shape == stack.shape and view.dtype == np.uint8
    assert lo == stack.min() and hi == stack.max()
    frames = [view[i] for i in range(len(view))]
    assert all(f.dtype == np.uint8 for f in frames)
    assert min(f.min() for f in frames) == 0 and max(f.max() for f in frames) == 255


@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_flow_of_16_bit_equals_8_bit(method):
    """The bug: uint16 frames were clipped to 255 and gave all-zero flow."""
    frames8 = moving_blobs()
    computer = OpticalFlowComputer(method=method, workers=1)
    flow8 = np.asarray(computer.compute(frames8))
    moving = np.hypot(flow8[..., 0], flow8[..., 1])[:, 8:-8, 8:-8]
    assert moving.mean() > 1.0  # the 8-bit reference sees the motion
    variants = {
        "uint16 (dtype range)": frames8.astype(np.uint16) * 257,
        "float [0, 1]": frames8 / 255.0,
        "12-bit in uint16 (stack range)": NormalisedFrames(frames8.astype(np.uint16) * 16),
        "int32 (dtype range)": (frames8.astype(np.int64) * 16843009 - 2**31).astype(np.int32),
    }
    for name, frames in variants.items():
        flow = np.asarray(computer.compute(frames))
        epe = np.hypot(*(flow - flow8).transpose(3, 0, 1, 2)).mean()
        assert epe < 0.05, (name, epe)
