"""``DynamicFeatureExtractor``: the I3D encoder configured from YAML, with I3D preprocessing.

Its configuration is an immutable :class:`~napari_flow_features.config.ExtractorConfig` (fields
listed in ``default_config.yaml`` beside this file and in docs/configuration.md). What the run
derives from it (the resolved stream and input channels, quantisation on for DeepMind weights,
a registry model's own end point) lives in attributes of the extractor, never in the config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..config import (
    CHUNK_MARGIN,
    DEFAULT_WEIGHTS_ENV,
    FUSIONS,
    STREAM_CHANNELS,
    STREAMS,
    WEIGHT_SOURCES,
    WINDOWINGS,
    ExtractorConfig,
    read_yaml_mapping,
)
from ..errors import BadInputError
from ..flow.sequences import FlowWindow, frame_windows, preprocess_flow_inplace, window_data

__all__ = [
    "CHUNK_MARGIN",
    "DEFAULT_WEIGHTS_ENV",
    "FUSIONS",
    "STREAMS",
    "STREAM_CHANNELS",
    "WEIGHT_SOURCES",
    "WINDOWINGS",
    "DynamicFeatureExtractor",
    "default_config",
    "load_config",
    "random_weights_marks",
    "read_yaml_mapping",
]


def default_config() -> dict[str, Any]:
    """Return the shipped default configuration as plain data (a fresh copy).

    ``weights.source`` is ``pretrained`` unless ``$NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS`` says
    otherwise.

    Returns
    -------
    dict
        Every field of :class:`~napari_flow_features.config.ExtractorConfig` with its default.
    """
    return ExtractorConfig().to_dict()


def load_config(path: str | os.PathLike | None = None, **overrides: Any) -> ExtractorConfig:
    """Read defaults, then a YAML file's fields, then keyword overrides, resolved for a run.

    Parameters
    ----------
    path
        A YAML file (only the fields it sets), or None.
    **overrides
        Fields that replace the file's; unknown names are errors.

    Returns
    -------
    ExtractorConfig
        The configuration with ``stream`` and ``in_channels`` filled in
        (:meth:`~napari_flow_features.config.ExtractorConfig.resolved`).
    """
    return ExtractorConfig.from_yaml(path, **overrides).resolved()


class DynamicFeatureExtractor:
    """I3D flow encoder with its preprocessing, configured from YAML.

    ``config`` is the immutable :class:`~napari_flow_features.config.ExtractorConfig` it was
    given (a run never changes it); ``effective_config``, ``stream``, ``in_channels``,
    ``endpoint`` and ``quantize`` are what it derived (docs/configuration.md).

    Examples
    --------
    >>> extractor = DynamicFeatureExtractor(endpoint="Mixed_4f", clip_length=16)  # doctest: +SKIP
    >>> extractor = DynamicFeatureExtractor("extract.yaml")                       # doctest: +SKIP
    >>> extractor = DynamicFeatureExtractor(config=ExtractorConfig())             # doctest: +SKIP
    >>> windows = extractor.preprocess_flow_sequence(flow)  # [N, L, H, W, 2]     # doctest: +SKIP
    >>> maps = extractor.extract_features(windows)          # [N, T', H', W', C]  # doctest: +SKIP
    """

    def __init__(
        self,
        config_path: str | os.PathLike | None = None,
        *,
        config: ExtractorConfig | dict[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        """Build the encoder: weights loaded, quantisation decided.

        Parameters
        ----------
        config_path
            A YAML file with the fields to set (the defaults fill the rest).
        config
            A ready configuration (an :class:`~napari_flow_features.config.ExtractorConfig`
            or a mapping of its fields), instead of ``config_path``.
        **overrides
            Fields that replace the file's or ``config``'s (``weights`` merges).
        """
        if config is not None and config_path is not None:
            raise BadInputError("Give config_path or config, not both")
        if config is None:
            cfg = ExtractorConfig.from_yaml(config_path, **overrides)
        else:
            if not isinstance(config, ExtractorConfig):
                config = ExtractorConfig.from_dict(config, "config")
            cfg = config.replace(**overrides) if overrides else config
        #: The configuration as given: immutable, never changed by a run.
        self.config: ExtractorConfig = cfg
        #: What runs: ``config`` with stream and input channels resolved and, for a registry
        #: model, the loaded model's end point (a new object; ``config`` is untouched).
        self.effective_config: ExtractorConfig = cfg.resolved()
        self.streams: dict[str, DynamicFeatureExtractor] = {self.stream: self}
        from .runtime import check_precision

        check_precision(cfg.precision, cfg.runtime)  # bf16 needs a CPU with it, int8 NNCF
        if self.stream == "two-stream":
            self._init_two_stream()
            return
        from .._tf_env import no_uname_child

        no_uname_child()  # before Keras imports h5py
        import keras

        from .i3d import build_i3d

        weights = cfg.weights
        if weights.source == "random":
            keras.utils.set_random_seed(int(weights.seed))
        self.model = build_i3d(
            in_channels=self.in_channels,
            endpoint=cfg.endpoint,
            num_classes=cfg.num_classes,
            # int8 quantises the float32 model (model/runtime.py)
            precision="float32" if cfg.precision == "int8" else cfg.precision,
        )
        if weights.source == "random":
            seeded_kernels(self.model, int(weights.seed))
        self.checkpoint_report: Any = None
        self.registry_version: str | None = None
        if weights.source == "registry":
            self._load_registry_model()
        self.pretrained: str | None = None
        if weights.source == "pretrained":
            from .weights import PRETRAINED, pretrained_checkpoint, terminal_progress

            self.pretrained = PRETRAINED[self.stream]
            self.checkpoint_prefix = str(
                pretrained_checkpoint(self.pretrained, terminal_progress())
            )
        elif weights.source == "deepmind":
            self.checkpoint_prefix = os.path.expanduser(str(weights.checkpoint))
        if weights.source in ("deepmind", "pretrained"):
            from .checkpoint import load_deepmind_checkpoint

            self.checkpoint_report = load_deepmind_checkpoint(self.model, self.checkpoint_prefix)
        #: Whether flow is quantised to 256 levels: ``config.quantize``, else on for DeepMind's.
        self.quantize = (
            bool(cfg.quantize)
            if cfg.quantize is not None
            else weights.source in ("deepmind", "pretrained")
        )
        self._call: Any = None

    def _load_registry_model(self) -> None:
        """Load the registry model the config names; its own end point becomes the effective one."""
        from .i3d import ENDPOINTS
        from .registry import ModelSerializer

        w = self.config.weights
        base = os.path.expanduser(str(w.registry_dir))
        if w.version:
            model, meta, version = ModelSerializer.load_model(
                base, str(w.model_name), str(w.version)
            )
        else:
            model, meta, version = ModelSerializer.load_latest_model(base, str(w.model_name))
        channels = int(model.inputs[0].shape[-1])
        model_stream = meta.get("stream") or {2: "flow", 3: "rgb"}.get(channels, "?")
        if channels != self.in_channels or model_stream != self.stream:
            raise BadInputError(
                f"Registry model {w.model_name} {version} is a {model_stream} model: it takes "
                f"{channels} input channels, the config says {self.in_channels} (the "
                f"{self.stream} stream)"
            )
        self.model = model
        self.registry_version = version
        self.registry_metadata = meta
        # Run metadata and feature-map strides follow the model that was loaded, not the
        # config's default end point (a Mixed_3c model is not labelled Mixed_5c).
        loaded = meta.get("endpoint")
        if loaded not in ENDPOINTS:  # a classifier: its encoder's end point
            loaded = (meta.get("extractor_config") or {}).get("endpoint")
        self.config_endpoint = self.config.endpoint
        if loaded in ENDPOINTS:
            self.effective_config = self.effective_config.replace(endpoint=loaded)

    def _init_two_stream(self) -> None:
        """Build two encoders, flow and RGB, each a single-stream extractor.

        Two encoders, flow and RGB, each a single-stream extractor of the same configuration
        (same seed for random weights; ``weights.rgb_checkpoint`` for the RGB one).
        """
        cfg = self.config
        for stream in ("flow", "rgb"):
            checkpoint = cfg.weights.rgb_checkpoint if stream == "rgb" else cfg.weights.checkpoint
            sub = cfg.replace(
                stream=stream,
                in_channels=STREAM_CHANNELS[stream],
                weights=cfg.weights.replace(checkpoint=checkpoint, rgb_checkpoint=None),
            )
            self.streams[stream] = DynamicFeatureExtractor(config=sub)
        del self.streams["two-stream"]
        flow = self.streams["flow"]
        self.model = flow.model
        self.quantize = flow.quantize
        self.checkpoint_report = flow.checkpoint_report
        self.registry_version = None
        self._call = None

    @property
    def stream(self) -> str:
        """``flow``, ``rgb`` or ``two-stream`` (``config.stream``, or what ``in_channels`` says)."""
        return self.effective_config.resolved_stream

    @property
    def in_channels(self) -> int:
        """Input channels of the (first) encoder: 2 for flow and two-stream, 3 for RGB."""
        return self.effective_config.resolved_in_channels

    @property
    def endpoint(self) -> str:
        """The end point of the model that runs (a registry model's own, else the config's)."""
        return self.effective_config.endpoint

    # -- preprocessing -------------------------------------------------------------------------
    def windows(self, n_frames: int) -> list[FlowWindow]:
        """The windows (DESIGN.md) over a video of ``n_frames`` frames."""
        return frame_windows(n_frames, self.config.clip_length, self.config.stride)

    def preprocess_window(self, flow: Any, window: FlowWindow) -> np.ndarray:
        """One window's flow, resized if configured, clipped, quantised if configured, scaled."""
        data = self._resize(window_data(flow, window))  # a fresh float32 array: edit in place
        return preprocess_flow_inplace(data, self.config.flow_bound, self.quantize)

    def preprocess_flow_sequence(self, flow: Any) -> np.ndarray:
        """All windows of a ``(T-1, H, W, 2)`` flow sequence as ``[N, L, H', W', 2]`` float32."""
        self._check_flow(flow)
        windows = self.windows(flow.shape[0] + 1)
        return np.stack([self.preprocess_window(flow, w) for w in windows])

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') the encoder sees for frames of ``height`` × ``width``."""
        from ..flow.compute import resized_shape

        return resized_shape((height, width), self.config.resize)

    def _resize(self, data: np.ndarray) -> np.ndarray:
        h, w = data.shape[1:3]
        nh, nw = self.resized_shape(h, w)
        if (nh, nw) == (h, w):
            return data
        import cv2

        out = np.empty((len(data), nh, nw, 2), np.float32)
        for i, field in enumerate(data):
            out[i] = cv2.resize(field, (nw, nh), interpolation=cv2.INTER_AREA)
        out[..., 0] *= nw / w  # displacements shrink with the image
        out[..., 1] *= nh / h
        return out

    def resize_frames(self, frames: np.ndarray) -> np.ndarray:
        """Resize frames by the same rule as flow.

        ``(k, H, W, 3)`` frames resized by the same rule as flow (``resize``: longest side, area
        interpolation); values are unchanged.
        """
        h, w = frames.shape[1:3]
        nh, nw = self.resized_shape(h, w)
        if (nh, nw) == (h, w):
            return frames
        import cv2

        return np.stack([cv2.resize(f, (nw, nh), interpolation=cv2.INTER_AREA) for f in frames])

    def _check_flow(self, flow: Any) -> None:
        shape = tuple(flow.shape)
        if len(shape) != 4 or shape[-1] != 2:
            raise BadInputError(f"Flow must be (T-1, H, W, 2); got shape {shape}")
        if self.stream != "flow":
            raise BadInputError(
                f"The {self.stream} model takes {self.input_channels} input channels "
                "but optical flow has 2: give the video, or use a flow model"
            )
        if self.in_channels != 2:
            raise BadInputError(
                f"The model takes {self.in_channels} input channels but optical flow has 2"
            )

    # -- inference -----------------------------------------------------------------------------
    def extract_features(
        self, preprocessed: np.ndarray, batch_size: int | None = None
    ) -> np.ndarray:
        """Feature maps ``[N, T', H', W', C]`` float32 for preprocessed clips ``[N, L, H, W, ch]``."""
        arr = np.asarray(preprocessed, dtype=np.float32)
        if arr.ndim != 5:
            raise BadInputError(f"Clips must be [N, L, H, W, C]; got shape {arr.shape}")
        if arr.shape[-1] != self.input_channels:
            raise BadInputError(
                f"The {self.stream} model takes {self.input_channels} input channels; clips have "
                f"{arr.shape[-1]}"
            )
        batch = int(batch_size or self.config.batch_size)
        outputs = [self.encode(arr[i : i + batch]) for i in range(0, len(arr), batch)]
        return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)

    @property
    def encoder(self) -> Any:
        """The compiled inference runtime (``config.runtime``), made on first use."""
        if self._call is None:
            from .runtime import make_encoder

            self._call = make_encoder(self.model, self.config.runtime, self.config.precision)
        return self._call

    @property
    def input_channels(self) -> int:
        """Channels of an encoder-ready clip: 2 flow, 3 RGB, 5 two-stream (flow, then RGB)."""
        return sum(STREAM_CHANNELS[s] for s in self.streams)

    def encode_streams(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run each stream's encoder on its channels of the clips.

        Each stream's output for clips ``[B, L, H, W, ch]`` (two-stream: flow channels 0–1, RGB
        2–4), ``{"flow": ..., "rgb": ...}``.
        """
        if self.stream != "two-stream":
            return {self.stream: self.encoder(batch)}
        return {
            "flow": self.streams["flow"].encode(batch[..., :2]),
            "rgb": self.streams["rgb"].encode(batch[..., 2:]),
        }

    def fuse(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """One output from the streams': concatenated channels (flow first) or their average."""
        if len(parts) == 1:
            return next(iter(parts.values()))
        flow, rgb = parts["flow"], parts["rgb"]
        if self.config.fusion == "average":
            return (flow + rgb) * np.float32(0.5)
        return np.concatenate([flow, rgb], axis=-1)

    def column_names(self, channels: int) -> list[str]:
        """Name the feature columns of an output with ``channels`` channels.

        Feature column names for ``channels`` output channels (DESIGN.md: two-stream concatenated
        is ``flow_f0000…``, ``rgb_f0000…``).
        """
        if self.stream == "two-stream" and self.config.fusion == "concat":
            half = channels // 2
            return [f"flow_f{c:04d}" for c in range(half)] + [f"rgb_f{c:04d}" for c in range(half)]
        return [f"f{c:04d}" for c in range(channels)]

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Run one encoder call on the inference runtime.

        One encoder call ``[B, L, H, W, ch] → [B, T', H', W', C]`` on the inference runtime
        (two-stream: both encoders, fused by ``fusion``).
        """
        if self.stream == "two-stream":
            return self.fuse(self.encode_streams(batch))
        return self.encoder(batch)

    def save_model_with_serializer(
        self,
        base_dir: str | os.PathLike,
        metadata: dict | None = None,
        version: str | None = None,
        format: str = "keras",
    ) -> Path:
        """Save this extractor's model as a new registry version, with its configuration.

        Parameters
        ----------
        base_dir : str or PathLike
            The registry folder.
        metadata : dict, optional
            Extra metadata (``model_name`` names the model; default ``i3d-<stream>-<end point>``).
        version : str, optional
            The version name (default: a UTC timestamp).
        format : {"keras", "h5", "savedmodel"}
            The registry file format (see :class:`~napari_flow_features.model.registry.ModelSerializer`).

        Returns
        -------
        Path
            The new version's folder.
        """
        from .registry import ModelSerializer

        if self.stream == "two-stream":
            raise BadInputError("Save each stream of a two-stream extractor on its own")
        meta = {
            "endpoint": self.endpoint,
            "stream": self.stream,
            "preprocessing": {
                "flow_bound": self.config.flow_bound,
                "quantize": self.quantize,
                "resize": self.config.resize,
                "clip_length": self.config.clip_length,
                "stride": self.config.stride,
            },
            "extractor_config": self.describe(),
            **(metadata or {}),
        }
        name = (metadata or {}).get("model_name", f"i3d-{self.stream}-{self.endpoint}")
        return ModelSerializer(self.model, name).save_model(base_dir, meta, version, format=format)

    def describe(self) -> dict[str, Any]:
        """Describe the run for metadata: the configuration and what was loaded.

        Run metadata: the configuration plus what was actually loaded (end point, channels,
        registry version and SHA-256 of the model file) and derived facts (quantise, strides).
        """
        from .i3d import ENDPOINT_STRIDES, endpoint_channels

        if self.stream == "two-stream":
            parts = {s: e.describe() for s, e in self.streams.items()}
            meta = self.effective_config.to_dict()
            meta["quantize_effective"] = self.quantize
            meta["registry_version"] = None
            channels = [parts[s]["channels"] for s in ("flow", "rgb")]
            meta["channels"] = channels[0] if self.config.fusion == "average" else sum(channels)
            meta["endpoint_strides"] = parts["flow"]["endpoint_strides"]
            if "runtime_used" in parts["flow"]:
                meta["runtime_used"] = parts["flow"]["runtime_used"]
                meta["runtime_device"] = parts["flow"]["runtime_device"]
            if "int8_calibration" in parts["flow"]:
                meta["int8_calibration"] = {s: parts[s]["int8_calibration"] for s in parts}
                meta["int8_note"] = parts["flow"]["int8_note"]
            flow_model, rgb_model = parts["flow"]["loaded_model"], parts["rgb"]["loaded_model"]
            if "random" in (flow_model["source"], rgb_model["source"]):
                meta.update(random_weights_marks())
            meta["loaded_model"] = {
                "source": flow_model["source"],
                "endpoint": self.endpoint,
                "channels": meta["channels"],
                "flow": flow_model,
                "rgb": rgb_model,
            }
            return meta
        meta = self.effective_config.to_dict()
        endpoint = self.endpoint
        meta["quantize_effective"] = self.quantize
        if self._call is not None:
            meta["runtime_used"] = self._call.name
            meta["runtime_device"] = _device_of(self._call)
            meta.update(getattr(self._call, "describe", dict)())  # int8: its calibration
        meta["registry_version"] = self.registry_version
        # The classifier's end points give one value per class, not Mixed_5c's channels.
        classes = endpoint in ("Logits", "Predictions")
        meta["channels"] = self.config.num_classes if classes else endpoint_channels(endpoint)
        meta["endpoint_strides"] = list(ENDPOINT_STRIDES.get(endpoint, (None, None)))
        registry = getattr(self, "registry_metadata", None)
        if registry is not None:
            encoder = self.model
            nested = [layer for layer in getattr(encoder, "layers", []) if hasattr(layer, "layers")]
            if "classes" in registry and nested:  # a classifier: describe its encoder
                encoder = nested[0]
            meta["channels"] = int(encoder.outputs[0].shape[-1])
            meta["loaded_model"] = {
                "source": "registry",
                "registry_dir": str(self.config.weights.registry_dir),
                "model_name": registry.get("model_name", self.config.weights.model_name),
                "version": self.registry_version,
                "endpoint": endpoint,
                "channels": meta["channels"],
                "weights_sha256": registry.get("weights_sha256"),
                "config_endpoint": getattr(self, "config_endpoint", endpoint),
            }
        elif self.checkpoint_report is not None:
            if not hasattr(self, "_checkpoint_sha256"):  # hash the data file once per extractor
                from ..io._atomic import sha256_file

                data = Path(self.checkpoint_prefix + ".data-00000-of-00001")
                self._checkpoint_sha256 = sha256_file(data) if data.is_file() else None
            meta["loaded_model"] = {
                "source": "deepmind",
                "pretrained": self.pretrained,
                "checkpoint": self.checkpoint_prefix,
                "endpoint": endpoint,
                "channels": meta["channels"],
                "variables_loaded": self.checkpoint_report.loaded,
                "weights_sha256": self._checkpoint_sha256,
            }
        else:
            meta["loaded_model"] = {
                "source": "random",
                "seed": self.config.weights.seed,
                "endpoint": endpoint,
                "channels": meta["channels"],
            }
            meta.update(random_weights_marks())
        return meta


#: What every output of a run with random weights carries (tables, layers, figures, reports).
RANDOM_WEIGHTS_NOTE = (
    "RANDOM WEIGHTS: these features come from an untrained I3D (asked for with weights.source "
    "random); they show what the pipeline does, not what learned features can tell apart"
)


def seeded_kernels(model: Any, seed: int) -> None:
    """Draw the convolution kernels again from ``seed`` alone (Glorot uniform, Keras' default).

    Keras takes an initializer's seed from a process-wide generator that other threads may draw
    from in between (a Dask worker's do): the same seed gave different random weights in
    different workers. A private NumPy generator, walked in the model's weight order, does not.

    Parameters
    ----------
    model : keras.Model
        A freshly built I3D (its kernels are redrawn in place; biases and batch norm stay).
    seed : int
        The weights' seed.
    """
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if not weight.path.endswith("kernel"):
            continue
        shape = tuple(int(d) for d in weight.shape)
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        weight.assign(rng.uniform(-limit, limit, shape).astype(np.float32))


def random_weights_marks() -> dict[str, Any]:
    """Metadata keys marking a run with random weights."""
    return {"random_weights": True, "weights_note": RANDOM_WEIGHTS_NOTE}


def _device_of(encoder: Any) -> str:
    """The device an encoder runs on: its own label (torch), else where TensorFlow computes."""
    label = getattr(encoder, "device_label", None)
    if label is not None:
        return str(label)
    if encoder.name == "tensorflow":
        import tensorflow as tf

        return "gpu (TensorFlow)" if tf.config.list_logical_devices("GPU") else "cpu"
    return "cpu"  # OpenVINO is compiled for the CPU
