"""Dock widget ``I3D feature extraction``: the seed's post-encoder widget, the napari way.

Thin: it collects parameters, sends the job to the model worker process (TensorFlow never loads in
napari), shows progress in the activity dock, and turns the reply into layers on the layers that were
selected when the run started.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info, show_warning

from ...config import AUTO_MAX_SIDE
from .. import _axes, _session
from .flow_widget import RESIZE_CHOICES
from .scroll import make_scrollable

if TYPE_CHECKING:
    import napari

POST_ENCODER_CHOICES = {
    "None": "none",
    "Global Average Pooling": "gap",
    "Spatial Point Extraction": "point",
}
INTERPOLATION_CHOICES = {"Bilinear (recommended)": "bilinear", "Nearest": "nearest"}
FILL_CHOICES = {"along the optical flow": "flow", "linearly": "linear"}
HEATMAP_CHOICES = {"channel mean": "mean", "L2 norm": "l2", "one channel": "channel"}
ENDPOINT_CHOICES = ("Mixed_5c", "Mixed_5b", "Mixed_4f", "Mixed_4e", "Mixed_4d", "Mixed_4c",
                    "Mixed_4b", "Mixed_3c", "Mixed_3b", "Conv3d_2c_3x3")  # fmt: skip

_WORKER: Any = None


def model_worker() -> Any:
    """The napari session's model worker process (started on first use, kept warm)."""
    global _WORKER
    if _WORKER is None:
        from ...extract.worker import ModelWorker

        _WORKER = ModelWorker()
    return _WORKER


def _close_worker() -> None:
    """Stop the model worker and remove its temporary files (the last extraction dock closed)."""
    global _WORKER
    if _WORKER is not None:
        _WORKER.close()
        _WORKER = None


def source_layer_choices(viewer: Any) -> list[tuple[str, Any]]:
    """Video layers (as the flow widget lists them) and flow-sequence layers of the viewer."""
    from .flow_widget import video_layer_choices

    flows = [
        (layer.name, layer)
        for layer in viewer.layers
        if layer.metadata.get("source_type") == "flow"
        and getattr(layer.metadata.get("flow"), "ndim", 0) == 4
    ]
    return video_layer_choices(viewer) + flows


def job_source(layer: Any) -> Any:
    """What the worker process opens: a video path, a flow file path, or an array (pickled).

    A video layer another reader opened (frames decoded in memory) goes by its file's path when
    the file is a video of the layer's shape, so the frames are not pickled to the worker.
    """
    from ...io.video import VIDEO_EXTENSIONS, VideoArray

    if layer.metadata.get("source_type") == "flow":
        flow = layer.metadata["flow"]
        return str(flow.filename) if getattr(flow, "filename", None) else np.asarray(flow)
    if isinstance(layer.data, VideoArray):
        return str(layer.data.path)
    path = getattr(layer.source, "path", None) or layer.metadata.get("path")
    if path and Path(path).suffix.lower() in VIDEO_EXTENSIONS and Path(path).is_file():
        try:
            on_disk = VideoArray(path)
        except Exception:  # not readable here: fall back to the frames
            on_disk = None
        if on_disk is not None and tuple(on_disk.shape[:3]) == tuple(np.shape(layer.data)[:3]):
            return str(Path(path).resolve())
    return np.asarray(layer.data)


def points_table(layer: Any) -> Any:
    """A Points layer as a landmark table in data coordinates.

    A Points layer as a landmark table in data coordinates: ``frame, x, y``, the identity
    columns the one landmark rule knows (ours, napari-deeplabcut's, movement's) and the
    confidence; the tracked video's length (``attrs["n_frames"]``) when the layer came from a
    tracks file.
    """
    import pandas as pd

    from ...io.landmark_key import confidence_column, landmark_key

    data = np.asarray(layer.data, dtype=float)
    if data.ndim != 2 or data.shape[1] != 3:
        from ...errors import BadInputError

        raise BadInputError(
            f"Points layer {layer.name!r} has {data.shape[1]}-D points; a video needs (t, y, x)"
        )
    table = pd.DataFrame(
        {"frame": np.round(data[:, 0]).astype(int), "x": data[:, 2], "y": data[:, 1]}
    )
    feats = layer.features.reset_index(drop=True)
    key = landmark_key(feats)
    conf = confidence_column(feats)
    # Proofread (user-labelled) points keep their mark on the napari route too (issue 22).
    marks = ("user_labelled",) if "user_labelled" in feats.columns else ()
    for col in (*(key.source if key else ()), *((conf,) if conf else ()), *marks):
        table[col] = feats[col].to_numpy()
    if layer.metadata.get("tracks_n_frames") is not None:
        table.attrs["n_frames"] = int(layer.metadata["tracks_n_frames"])
    return table


def source_geometry(layer: Any) -> tuple[int, tuple[int, int] | None]:
    """Frames and size of the video a source layer shows.

    Frames of the video a source layer shows (a flow sequence has one field fewer) and its
    (H, W) in video pixels (None for flow, which may be resized).
    """
    if layer.metadata.get("source_type") == "flow":
        return int(layer.metadata["flow"].shape[0]) + 1, None
    shape = layer.data.shape
    return int(shape[0]), (int(shape[1]), int(shape[2]))


def tracks_layer_data(table: Any) -> tuple[np.ndarray, Any, dict]:
    """A long landmark table as Points layer data.

    A long landmark table (``read_tracks``) as Points data ``(t, y, x)``, features
    (``individual``, ``keypoint``, ``confidence``) and metadata; positions the tracker lost are
    left out (the layer's metadata keeps the tracked video's length).
    """
    keep = np.isfinite(table["x"].to_numpy(float)) & np.isfinite(table["y"].to_numpy(float))
    rows = table[keep].reset_index(drop=True)
    data = rows[["frame", "y", "x"]].to_numpy(float)
    feats = rows.drop(columns=["frame", "x", "y"])
    meta = {f"tracks_{k}": v for k, v in table.attrs.items()}
    return data, feats, meta


#: Per-frame schemes (docs/performance.md): label → config value.
WINDOWING_CHOICES = {"chunked (seamless)": "chunked", "sliding windows": "sliding"}
#: The extractor config's stream values (docs/streams.md).
STREAM_CHOICES = ("flow", "rgb", "two-stream")


def roi_from_shapes(shapes: Any, video: Any) -> tuple[int, int, int, int]:
    """The first shape of a Shapes layer as a region of the video.

    The first shape of a Shapes layer as a region ``(x, y, w, h)`` in the video layer's data
    pixels (through both layers' transforms), clipped to the frame.
    """
    if len(shapes.data) == 0:
        raise ValueError(f"Shapes layer {shapes.name!r} is empty: draw a rectangle first")
    vertices = np.asarray(shapes.data[0], float)
    corners = []
    for vertex in vertices:
        world = np.asarray(shapes.data_to_world(vertex), float)
        if len(world) < video.ndim:  # a 2-D rectangle over a (t, y, x) video
            world = np.concatenate([np.zeros(video.ndim - len(world)), world])
        corners.append(np.asarray(video.world_to_data(world), float)[-2:])
    yx = np.asarray(corners)
    h, w = (int(v) for v in video.data.shape[1:3])
    y0, x0 = np.clip(np.floor(yx.min(axis=0) + 0.5), 0, [h, w]).astype(int)
    y1, x1 = np.clip(np.floor(yx.max(axis=0) + 0.5) + 1, 0, [h, w]).astype(int)
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


class ExtractWidget(Container):
    """I3D feature extraction (Plugins ▸ Flow Features ▸ I3D feature extraction)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self.extend([
            *self._source_controls(), *self._model_controls(), *self._window_controls(),
            *self._point_controls(), *self._frame_controls(), *self._output_controls(),
            *self._run_controls(),
        ])  # fmt: skip
        self._worker: Any = None
        self._frame_predictions: dict[int, str] = {}
        self._predicted_layer: Any = None
        self._cancel = threading.Event()
        self._progress: Any = None
        self._flow_progress: Any = None  # optical flow runs ahead of the encoder: its own bar
        self._desc = ""  # the progress bar's title, kept for status updates
        # (done, total) each phase's bar reached in the last run, e.g. {"flow": (96, 96), ...}.
        self.phase_progress: dict[str, tuple[int, int]] = {}
        self._connect_events(napari_viewer)
        self._refresh()
        # Start the model process now: TensorFlow imports while the user fills in the form.
        model_worker().start()
        # The last napari window with an extraction dock closes: the worker and its files go.
        _session.on_viewer_closed(napari_viewer, "model worker", _on_window_closed)
        make_scrollable(self)  # the three docks together fit a 1280x800 screen

    # -- form construction (each part returns its widgets in the order the dock shows them) ----
    def _source_controls(self) -> list[Any]:
        """The source layer, the stream(s) it feeds and the optical flow method."""
        from ...flow.compute import METHODS

        self.source = ComboBox(label="source", choices=lambda _: source_layer_choices(self._viewer))
        self.stream = ComboBox(label="stream", choices=list(STREAM_CHOICES), value="flow",
                               tooltip="flow: motion; rgb: appearance, no optical flow (fast); "
                                       "two-stream: both (docs/streams.md)")  # fmt: skip
        self.flow_method = ComboBox(label="flow method", choices=list(METHODS), value="dis")
        return [self.source, self.stream, self.flow_method]

    def _model_controls(self) -> list[Any]:
        """The weights (pretrained, random, checkpoint or registry), end point and runtime."""
        from ...config import DEFAULT_WEIGHTS_ENV

        self.weights = ComboBox(
            label="model",
            choices=["DeepMind pretrained", "random weights", "DeepMind checkpoint", "registry"],
            value="random weights" if os.environ.get(DEFAULT_WEIGHTS_ENV) == "random"
            else "DeepMind pretrained",
            tooltip="DeepMind pretrained: flow_imagenet / rgb_imagenet, downloaded and cached on "
            "first use; random weights are marked in every result",
        )  # fmt: skip
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.checkpoint = FileEdit(
            label="checkpoint (.index)", mode=FileDialogMode.EXISTING_FILE, filter="*.index"
        )
        self.rgb_checkpoint = FileEdit(
            label="RGB checkpoint (.index)", mode=FileDialogMode.EXISTING_FILE, filter="*.index"
        )
        self.registry_dir = FileEdit(
            label="registry folder", mode=FileDialogMode.EXISTING_DIRECTORY
        )
        self.model_name = LineEdit(label="model name", value="i3d-flow")
        self.version = LineEdit(label="version (empty: newest)", value="")
        self.endpoint = ComboBox(
            label="end point", choices=list(ENDPOINT_CHOICES), value="Mixed_5c"
        )
        self.runtime = ComboBox(label="runtime", choices=["auto", "openvino", "tensorflow", "torch"],
                                tooltip="auto: PyTorch on a CUDA GPU when both are there, else "
                                        "OpenVINO (docs/performance.md)")  # fmt: skip
        return [self.weights, self.seed, self.checkpoint, self.rgb_checkpoint, self.registry_dir,
                self.model_name, self.version, self.endpoint, self.runtime]  # fmt: skip

    def _window_controls(self) -> list[Any]:
        """The per-frame scheme: chunked, or sliding windows of a clip length at a stride."""
        self.windowing = ComboBox(label="windowing", choices=list(WINDOWING_CHOICES),
                                  tooltip="chunked: seamless rows, each frame encoded about once; "
                                          "sliding: the seed's clip-length windows at stride")  # fmt: skip
        self.clip_length = SpinBox(label="clip length", value=16, min=1, max=256)
        self.stride = SpinBox(label="stride", value=8, min=1, max=256)
        return [self.windowing, self.clip_length, self.stride]

    def _point_controls(self) -> list[Any]:
        """The post-encoder and, for point extraction, the landmarks and how gaps are filled."""
        self.post_encoder = ComboBox(
            label="Post-Encoder Module",
            choices=list(POST_ENCODER_CHOICES),
            value="Global Average Pooling",
        )
        self.interpolation = ComboBox(label="Interpolation", choices=list(INTERPOLATION_CHOICES))
        self.points = ComboBox(label="Point layer", choices=lambda _: self._points_choices())
        self.load_tracks_button = PushButton(text="Load tracks…")
        self.min_confidence = FloatSpinBox(label="min confidence", value=0.0, min=0.0, max=1.0,
                                           step=0.05, tooltip="points below count as missing")  # fmt: skip
        self.max_gap = SpinBox(label="max gap (frames)", value=0, min=0, max=100000,
                               tooltip="fill gaps of at most this many frames linearly")  # fmt: skip
        self.fill_method = ComboBox(label="fill keyframes", choices=list(FILL_CHOICES))
        self.fill_button = PushButton(text="Fill between keyframes")
        return [self.post_encoder, self.interpolation, self.points, self.load_tracks_button,
                self.min_confidence, self.max_gap, self.fill_method, self.fill_button]  # fmt: skip

    def _frame_controls(self) -> list[Any]:
        """What is read of each frame: the resize, the region, and where to keep the flow."""
        self.resize = ComboBox(label="resize", choices=list(RESIZE_CHOICES), value="auto",
                               tooltip=f"auto: a video's longest side to {AUTO_MAX_SIDE} px before "
                                       "flow and encoder (as the command line does; a flow file "
                                       "keeps its size); full size; or a longest side of your "
                                       "own")  # fmt: skip
        self.max_side = SpinBox(label="max side (px)", value=AUTO_MAX_SIDE, min=8, max=8192,
                                tooltip="resize frames so the longest side is at most this before "
                                        "flow and encoder (faster; docs/performance.md)")  # fmt: skip
        self.roi = ComboBox(label="region", choices=lambda _: self._roi_choices(),
                            tooltip="a Shapes layer's first rectangle: only that part of the "
                                    "frame is read, flowed and encoded")  # fmt: skip
        self.keep_flow = FileEdit(label="keep flow (.npy, optional)",
                                  mode=FileDialogMode.OPTIONAL_FILE, filter="*.npy",
                                  value=None)  # fmt: skip
        return [self.resize, self.max_side, self.roi, self.keep_flow]

    def _output_controls(self) -> list[Any]:
        """The heatmap, the Kinetics predictions and whether results replace the last run's."""
        self.heatmap = ComboBox(label="heatmap", choices=list(HEATMAP_CHOICES))
        self.channel = SpinBox(label="channel", value=0, min=0, max=4095)
        self.predict = CheckBox(
            text="Kinetics predictions", value=False,
            tooltip="Logits end point with DeepMind weights: the top-5 Kinetics (human action) "
            "classes of the current frame's window; see docs/streams.md for what they mean",
        )  # fmt: skip
        self.replace = CheckBox(
            text="replace previous results", value=False,
            tooltip="On: results go to 'features: <source>' layers, replacing the last run's. "
            "Off: each run's layers are named by source, post-encoder and end point.",
        )  # fmt: skip
        return [self.heatmap, self.channel, self.predict, self.replace]

    def _run_controls(self) -> list[Any]:
        """Save settings, run (current frame / all), cancel, and the status and prediction lines."""
        self.save_settings_button = PushButton(
            text="Save settings…",
            tooltip="these settings as YAML for `flow-features extract --config` (docs/batch.md)",
        )
        self.run_frame = PushButton(text="Run current frame")
        self.run_all = PushButton(text="Run all frames")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.predictions = Label(value="")
        return [self.save_settings_button, self.run_frame, self.run_all, self.cancel_button,
                self.status, self.predictions]  # fmt: skip

    def _connect_events(self, viewer: napari.viewer.Viewer) -> None:
        """Buttons to their actions; form and layer-list changes to the visible controls."""
        for widget in (self.source, self.stream, self.weights, self.post_encoder, self.heatmap,
                       self.windowing, self.resize):  # fmt: skip
            widget.changed.connect(self._update_visibility)
        self.run_frame.changed.connect(lambda *_: self.run(current_frame=True))
        self.run_all.changed.connect(lambda *_: self.run(current_frame=False))
        self.cancel_button.changed.connect(self.cancel)
        self.load_tracks_button.changed.connect(self._ask_tracks_file)
        self.fill_button.changed.connect(lambda *_: self.fill_keyframes())
        self.save_settings_button.changed.connect(self._ask_settings_file)
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        viewer.layers.events.removed.connect(self._release_maps)
        viewer.dims.events.current_step.connect(self._show_prediction)

    # -- form ----------------------------------------------------------------------------------
    def _points_choices(self) -> list[tuple[str, Any]]:
        from napari.layers import Points

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Points)]

    def _roi_choices(self) -> list[tuple[str, Any]]:
        from napari.layers import Shapes

        shapes = [(f"{layer.name} (first shape)", layer) for layer in self._viewer.layers
                  if isinstance(layer, Shapes)]  # fmt: skip
        return [("whole frame", None), *shapes]

    def _refresh(self, *_: Any) -> None:
        self.source.reset_choices()
        self.points.reset_choices()
        self.roi.reset_choices()
        self._update_visibility()

    def _update_visibility(self, *_: Any) -> None:
        layer = self.source.value
        self.flow_method.visible = (
            layer is not None
            and layer.metadata.get("source_type") != "flow"
            and self.stream.value != "rgb"  # the RGB stream computes no flow
        )
        kind = self.weights.value
        self.seed.visible = kind == "random weights"
        self.checkpoint.visible = kind == "DeepMind checkpoint"
        self.rgb_checkpoint.visible = kind == "DeepMind checkpoint" and (
            self.stream.value == "two-stream"
        )
        for w in (self.registry_dir, self.model_name, self.version):
            w.visible = kind == "registry"
        point = self.post_encoder.value == "Spatial Point Extraction"
        for widget in (self.points, self.interpolation, self.load_tracks_button,
                       self.min_confidence, self.max_gap, self.fill_method,
                       self.fill_button):  # fmt: skip
            widget.visible = point
        self.channel.visible = self.heatmap.value == "one channel"
        sliding = WINDOWING_CHOICES[self.windowing.value] == "sliding"
        self.clip_length.visible = self.stride.visible = sliding
        self.max_side.visible = RESIZE_CHOICES[self.resize.value] == "custom"

    def extractor_config(self) -> dict:
        """The DynamicFeatureExtractor configuration the form describes."""
        cfg: dict[str, Any] = {
            "endpoint": self.endpoint.value,
            "windowing": WINDOWING_CHOICES[self.windowing.value],
            "runtime": self.runtime.value,
            "stream": self.stream.value,
        }
        if self.predict.value:  # the Kinetics classifier: Logits over sliding windows
            cfg["endpoint"], cfg["windowing"] = "Logits", "sliding"
        if cfg["windowing"] == "sliding":  # the window options shape sliding windows only
            cfg["clip_length"], cfg["stride"] = int(self.clip_length.value), int(self.stride.value)
        kind = self.weights.value
        if kind == "DeepMind pretrained":
            cfg["weights"] = {"source": "pretrained"}
        elif kind == "random weights":
            cfg["weights"] = {"source": "random", "seed": int(self.seed.value)}
        elif kind == "DeepMind checkpoint":
            index = str(self.checkpoint.value)
            prefix = index[: -len(".index")] if index.endswith(".index") else index
            cfg["weights"] = {"source": "deepmind", "checkpoint": prefix}
            if cfg["stream"] == "two-stream":
                rgb = str(self.rgb_checkpoint.value)
                cfg["weights"]["rgb_checkpoint"] = rgb.removesuffix(".index")
        else:
            cfg["weights"] = {"source": "registry", "registry_dir": str(self.registry_dir.value),
                              "model_name": self.model_name.value, "version": self.version.value or None}  # fmt: skip
        return cfg

    def batch_settings(self) -> Any:
        """The form as extraction settings.

        The form as :class:`~napari_flow_features.config.ExtractionSettings`: what
        ``flow-features extract --config`` needs to give every video of a study the rows this
        dock gives the open one. Landmarks are per video (a manifest's ``points`` column).
        """
        from ...config import ExtractionSettings, ExtractorConfig

        return ExtractionSettings(
            extractor=ExtractorConfig.from_dict(self.extractor_config(), "the extraction dock"),
            post_encoder=POST_ENCODER_CHOICES[self.post_encoder.value],
            interpolation=INTERPOLATION_CHOICES[self.interpolation.value],
            flow_method=self.flow_method.value,
            max_side=self.max_side_setting(),
            min_confidence=float(self.min_confidence.value) or None,
            max_gap=int(self.max_gap.value) or None,
        )

    def max_side_setting(self) -> int | str | None:
        """The ``max_side`` setting of the resize choice: ``auto``, None (full size) or pixels."""
        choice = RESIZE_CHOICES[self.resize.value]
        if choice == "custom":
            return int(self.max_side.value)
        return "auto" if choice == "auto" else None

    def save_settings(self, path: str) -> Any:
        """Write the form's settings as YAML.

        Write :meth:`batch_settings` as YAML to ``path`` (``ExtractionSettings.to_yaml``,
        atomic); returns the path.
        """
        return self.batch_settings().to_yaml(path)

    def _ask_settings_file(self, *_: Any) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _filter = QFileDialog.getSaveFileName(
            self.native, "Save extraction settings", "extract.yaml", "YAML (*.yaml *.yml)"
        )
        if path:
            try:
                self.save_settings(path)
                show_info(f"Settings saved: {path} (flow-features extract --config {path})")
            except Exception as exc:  # an unwritable place becomes a notification
                show_error(f"Save settings: {exc}")

    # -- running -------------------------------------------------------------------------------
    def _job(self, layer: Any, points_layer: Any, current_frame: bool) -> dict:
        """The model worker's job: the form's settings, the source, the layer's landmarks."""
        heat = HEATMAP_CHOICES[self.heatmap.value]
        changes: dict[str, Any] = {
            "heatmap": int(self.channel.value) if heat == "channel" else heat
        }
        if self.roi.value is not None:
            changes["roi"] = roi_from_shapes(self.roi.value, layer)
        keep = str(self.keep_flow.value or "")
        if keep not in ("", "."):
            if current_frame:
                raise ValueError("keep flow needs Run all frames (not one frame)")
            changes["keep_flow"] = keep
        changes["predict"] = bool(self.predict.value)
        if current_frame:  # the frame on screen (not axis 0 behind a channel slider)
            changes["frames"] = [_axes.current_frame(self._viewer, layer)]
        settings = self.batch_settings().replace(**changes)
        points = self.landmarks(points_layer, layer) if points_layer is not None else None
        return {"settings": settings.to_dict(), "source": job_source(layer), "points": points}

    def run(self, current_frame: bool = False) -> Any:
        """Start a run on the layers selected now; returns the napari worker (tests wait on it)."""
        from napari.qt.threading import thread_worker
        from napari.utils import progress

        if self._worker is not None:
            show_info("Feature extraction is already running; cancel it first.")
            return None
        layer = self.source.value
        post = POST_ENCODER_CHOICES[self.post_encoder.value]
        points_layer = self.points.value if post == "point" else None
        try:
            if layer is None:
                raise ValueError("add a video or flow layer first")
            if post == "point" and points_layer is None:
                raise ValueError("Spatial Point Extraction needs a Points layer with landmarks")
            job = self._job(layer, points_layer, current_frame)
        except Exception as exc:  # every input problem becomes a notification
            show_error(f"I3D feature extraction: {exc}")
            return None

        self._cancel.clear()
        steps = model_worker().iter_run(job, cancel=self._cancel)

        @thread_worker(ignore_errors=True)  # errors go to our own handler, once
        def work():
            return (yield from steps)

        worker = work()
        self._desc = f"I3D features: {layer.name}"
        self._progress = progress(desc=self._desc, unit="frame")
        self.phase_progress = {}
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(
            lambda reply: self._add_results(reply, layer, points_layer, post, current_frame)
        )
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run_frame.enabled = self.run_all.enabled = False
        self.cancel_button.enabled = True
        frames = job["settings"]["frames"]
        self.status.value = f"running on {f'frame {frames[0]}' if frames else 'all frames'}…"
        worker.start()
        return worker

    def cancel(self, *_: Any) -> None:
        """Ask the worker to stop between batches (it is terminated if it does not answer)."""
        if self._worker is not None:
            self.status.value = "cancelling…"
            self._cancel.set()

    def _on_progress(self, value: tuple) -> None:
        """A worker event: ``(done, total)`` windows, a start-up phase, or a child's warning."""
        if value[0] == "warning":
            show_warning(f"I3D feature extraction: {value[1]}")
            return
        if value[0] == "status":
            self.status.value = value[1]
            if self._progress is not None:
                self._progress.set_description(f"{self._desc}: {value[1]}")
            return
        if value[0] == "flow":
            self._update_bar("flow", value[1], value[2])
            return
        done, total = value
        self._update_bar("encoder", done, total)

    def _update_bar(self, phase: str, done: int, total: int) -> None:
        """Move a phase's bar (napari's activity dock shows frames/s and time left)."""
        from napari.utils import progress

        self.phase_progress[phase] = (int(done), int(total))
        if phase == "flow":
            if self._flow_progress is None:
                name = self._desc.split(": ", 1)[-1]
                self._flow_progress = progress(
                    total=total, desc=f"Optical flow: {name}", unit="frame"
                )
            bar = self._flow_progress
        else:
            bar = self._progress
            if bar is not None and bar.total != total:
                bar.set_description(self._desc)
        if bar is None:
            return
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    def _on_error(self, exc: Exception) -> None:
        from ...errors import CancelledError

        if isinstance(exc, CancelledError):
            self.status.value = "cancelled"
            return
        self.status.value = "failed"
        show_error(f"I3D feature extraction failed: {exc}")

    def _on_finished(self) -> None:
        for bar in (self._flow_progress, self._progress):
            if bar is not None:
                bar.close()
        self._progress = self._flow_progress = None
        self._worker = None
        self.run_frame.enabled = self.run_all.enabled = True
        self.cancel_button.enabled = False

    # -- landmarks -----------------------------------------------------------------------------
    def landmarks(self, points_layer: Any, source_layer: Any) -> Any:
        """The Points layer's landmarks for the source video, checked.

        The Points layer's landmarks for the source video, with the form's confidence and gap
        options, checked here (length, names, frame) so problems show before the worker starts;
        warnings (points outside the frame) become notifications.
        """
        import warnings

        from ...extract.landmarks import landmarks_from_points

        n_frames, frame_hw = source_geometry(source_layer)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            landmarks = landmarks_from_points(
                points_table(points_layer),
                n_frames,
                min_confidence=float(self.min_confidence.value) or None,
                max_gap=int(self.max_gap.value) or None,
                frame_hw=frame_hw,
            )
        for warning in caught:
            show_warning(f"{points_layer.name}: {warning.message}")
        return landmarks

    def _ask_tracks_file(self, *_: Any) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _filter = QFileDialog.getOpenFileName(
            self.native,
            "Load tracks",
            "",
            "Tracks (*.h5 *.csv *.slp *.nwb *.parquet);;All files (*)",
        )
        if path:
            try:
                self.load_tracks(path)
            except Exception as exc:  # a bad file becomes a notification
                show_error(f"Load tracks: {exc}")

    def load_tracks(self, path: str, points_format: str = "auto") -> Any:
        """Add a pose-tracker file as a Points layer.

        Add a pose-tracker file (or our landmark table) as a Points layer with ``individual``,
        ``keypoint``, ``confidence`` features, over the chosen source, and pick it for extraction.
        """
        from pathlib import Path

        from ...extract.landmarks import read_landmark_file
        from ...io.landmark_key import landmark_key

        table = read_landmark_file(path, points_format)
        table.attrs = {k: v for k, v in table.attrs.items()
                       if k in ("n_frames", "source_software", "source_file")}  # fmt: skip
        data, feats, meta = tracks_layer_data(table)
        kwargs: dict[str, Any] = {}
        source = self.source.value
        if source is not None:  # the points sit on the video's pixels
            kwargs = {"scale": source.scale[:3], "translate": source.translate[:3]}
        key = landmark_key(feats)
        if key is not None:
            kwargs["face_color"] = key.source[-1]
        layer = self._viewer.add_points(data, features=feats, metadata=meta,
                                        name=f"tracks: {Path(path).stem}", **kwargs)  # fmt: skip
        self.post_encoder.value = "Spatial Point Extraction"
        self.points.reset_choices()
        self.points.value = layer
        return layer

    def fill_keyframes(self) -> Any:
        """Fill the chosen Points layer's keyframes over the frames between them.

        Fill the chosen Points layer's keyframes (per landmark) over the frames between them
        and add the result as a new Points layer to correct; along the flow, the flow of the
        keyframes' span is computed off the Qt thread (Cancel stops it). Returns the worker
        (flow) or the new layer (linear).
        """
        from napari.qt.threading import thread_worker
        from napari.utils import progress

        from ...extract.keyframes import fill_keyframe_table

        source, keys = self.source.value, self.points.value
        try:
            if source is None or keys is None:
                raise ValueError("choose a source and a Points layer with keyframes")
            if self._worker is not None:
                raise ValueError("a run is in progress; cancel it first")
            n_frames, _ = source_geometry(source)
            table = points_table(keys)
            method = FILL_CHOICES[self.fill_method.value]
            if method == "linear":
                return self._add_filled(fill_keyframe_table(table, n_frames, "linear"), keys)
            if len(table) == 0:
                raise ValueError("click the landmark on a few frames first")
            first, last = int(table["frame"].min()), int(table["frame"].max())
            flow = None
            if source.metadata.get("source_type") == "flow":
                flow = source.metadata["flow"]
                first = 0
                chunks = None
            else:
                chunks = range(first, last, 16)
        except Exception as exc:
            show_error(f"Fill between keyframes: {exc}")
            return None
        cancel = self._cancel
        cancel.clear()
        flow_method = self.flow_method.value

        @thread_worker(ignore_errors=True)
        def work():
            from ...errors import CancelledError
            from ...flow.compute import OpticalFlowComputer

            fields = flow
            if chunks is not None:
                computer = OpticalFlowComputer(flow_method)
                parts = []
                for i, start in enumerate(chunks):
                    if cancel.is_set():
                        raise CancelledError("Filling cancelled")
                    stop = min(start + 16, last)
                    frames = np.stack([np.asarray(source.data[t]) for t in range(start, stop + 1)])
                    parts.append(computer.compute(frames))
                    yield i + 1, len(chunks)
                fields = np.concatenate(parts)
            return fill_keyframe_table(table, n_frames, "flow", fields, first)

        worker = work()
        self._desc = f"Fill keyframes: {keys.name}"  # _on_progress restores it on new totals
        self._progress = progress(desc=self._desc)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda out: self._add_filled(out, keys))
        worker.errored.connect(self._on_fill_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run_frame.enabled = self.run_all.enabled = False
        self.cancel_button.enabled = True
        self.status.value = "filling between keyframes along the flow…"
        worker.start()
        return worker

    def _on_fill_error(self, exc: Exception) -> None:
        from ...errors import CancelledError

        self.status.value = "cancelled" if isinstance(exc, CancelledError) else "failed"
        if not isinstance(exc, CancelledError):
            show_error(f"Fill between keyframes failed: {exc}")

    def _add_filled(self, table: Any, keys: Any) -> Any:
        """Add the filled positions as a Points layer.

        The filled positions as the Points layer ``filled: <keyframes layer>`` (replaced on a
        new fill), with the keyframes' identity columns and ``keyframe``.
        """
        name = f"filled: {keys.name}"
        data = table[["frame", "y", "x"]].to_numpy(float)
        feats = table.drop(columns=["frame", "x", "y"]).reset_index(drop=True)
        if name in self._viewer.layers:
            self._viewer.layers.remove(name)
        layer = self._viewer.add_points(data, features=feats, name=name, scale=keys.scale,
                                        translate=keys.translate, size=keys.current_size)  # fmt: skip
        self.status.value = f"filled {int((~table['keyframe']).sum())} positions into {name!r}"
        return layer

    # -- results -------------------------------------------------------------------------------
    def _add_results(
        self, reply: dict, layer: Any, points_layer: Any, post: str, one: bool
    ) -> None:
        from .._results import write_results

        try:
            written = write_results(self._viewer, reply, layer, points_layer, post, one,
                                    replace=self.replace.value, release=model_worker().release)  # fmt: skip
        except Exception as exc:  # a layer problem must not take the viewer down
            show_error(f"I3D feature extraction: could not add the results: {exc}")
            return
        self.status.value = f"done: {len(written)} layers updated"
        self.status.tooltip = "\n".join(written)
        from .._convert import frame_predictions

        found = frame_predictions(reply["table"])
        if found or not one:
            self._frame_predictions = {**self._frame_predictions, **found} if one else found
            self._predicted_layer = layer
        self._show_prediction()

    def _show_prediction(self, *_: Any) -> None:
        """The current frame's Kinetics classes (from the last run with predictions)."""
        if not self._frame_predictions or self._predicted_layer is None:
            self.predictions.value = ""
            return
        try:
            frame = _axes.current_frame(self._viewer, self._predicted_layer)
        except Exception:  # the layer was removed: nothing to show
            self.predictions.value = ""
            return
        text = self._frame_predictions.get(int(frame))
        self.predictions.value = f"Kinetics, frame {frame}: {text}" if text else ""

    def _release_maps(self, event: Any) -> None:
        """A removed activation layer's maps file is deleted (it lives in the worker's folder)."""
        maps = event.value.metadata.get("maps_path") if hasattr(event, "value") else None
        if maps and _WORKER is not None:
            _WORKER.release(maps)


def _on_window_closed() -> None:
    """A viewer with an extraction dock closed: when it was the last, stop the worker."""
    if _session.open_windows("model worker") == 0:
        _close_worker()
