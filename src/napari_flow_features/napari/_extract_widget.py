"""Dock widget ``I3D feature extraction``: the seed's post-encoder widget, the napari way.

Thin: it collects parameters, sends the job to the model worker process (TensorFlow never loads in
napari), shows progress in the activity dock, and turns the reply into layers on the layers that were
selected when the run started.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info, show_warning

from . import _axes, _session
from ._scroll import make_scrollable

if TYPE_CHECKING:
    import napari

POST_ENCODER_CHOICES = {
    "None": "none",
    "Global Average Pooling": "gap",
    "Spatial Point Extraction": "point",
}
INTERPOLATION_CHOICES = {"Bilinear (recommended)": "bilinear", "Nearest": "nearest"}
HEATMAP_CHOICES = {"channel mean": "mean", "L2 norm": "l2", "one channel": "channel"}
ENDPOINT_CHOICES = ("Mixed_5c", "Mixed_5b", "Mixed_4f", "Mixed_4e", "Mixed_4d", "Mixed_4c",
                    "Mixed_4b", "Mixed_3c", "Mixed_3b", "Conv3d_2c_3x3")  # fmt: skip

_WORKER: Any = None


def model_worker() -> Any:
    """The napari session's model worker process (started on first use, kept warm)."""
    global _WORKER
    if _WORKER is None:
        from ..extract.worker import ModelWorker

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
    from ._flow_widget import video_layer_choices

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
    the file is a video of the layer's shape, so the frames are not pickled to the worker."""
    from ..io.video import VIDEO_EXTENSIONS, VideoArray

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
    """A Points layer as a landmark table (frame, x, y[, track_id]) in data coordinates."""
    import pandas as pd

    data = np.asarray(layer.data, dtype=float)
    if data.ndim != 2 or data.shape[1] != 3:
        from ..errors import BadInputError

        raise BadInputError(
            f"Points layer {layer.name!r} has {data.shape[1]}-D points; a video needs (t, y, x)"
        )
    table = pd.DataFrame(
        {"frame": np.round(data[:, 0]).astype(int), "x": data[:, 2], "y": data[:, 1]}
    )
    for key in ("track_id", "label"):
        if key in layer.features.columns:
            table[key] = layer.features[key].to_numpy()
            break
    return table


class ExtractWidget(Container):
    """I3D feature extraction (Plugins ▸ Flow Features ▸ I3D feature extraction)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        from ..flow.compute import METHODS

        self._viewer = napari_viewer
        self.source = ComboBox(label="source", choices=lambda _: source_layer_choices(self._viewer))
        self.flow_method = ComboBox(label="flow method", choices=list(METHODS), value="dis")
        self.weights = ComboBox(
            label="model", choices=["random weights", "DeepMind checkpoint", "registry"]
        )
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.checkpoint = FileEdit(label="checkpoint (.index)", mode="r", filter="*.index")
        self.registry_dir = FileEdit(label="registry folder", mode="d")
        self.model_name = LineEdit(label="model name", value="i3d-flow")
        self.version = LineEdit(label="version (empty: newest)", value="")
        self.endpoint = ComboBox(
            label="end point", choices=list(ENDPOINT_CHOICES), value="Mixed_5c"
        )
        self.clip_length = SpinBox(label="clip length", value=16, min=1, max=256)
        self.stride = SpinBox(label="stride", value=8, min=1, max=256)
        self.post_encoder = ComboBox(
            label="Post-Encoder Module",
            choices=list(POST_ENCODER_CHOICES),
            value="Global Average Pooling",
        )
        self.interpolation = ComboBox(label="Interpolation", choices=list(INTERPOLATION_CHOICES))
        self.points = ComboBox(label="Point layer", choices=lambda _: self._points_choices())
        self.heatmap = ComboBox(label="heatmap", choices=list(HEATMAP_CHOICES))
        self.channel = SpinBox(label="channel", value=0, min=0, max=4095)
        self.replace = CheckBox(
            text="replace previous results", value=False,
            tooltip="On: results go to 'features: <source>' layers, replacing the last run's. "
            "Off: each run's layers are named by source, post-encoder and end point.",
        )  # fmt: skip
        self.run_frame = PushButton(text="Run current frame")
        self.run_all = PushButton(text="Run all frames")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend([
            self.source, self.flow_method, self.weights, self.seed, self.checkpoint,
            self.registry_dir, self.model_name, self.version, self.endpoint, self.clip_length,
            self.stride, self.post_encoder, self.interpolation, self.points, self.heatmap,
            self.channel, self.replace, self.run_frame, self.run_all, self.cancel_button,
            self.status,
        ])  # fmt: skip
        for widget in (self.source, self.weights, self.post_encoder, self.heatmap):
            widget.changed.connect(self._update_visibility)
        self.run_frame.changed.connect(lambda *_: self.run(current_frame=True))
        self.run_all.changed.connect(lambda *_: self.run(current_frame=False))
        self.cancel_button.changed.connect(self.cancel)
        napari_viewer.layers.events.inserted.connect(self._refresh)
        napari_viewer.layers.events.removed.connect(self._refresh)
        napari_viewer.layers.events.removed.connect(self._release_maps)
        self._worker: Any = None
        self._cancel = threading.Event()
        self._progress: Any = None
        self._refresh()
        # Start the model process now: TensorFlow imports while the user fills in the form.
        model_worker().start()
        # The last napari window with an extraction dock closes: the worker and its files go.
        _session.on_viewer_closed(napari_viewer, "model worker", _on_window_closed)
        make_scrollable(self)  # the three docks together fit a 1280x800 screen

    # -- form ----------------------------------------------------------------------------------
    def _points_choices(self) -> list[tuple[str, Any]]:
        from napari.layers import Points

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Points)]

    def _refresh(self, *_: Any) -> None:
        self.source.reset_choices()
        self.points.reset_choices()
        self._update_visibility()

    def _update_visibility(self, *_: Any) -> None:
        layer = self.source.value
        self.flow_method.visible = layer is not None and layer.metadata.get("source_type") != "flow"
        kind = self.weights.value
        self.seed.visible = kind == "random weights"
        self.checkpoint.visible = kind == "DeepMind checkpoint"
        for w in (self.registry_dir, self.model_name, self.version):
            w.visible = kind == "registry"
        self.points.visible = self.interpolation.visible = (
            self.post_encoder.value == "Spatial Point Extraction"
        )
        self.channel.visible = self.heatmap.value == "one channel"

    def extractor_config(self) -> dict:
        """The DynamicFeatureExtractor configuration the form describes."""
        cfg: dict[str, Any] = {
            "endpoint": self.endpoint.value,
            "clip_length": int(self.clip_length.value),
            "stride": int(self.stride.value),
        }
        kind = self.weights.value
        if kind == "random weights":
            cfg["weights"] = {"source": "random", "seed": int(self.seed.value)}
        elif kind == "DeepMind checkpoint":
            index = str(self.checkpoint.value)
            prefix = index[: -len(".index")] if index.endswith(".index") else index
            cfg["weights"] = {"source": "deepmind", "checkpoint": prefix}
        else:
            cfg["weights"] = {"source": "registry", "registry_dir": str(self.registry_dir.value),
                              "model_name": self.model_name.value, "version": self.version.value or None}  # fmt: skip
        return cfg

    # -- running -------------------------------------------------------------------------------
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
            heat = HEATMAP_CHOICES[self.heatmap.value]
            options: dict[str, Any] = {
                "post_encoder": post,
                "interpolation": INTERPOLATION_CHOICES[self.interpolation.value],
                "flow_method": self.flow_method.value,
                "heatmap": int(self.channel.value) if heat == "channel" else heat,
            }
            if points_layer is not None:
                options["points"] = points_table(points_layer)
            frame = _axes.current_frame(self._viewer, layer)  # not axis 0 behind a channel slider
            if current_frame:
                options["frames"] = [frame]
            job = {
                "extractor": self.extractor_config(),
                "source": job_source(layer),
                "options": options,
            }
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
        self._progress = progress(desc=self._desc)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(
            lambda reply: self._add_results(reply, layer, points_layer, post, current_frame)
        )
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run_frame.enabled = self.run_all.enabled = False
        self.cancel_button.enabled = True
        self.status.value = (
            f"running on {'frame ' + str(frame) if current_frame else 'all frames'}…"
        )
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
        done, total = value
        if self._progress is not None:
            if self._progress.total != total:
                self._progress.set_description(self._desc)
                self._progress.total = total
            self._progress.update(done - self._progress.n)

    def _on_error(self, exc: Exception) -> None:
        from ..errors import CancelledError

        if isinstance(exc, CancelledError):
            self.status.value = "cancelled"
            return
        self.status.value = "failed"
        show_error(f"I3D feature extraction failed: {exc}")

    def _on_finished(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self._worker = None
        self.run_frame.enabled = self.run_all.enabled = True
        self.cancel_button.enabled = False

    # -- results -------------------------------------------------------------------------------
    def _add_results(
        self, reply: dict, layer: Any, points_layer: Any, post: str, one: bool
    ) -> None:
        from ._results import write_results

        try:
            written = write_results(self._viewer, reply, layer, points_layer, post, one,
                                    replace=self.replace.value, release=model_worker().release)  # fmt: skip
        except Exception as exc:  # a layer problem must not take the viewer down
            show_error(f"I3D feature extraction: could not add the results: {exc}")
            return
        self.status.value = f"done: {len(written)} layers updated"
        self.status.tooltip = "\n".join(written)

    def _release_maps(self, event: Any) -> None:
        """A removed activation layer's maps file is deleted (it lives in the worker's folder)."""
        maps = event.value.metadata.get("maps_path") if hasattr(event, "value") else None
        if maps and _WORKER is not None:
            _WORKER.release(maps)


def _on_window_closed() -> None:
    """A viewer with an extraction dock closed: when it was the last, stop the worker."""
    if _session.open_windows("model worker") == 0:
        _close_worker()
