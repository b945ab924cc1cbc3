"""Make the screenshots of docs/landmarks.md in a real napari window.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots/landmarks.py

(without ``xvfb-run`` on a desktop). Writes ``docs/images/landmarks_tracks.png`` (DeepLabCut tracks
loaded in the extraction dock) and ``docs/images/landmarks_keyframes.png`` (four clicked keyframes
filled along the optical flow).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from movement.io import load_poses, save_poses
from qtpy.QtWidgets import QApplication

import napari
from napari_flow_features.napari._qt.extract_widget import ExtractWidget
from napari_flow_features.sample import make_whisker_sample

OUT = Path(__file__).resolve().parents[1] / "images"


def settle(viewer: napari.Viewer, frame: int) -> None:
    for _ in range(20):
        QApplication.processEvents()
    viewer.reset_view()
    viewer.dims.set_current_step(0, frame)
    for _ in range(20):
        QApplication.processEvents()


def tracks_shot(tmp: Path) -> None:
    sample = make_whisker_sample()
    viewer = napari.Viewer(show=True, title="napari-flow-features: pose tracks")
    viewer.window._qt_window.resize(1400, 820)
    viewer.add_image(sample.video, name="whisker video", metadata={"source_type": "video"})
    # DeepLabCut-style tracks of two points on the whisker (base and middle), as a tracker would
    # write them, with the middle point losing confidence for a few frames.
    theta = np.deg2rad(sample.angles_deg)
    radii = np.array([40.0, 110.0])
    x = sample.pivot[1] + radii[None] * np.cos(theta)[:, None]
    y = sample.pivot[0] + radii[None] * np.sin(theta)[:, None]
    pos = np.stack([x, y], axis=1)[..., None]  # time, space, keypoints, individuals
    conf = np.full((len(theta), 2, 1), 0.95)
    conf[40:44, 1] = 0.2
    ds = load_poses.from_numpy(pos, conf, individual_names=["mouse1"],
                               keypoint_names=["whisker_base", "whisker_mid"])  # fmt: skip
    path = tmp / "whiskerDLC_resnet50_whiskersJan1shuffle1_100000.h5"
    save_poses.to_dlc_file(ds, path, split_individuals=False)
    widget = ExtractWidget(viewer)
    viewer.window.add_dock_widget(widget, name="I3D feature extraction", area="right")
    layer = widget.load_tracks(str(path))
    layer.size = 9
    widget.min_confidence.value = 0.6
    widget.max_gap.value = 5
    settle(viewer, 42)
    viewer.screenshot(str(OUT / "landmarks_tracks.png"), canvas_only=False)
    viewer.close()


def keyframes_shot() -> None:
    sample = make_whisker_sample(n_frames=61, period=60.0, amplitude_deg=25.0)
    viewer = napari.Viewer(show=True, title="napari-flow-features: keyframes")
    viewer.window._qt_window.resize(1400, 820)
    viewer.add_image(sample.video, name="whisker video", metadata={"source_type": "video"})
    tip = sample.landmarks.copy()
    keys = viewer.add_points(tip[[0, 20, 40, 60]], name="clicks", size=10, face_color="yellow",
                             features=pd.DataFrame({"track_id": [0] * 4}))  # fmt: skip
    widget = ExtractWidget(viewer)
    viewer.window.add_dock_widget(widget, name="I3D feature extraction", area="right")
    widget.post_encoder.value = "Spatial Point Extraction"
    widget.points.value = keys
    widget.fill_method.value = "along the optical flow"
    worker = widget.fill_keyframes()
    while widget._worker is not None:
        QApplication.processEvents()
    del worker
    filled = viewer.layers["filled: clicks"]
    filled.face_color = "cyan"
    # the filled positions of the frames so far, as a napari Tracks tail
    path = np.c_[np.zeros(len(filled.data)), filled.data]
    viewer.add_tracks(path, name="path so far", tail_length=60, tail_width=3, colormap="hsv")
    viewer.layers.selection.active = filled
    settle(viewer, 50)
    viewer.screenshot(str(OUT / "landmarks_keyframes.png"), canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tracks_shot(Path(tmp))
    keyframes_shot()
    print(f"wrote {OUT / 'landmarks_tracks.png'} and {OUT / 'landmarks_keyframes.png'}")
