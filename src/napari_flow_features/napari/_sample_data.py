"""npe2 sample data: the synthetic whisker video and its landmark track."""

from __future__ import annotations


def whisker_sample() -> list[tuple]:
    """Video Image layer plus a ``whisker base`` Points layer (one point per frame, ``track_id``)."""
    import pandas as pd

    from ..sample import make_whisker_sample

    sample = make_whisker_sample()
    meta = sample.metadata()
    meta["source_type"] = "video"
    video = (
        sample.video,
        {"name": "whisker video", "metadata": meta, "contrast_limits": [0, 255]},
        "image",
    )
    features = pd.DataFrame({"track_id": [0] * len(sample.landmarks)})
    points = (
        sample.landmarks,
        {
            "name": "whisker base",
            "features": features,
            "face_color": "cyan",
            "size": 8,
            "metadata": {
                "landmark": "whisker base",
                "landmark_radius": sample.info["landmark_radius"],
            },
        },
        "points",
    )
    return [video, points]
