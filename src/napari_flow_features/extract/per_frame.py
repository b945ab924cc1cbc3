"""Per-frame feature rows from window feature maps (DESIGN.md), streamed batch by batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from .post_encoders import assign_frames, gap, interpolate_time


def gap_feature_table(
    extractor: Any,
    flow: Any,
    source: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Global-average-pooled features, one row per video frame (T = flow fields + 1).

    Windows go through the encoder ``batch_size`` at a time; only each window's pooled ``(T', C)``
    is kept, so memory grows with the number of windows × C, not with frame size. Columns:
    ``frame``, ``f0000…``; metadata in ``df.attrs`` (extractor config, source, padded frames).
    """
    extractor._check_flow(flow)
    n_frames = flow.shape[0] + 1
    windows = extractor.windows(n_frames)
    batch = extractor.config.batch_size
    pooled: list[np.ndarray] = []
    for i in range(0, len(windows), batch):
        clips = np.stack([extractor.preprocess_window(flow, w) for w in windows[i : i + batch]])
        pooled.extend(gap(extractor.encode(clips)))  # each (T', C)
        if progress is not None:
            progress(min(i + batch, len(windows)), len(windows))
    t_steps = pooled[0].shape[0]
    length = extractor.config.clip_length
    assign = assign_frames([w.start for w in windows], n_frames, length, t_steps)
    rows = np.stack(
        [interpolate_time(pooled[k], tau) for k, tau in zip(assign.window, assign.tau, strict=True)]
    ).astype(np.float32)
    table = pd.DataFrame(rows, columns=[f"f{c:04d}" for c in range(rows.shape[1])])
    table.insert(0, "frame", np.arange(n_frames))
    table.attrs = {
        **extractor.describe(),
        "post_encoder": "gap",
        "source": source,
        "n_frames": n_frames,
        "n_windows": len(windows),
        "padded_frames": [n_frames - 1],  # the last frame has no flow of its own
        "frame_shape": list(flow.shape[1:3]),
    }
    return table
