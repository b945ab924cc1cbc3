"""Dock widget ``Compute optical flow``: flow for a video layer, added as aligned flow layers.

Thin: it collects parameters, runs :meth:`OpticalFlowComputer.iter_compute` in a napari
``thread_worker`` (OpenCV is safe in the napari process; TensorFlow is never imported), shows progress
in the activity dock, and turns the result into layers.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.types import FileDialogMode
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, SpinBox
from napari.utils.notifications import show_error, show_info

from ...config import AUTO_MAX_SIDE
from ...flow.compute import DIS_PRESETS, METHODS
from .. import _session
from .scroll import make_scrollable

if TYPE_CHECKING:
    from collections.abc import Generator

    import numpy as np

    import napari


def video_layer_choices(viewer: Any) -> list[tuple[str, Any]]:
    """List the video layers flow can be computed for.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        The viewer.

    Returns
    -------
    list of (str, napari.layers.Image)
        ``(name, layer)`` for every Image layer that is a video ``(T, H, W)`` or ``(T, H, W, 3)``,
        not flow.
    """
    from napari.layers import Image

    return [
        (layer.name, layer)
        for layer in viewer.layers
        if isinstance(layer, Image)
        and layer.metadata.get("source_type") != "flow"
        and layer.data.ndim == (4 if layer.rgb else 3)
    ]


#: Temporary flow folders this napari session made (folder -> its viewer's window key); removed
#: with their layer, when their viewer closes, or at exit.
_TEMP_FOLDERS: dict[str, int | None] = {}


def release_temp_flow(path: str | None) -> None:
    """Remove the temporary folder of a flow file this session wrote (other paths are kept).

    Parameters
    ----------
    path : str or None
        A flow file's path, e.g. a flow layer's ``metadata['path']``.
    """
    if not path:
        return
    folder = str(Path(path).parent)
    if folder in _TEMP_FOLDERS:
        del _TEMP_FOLDERS[folder]
        shutil.rmtree(folder, ignore_errors=True)


def _release_all(window: int | None = None) -> None:
    """Remove the temporary flow folders of one viewer window (all: ``None``)."""
    for folder, owner in list(_TEMP_FOLDERS.items()):
        if window is None or owner == window:
            release_temp_flow(str(Path(folder) / "flow.npy"))


atexit.register(_release_all)


def aligned_transform(video_layer: Any, scale_yx: tuple[float, float]) -> tuple[list, list]:
    """Place flow pixels over the video pixels they were computed from.

    A resized flow pixel j covers video pixels around ``(j + 0.5) * s - 0.5`` (area resampling).

    Parameters
    ----------
    video_layer : napari.layers.Image
        The source video layer.
    scale_yx : tuple of float
        Video pixels per flow pixel, ``(sy, sx)`` (1 at full size).

    Returns
    -------
    scale, translate : list of float
        The ``(t, y, x)`` layer scale and translate of the flow layers.
    """
    scale = list(video_layer.scale[:3])
    translate = list(video_layer.translate[:3])
    for axis, s in zip((1, 2), scale_yx, strict=True):
        translate[axis] = translate[axis] + (s - 1) / 2 * scale[axis]
        scale[axis] = scale[axis] * s
    return scale, translate


#: The resize before flow, as the extraction dock offers it: its default, full size, or a side.
RESIZE_CHOICES = {"auto": "auto", "full size": "full", "longest side (px)": "custom"}


class FlowWidget(Container):
    """Compute dense optical flow for a video layer (Plugins ▸ Flow Features ▸ Compute optical flow).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer the dock belongs to (napari passes it).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self.video = ComboBox(label="video", choices=lambda _: video_layer_choices(self._viewer))
        self.method = ComboBox(label="method", choices=list(METHODS), value="dis")
        self.preset = ComboBox(label="DIS preset", choices=list(DIS_PRESETS), value="medium")
        # Extraction's resize choices and default, so features from this flow layer equal
        # features from the video layer.
        self.resize = ComboBox(
            label="resize", choices=list(RESIZE_CHOICES), value="auto",
            tooltip=f"auto: the longest side to {AUTO_MAX_SIDE} px, as feature extraction does; "
            "full size; or a longest side of your own",
        )  # fmt: skip
        self.max_side = SpinBox(
            label="max side (px)", value=AUTO_MAX_SIDE, min=8, max=8192, step=16,
            tooltip="Resize so the longest side is at most this before flow.",
        )  # fmt: skip
        self.workers = SpinBox(
            label="processes", value=0, min=0, max=64,
            tooltip="Processes over frame pairs (0: automatic: one per core, at most 2, for Farneback and tvl1-skimage; in-process for DIS and OpenCV TV-L1).",
        )  # fmt: skip
        self.output = FileEdit(
            label="save flow to", mode=FileDialogMode.OPTIONAL_FILE, filter="*.npy", value=None,
            tooltip="Optional .npy for the raw flow; empty: a temporary file (kept off RAM).",
        )  # fmt: skip
        self.run_button = PushButton(text="Compute optical flow")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend(
            [self.video, self.method, self.preset, self.resize, self.max_side, self.workers,
             self.output,
             self.run_button, self.cancel_button, self.status]
        )  # fmt: skip
        self.method.changed.connect(self._on_method)
        self.resize.changed.connect(self._on_resize)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        napari_viewer.layers.events.inserted.connect(self._refresh)
        napari_viewer.layers.events.removed.connect(self._refresh)
        napari_viewer.layers.events.removed.connect(self._on_removed)
        window = _session.window_key(napari_viewer)  # its viewer closes: no flow files stay
        _session.on_viewer_closed(napari_viewer, "flow files", lambda: _release_all(window))
        self._window = window
        self._worker: Any = None
        self._output: Path | None = None
        self._run: Any = None
        self._progress: Any = None
        self._on_method()
        self._on_resize()
        self._refresh()
        make_scrollable(self)  # the three docks together fit a 1280x800 screen

    def _refresh(self, *_: Any) -> None:
        self.video.reset_choices()

    def _on_method(self, *_: Any) -> None:
        self.preset.visible = self.method.value == "dis"

    def _on_resize(self, *_: Any) -> None:
        self.max_side.visible = RESIZE_CHOICES[self.resize.value] == "custom"

    def flow_max_side(self) -> int | None:
        """The longest side the form asks for; ``None`` for the video's own size.

        Returns
        -------
        int or None
            Pixels, or ``None`` for full size.
        """
        choice = RESIZE_CHOICES[self.resize.value]
        if choice == "custom":
            return int(self.max_side.value)
        return AUTO_MAX_SIDE if choice == "auto" else None

    # -- running -----------------------------------------------------------------------------------
    def run(self, *_: Any) -> Any:
        """Start computing flow for the chosen video in a background thread.

        Returns
        -------
        napari.qt.threading.GeneratorWorker or None
            The started worker (tests wait on it); ``None`` when there is nothing to run (the
            reason is shown).
        """
        from napari.qt.threading import thread_worker
        from napari.utils import progress

        from ...flow.compute import OpticalFlowComputer

        if self._worker is not None:
            show_info("Optical flow is already running; cancel it first.")
            return None
        layer = self.video.value
        if layer is None:
            show_error("Compute optical flow: add a video layer first (File ▸ Open a video).")
            return None
        try:
            computer = OpticalFlowComputer(
                method=self.method.value,
                preset=self.preset.value,
                max_side=self.flow_max_side(),
                workers=self.workers.value or None,
            )
            spec = computer.spec_for(layer.data)
            output = self._output_path(layer)
        except Exception as exc:
            show_error(f"Compute optical flow: {exc}")
            return None

        self._output = output
        run = computer.iter_compute(layer.data, output)
        # quit() stops iterating but leaves the generator open; closing it (in _on_finished)
        # removes the partial output at once instead of whenever it is garbage collected.
        self._run = run

        @thread_worker(ignore_errors=True)  # errors go to our own handler, once
        def work() -> Generator[tuple[int, int], None, np.ndarray]:
            return (yield from run)

        worker = work()
        total = spec.n_frames - 1
        self._progress = progress(total=total, desc=f"Optical flow ({spec.method}): {layer.name}")
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda flow: self._add_layers(layer, flow, spec, output))
        worker.errored.connect(lambda exc: show_error(f"Compute optical flow failed: {exc}"))
        worker.aborted.connect(lambda: self._set_status("cancelled"))
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self._set_status(f"computing {total} frame pairs…")
        worker.start()
        return worker

    def cancel(self, *_: Any) -> None:
        """Stop after the frame pairs in progress; partial output files are removed."""
        if self._worker is not None:
            self._set_status("cancelling…")
            self._worker.quit()

    def _output_path(self, layer: Any) -> Path:
        value = str(self.output.value or "").strip()
        if value and value != ".":
            path = Path(value)
            return path if path.suffix.lower() == ".npy" else path.with_suffix(".npy")
        folder = Path(tempfile.mkdtemp(prefix="napari-flow-"))
        _TEMP_FOLDERS[str(folder)] = self._window
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in layer.name)
        return folder / f"{safe}_{self.method.value}.npy"

    def _on_progress(self, value: tuple[int, int]) -> None:
        done, _total = value
        if self._progress is not None:
            self._progress.update(done - self._progress.n)

    def _on_removed(self, event: Any) -> None:
        """A flow layer went: its temporary flow file goes too."""
        meta = event.value.metadata
        if meta.get("source_type") == "flow":
            release_temp_flow(meta.get("path"))

    def _on_finished(self) -> None:
        if self._run is not None:
            self._run.close()
            self._run = None
        if self._output is not None and not self._output.exists():  # cancelled or failed
            release_temp_flow(str(self._output))
        self._output = None
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self._worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def _add_layers(self, layer: Any, flow: Any, spec: Any, output: Path) -> None:
        from .._reader import flow_layer_data

        meta = {**spec.to_dict(), "path": str(output), "video_layer": layer.name}
        scale, translate = aligned_transform(layer, spec.scale_yx)
        for data, kwargs, kind in flow_layer_data(flow, layer.name, meta, over_video=True):
            kwargs = {**kwargs, "scale": scale, "translate": translate}
            getattr(self._viewer, f"add_{kind}")(data, **kwargs)
        # The landmarks stay visible above the flow.
        for other in list(self._viewer.layers):
            if other.__class__.__name__ == "Points":  # napari may hand plugins proxies
                self._viewer.layers.move(self._viewer.layers.index(other), len(self._viewer.layers))
        self._set_status(f"done: {flow.shape[0]} flow fields ({spec.method})")
        self.status.tooltip = f"raw flow {tuple(flow.shape)} float32 in {output}"
