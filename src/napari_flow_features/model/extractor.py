"""``DynamicFeatureExtractor``: the I3D encoder configured from YAML, with I3D preprocessing.

The configuration's fields are listed, with their meaning, in ``default_config.yaml`` beside this
file and in docs/model.md.
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError
from ..flow.sequences import FlowWindow, frame_windows, preprocess_flow_inplace, window_data

#: Per-frame schemes: fully convolutional chunks (default) or the seed's sliding windows.
WINDOWINGS = ("chunked", "sliding")
#: I3D streams (docs/streams.md) and their input channels; two-stream runs both encoders.
STREAMS = ("flow", "rgb", "two-stream")
STREAM_CHANNELS = {"flow": 2, "rgb": 3}
FUSIONS = ("concat", "average")
#: pretrained: DeepMind's flow_imagenet / rgb_imagenet, fetched and cached on first use.
WEIGHT_SOURCES = ("pretrained", "random", "deepmind", "registry")
#: Frames recomputed on each side of a chunk: the measured reach of a change through Mixed_5c is
#: ±48 frames, and with 48-frame margins chunked inference equals one pass exactly (DESIGN.md).
CHUNK_MARGIN = 48


#: Set to ``random`` (or ``pretrained``) to change the default weights, e.g. on an offline CI
#: machine or in tests; a configuration that names its weights is not affected.
DEFAULT_WEIGHTS_ENV = "NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS"


def default_config() -> dict[str, Any]:
    """The shipped default configuration (a fresh copy); ``weights.source`` is ``pretrained``
    unless ``$NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS`` says otherwise.
    """
    import yaml

    text = resources.files(__package__).joinpath("default_config.yaml").read_text()
    config = yaml.safe_load(text)
    chosen = os.environ.get(DEFAULT_WEIGHTS_ENV)
    if chosen:
        if chosen not in ("pretrained", "random"):
            raise BadInputError(
                f"{DEFAULT_WEIGHTS_ENV} must be pretrained or random, not {chosen!r}"
            )
        config["weights"]["source"] = chosen
    return config


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """The mapping of fields in a YAML settings file, or a named error."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"Config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BadInputError(f"Config file is not valid YAML ({exc}): {path}") from exc
    if not isinstance(loaded, dict):
        raise BadInputError(f"Config file must hold a mapping of fields: {path}")
    return loaded


def load_config(path: str | os.PathLike | None = None, **overrides: Any) -> dict[str, Any]:
    """Defaults, then the fields of a YAML file, then keyword overrides; unknown keys are errors."""
    config = default_config()
    layers: list[tuple[str, dict]] = []
    if path is not None:
        layers.append((str(path), read_yaml_mapping(path)))
    layers.append(("keyword arguments", overrides))
    for origin, values in layers:
        _merge(config, values, origin)
    _validate(config)
    return config


def _merge(config: dict, values: dict, origin: str, prefix: str = "") -> None:
    for key, value in values.items():
        if key not in config:
            valid = ", ".join(sorted(config))
            raise BadInputError(f"Unknown config field {prefix}{key!r} in {origin}; valid: {valid}")
        if isinstance(config[key], dict):
            if not isinstance(value, dict):
                raise BadInputError(f"Config field {prefix}{key} must be a mapping ({origin})")
            _merge(config[key], value, origin, f"{prefix}{key}.")
        else:
            config[key] = value


def _resolve_stream(config: dict) -> None:
    """Fill ``stream`` and ``in_channels`` from each other; a contradiction names both."""
    stream, channels = config["stream"], config["in_channels"]
    if stream is not None and stream not in STREAMS:
        raise BadInputError(f"stream must be one of {', '.join(STREAMS)}, not {stream!r}")
    if stream is None:
        by_channels = {v: k for k, v in STREAM_CHANNELS.items()}
        if channels is not None and channels not in by_channels:
            raise BadInputError(f"in_channels must be 2 (flow) or 3 (RGB), not {channels!r}")
        stream = by_channels.get(channels, "flow")
    want = STREAM_CHANNELS.get(stream, 2)  # two-stream: the flow encoder's
    if channels is not None and channels != want:
        raise BadInputError(
            f"The config asks for the {stream} stream ({want} input channels) but in_channels is "
            f"{channels} ({'RGB' if channels == 3 else 'optical flow' if channels == 2 else '?'})"
        )
    config["stream"], config["in_channels"] = stream, want
    if config["fusion"] not in FUSIONS:
        raise BadInputError(f"fusion must be concat or average, not {config['fusion']!r}")


def _validate(config: dict) -> None:
    from .i3d import ENDPOINTS

    _resolve_stream(config)
    for key in ("clip_length", "stride", "batch_size", "in_channels"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise BadInputError(
                f"Config field {key} must be a whole number ≥ 1, got {config[key]!r}"
            )
    if config["endpoint"] not in ENDPOINTS:
        raise BadInputError(
            f"Unknown end point {config['endpoint']!r}; choose one of {', '.join(ENDPOINTS)}"
        )
    from .runtime import RUNTIMES, check_precision

    check_precision(config["precision"])
    if config["runtime"] not in RUNTIMES:
        raise BadInputError(
            f"runtime must be one of {', '.join(RUNTIMES)}, not {config['runtime']!r}"
        )
    if config["windowing"] not in WINDOWINGS:
        raise BadInputError(
            f"windowing must be one of {', '.join(WINDOWINGS)}, not {config['windowing']!r}"
        )
    chunk = config["chunk_length"]
    if not isinstance(chunk, int) or chunk % 8 or chunk < 2 * CHUNK_MARGIN + 8:
        raise BadInputError(
            f"chunk_length must be a multiple of 8 and at least {2 * CHUNK_MARGIN + 8}, got {chunk!r}"
        )
    if config["resize"] is not None and (
        not isinstance(config["resize"], int) or config["resize"] < 8
    ):
        raise BadInputError(f"resize must be null or a size ≥ 8 px, got {config['resize']!r}")
    if not float(config["flow_bound"]) > 0:
        raise BadInputError(f"flow_bound must be positive, got {config['flow_bound']!r}")
    source = config["weights"]["source"]
    if source not in WEIGHT_SOURCES:
        raise BadInputError(
            f"weights.source must be one of {', '.join(WEIGHT_SOURCES)}, not {source!r}"
        )
    if source == "deepmind" and not config["weights"]["checkpoint"]:
        raise BadInputError("weights.source is deepmind but weights.checkpoint is not set")
    if config["stream"] == "two-stream":
        if source == "deepmind" and not config["weights"]["rgb_checkpoint"]:
            raise BadInputError(
                "two-stream with weights.source deepmind needs weights.checkpoint (flow) and "
                "weights.rgb_checkpoint (RGB)"
            )
        if source == "registry":
            raise BadInputError(
                "Registry models are single-stream: two-stream takes DeepMind or random weights"
            )
    if source == "registry" and not (
        config["weights"]["registry_dir"] and config["weights"]["model_name"]
    ):
        raise BadInputError(
            "weights.source is registry: set weights.registry_dir and weights.model_name"
        )


class DynamicFeatureExtractor:
    """I3D flow encoder with its preprocessing, configured from YAML.

    >>> extractor = DynamicFeatureExtractor(endpoint="Mixed_4f", clip_length=16)  # doctest: +SKIP
    >>> windows = extractor.preprocess_flow_sequence(flow)        # [N, L, H, W, 2]
    >>> maps = extractor.extract_features(windows)                 # [N, T', H', W', C]
    """

    def __init__(self, config_path: str | os.PathLike | None = None, **overrides: Any) -> None:
        self.config = load_config(config_path, **overrides)
        cfg = self.config
        self.streams: dict[str, DynamicFeatureExtractor] = {cfg["stream"]: self}
        if cfg["stream"] == "two-stream":
            self._init_two_stream()
            return
        import keras

        from .i3d import build_i3d

        if cfg["weights"]["source"] == "random":
            keras.utils.set_random_seed(int(cfg["weights"]["seed"]))
        self.model = build_i3d(
            in_channels=cfg["in_channels"],
            endpoint=cfg["endpoint"],
            num_classes=cfg["num_classes"],
            precision=cfg["precision"],
        )
        self.checkpoint_report = None
        self.registry_version: str | None = None
        if cfg["weights"]["source"] == "registry":
            from .registry import ModelSerializer

            w = cfg["weights"]
            if w["version"]:
                model, meta, version = ModelSerializer.load_model(
                    os.path.expanduser(str(w["registry_dir"])), w["model_name"], str(w["version"])
                )
            else:
                model, meta, version = ModelSerializer.load_latest_model(
                    os.path.expanduser(str(w["registry_dir"])), w["model_name"]
                )
            channels = int(model.inputs[0].shape[-1])
            model_stream = meta.get("stream") or {2: "flow", 3: "rgb"}.get(channels, "?")
            if channels != cfg["in_channels"] or model_stream != cfg["stream"]:
                raise BadInputError(
                    f"Registry model {w['model_name']} {version} is a {model_stream} model: it takes "
                    f"{channels} input channels, the config says {cfg['in_channels']} (the "
                    f"{cfg['stream']} stream)"
                )
            self.model = model
            self.registry_version = version
            self.registry_metadata = meta
            # Run metadata and feature-map strides follow the model that was loaded, not the
            # config's default end point (a Mixed_3c model is not labelled Mixed_5c).
            from .i3d import ENDPOINTS

            loaded = meta.get("endpoint")
            if loaded not in ENDPOINTS:  # a classifier: its encoder's end point
                loaded = (meta.get("extractor_config") or {}).get("endpoint")
            self.config_endpoint = cfg["endpoint"]
            if loaded in ENDPOINTS:
                cfg["endpoint"] = loaded
        self.pretrained: str | None = None
        if cfg["weights"]["source"] == "pretrained":
            from .weights import PRETRAINED, pretrained_checkpoint, terminal_progress

            self.pretrained = PRETRAINED[cfg["stream"]]
            self.checkpoint_prefix = str(
                pretrained_checkpoint(self.pretrained, terminal_progress())
            )
        elif cfg["weights"]["source"] == "deepmind":
            self.checkpoint_prefix = os.path.expanduser(str(cfg["weights"]["checkpoint"]))
        if cfg["weights"]["source"] in ("deepmind", "pretrained"):
            from .checkpoint import load_deepmind_checkpoint

            self.checkpoint_report = load_deepmind_checkpoint(self.model, self.checkpoint_prefix)
        self.quantize = (
            bool(cfg["quantize"])
            if cfg["quantize"] is not None
            else cfg["weights"]["source"] in ("deepmind", "pretrained")
        )
        self._call = None

    def _init_two_stream(self) -> None:
        """Two encoders, flow and RGB, each a single-stream extractor of the same configuration
        (same seed for random weights; ``weights.rgb_checkpoint`` for the RGB one).
        """
        cfg = self.config
        for stream in ("flow", "rgb"):
            sub = copy.deepcopy(cfg)
            sub["stream"], sub["in_channels"] = stream, STREAM_CHANNELS[stream]
            if stream == "rgb":
                sub["weights"]["checkpoint"] = cfg["weights"]["rgb_checkpoint"]
            sub["weights"]["rgb_checkpoint"] = None
            self.streams[stream] = DynamicFeatureExtractor(**sub)
        del self.streams["two-stream"]
        flow = self.streams["flow"]
        self.model = flow.model
        self.quantize = flow.quantize
        self.checkpoint_report = flow.checkpoint_report
        self.registry_version = None
        self._call = None

    @property
    def stream(self) -> str:
        """``flow``, ``rgb`` or ``two-stream``."""
        return self.config["stream"]

    # -- preprocessing -------------------------------------------------------------------------
    def windows(self, n_frames: int) -> list[FlowWindow]:
        """The windows (DESIGN.md) over a video of ``n_frames`` frames."""
        return frame_windows(n_frames, self.config["clip_length"], self.config["stride"])

    def preprocess_window(self, flow: Any, window: FlowWindow) -> np.ndarray:
        """One window's flow, resized if configured, clipped, quantised if configured, scaled."""
        data = self._resize(window_data(flow, window))  # a fresh float32 array: edit in place
        return preprocess_flow_inplace(data, float(self.config["flow_bound"]), self.quantize)

    def preprocess_flow_sequence(self, flow: Any) -> np.ndarray:
        """All windows of a ``(T-1, H, W, 2)`` flow sequence as ``[N, L, H', W', 2]`` float32."""
        self._check_flow(flow)
        windows = self.windows(flow.shape[0] + 1)
        return np.stack([self.preprocess_window(flow, w) for w in windows])

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') the encoder sees for frames of ``height`` × ``width``."""
        from ..flow.compute import resized_shape

        return resized_shape((height, width), self.config["resize"])

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
        """``(k, H, W, 3)`` frames resized by the same rule as flow (``resize``: longest side, area
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
        if self.config["stream"] != "flow":
            raise BadInputError(
                f"The {self.config['stream']} model takes {self.input_channels} input channels "
                "but optical flow has 2: give the video, or use a flow model"
            )
        if self.config["in_channels"] != 2:
            raise BadInputError(
                f"The model takes {self.config['in_channels']} input channels but optical flow has 2"
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
        batch = int(batch_size or self.config["batch_size"])
        outputs = [self.encode(arr[i : i + batch]) for i in range(0, len(arr), batch)]
        return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)

    @property
    def encoder(self) -> Any:
        """The compiled inference runtime (``config["runtime"]``), made on first use."""
        if self._call is None:
            from .runtime import make_encoder

            self._call = make_encoder(self.model, self.config["runtime"], self.config["precision"])
        return self._call

    @property
    def input_channels(self) -> int:
        """Channels of an encoder-ready clip: 2 flow, 3 RGB, 5 two-stream (flow, then RGB)."""
        return sum(STREAM_CHANNELS[s] for s in self.streams)

    def encode_streams(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Each stream's output for clips ``[B, L, H, W, ch]`` (two-stream: flow channels 0–1, RGB
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
        if self.config["fusion"] == "average":
            return (flow + rgb) * np.float32(0.5)
        return np.concatenate([flow, rgb], axis=-1)

    def column_names(self, channels: int) -> list[str]:
        """Feature column names for ``channels`` output channels (DESIGN.md: two-stream concatenated
        is ``flow_f0000…``, ``rgb_f0000…``).
        """
        if self.stream == "two-stream" and self.config["fusion"] == "concat":
            half = channels // 2
            return [f"flow_f{c:04d}" for c in range(half)] + [f"rgb_f{c:04d}" for c in range(half)]
        return [f"f{c:04d}" for c in range(channels)]

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """One encoder call ``[B, L, H, W, ch] → [B, T', H', W', C]`` on the inference runtime
        (two-stream: both encoders, fused by ``fusion``).
        """
        if self.stream == "two-stream":
            return self.fuse(self.encode_streams(batch))
        return self.encoder(batch)

    def save_model_with_serializer(
        self, base_dir: str | os.PathLike, metadata: dict | None = None, version: str | None = None
    ) -> Path:
        """Save this extractor's model as a new registry version, with its configuration."""
        from .registry import ModelSerializer

        if self.stream == "two-stream":
            raise BadInputError("Save each stream of a two-stream extractor on its own")
        meta = {
            "endpoint": self.config["endpoint"],
            "stream": self.stream,
            "preprocessing": {
                "flow_bound": self.config["flow_bound"],
                "quantize": self.quantize,
                "resize": self.config["resize"],
                "clip_length": self.config["clip_length"],
                "stride": self.config["stride"],
            },
            "extractor_config": self.describe(),
            **(metadata or {}),
        }
        name = (metadata or {}).get("model_name", f"i3d-{self.stream}-{self.config['endpoint']}")
        return ModelSerializer(self.model, name).save_model(base_dir, meta, version)

    def describe(self) -> dict[str, Any]:
        """Run metadata: the configuration plus what was actually loaded (end point, channels,
        registry version and SHA-256 of the model file) and derived facts (quantise, strides).
        """
        from .i3d import ENDPOINT_STRIDES, endpoint_channels

        if self.stream == "two-stream":
            parts = {s: e.describe() for s, e in self.streams.items()}
            meta = copy.deepcopy(self.config)
            meta["quantize_effective"] = self.quantize
            meta["registry_version"] = None
            channels = [parts[s]["channels"] for s in ("flow", "rgb")]
            meta["channels"] = channels[0] if self.config["fusion"] == "average" else sum(channels)
            meta["endpoint_strides"] = parts["flow"]["endpoint_strides"]
            if "runtime_used" in parts["flow"]:
                meta["runtime_used"] = parts["flow"]["runtime_used"]
            flow_model, rgb_model = parts["flow"]["loaded_model"], parts["rgb"]["loaded_model"]
            if "random" in (flow_model["source"], rgb_model["source"]):
                meta.update(random_weights_marks())
            meta["loaded_model"] = {
                "source": flow_model["source"],
                "endpoint": self.config["endpoint"],
                "channels": meta["channels"],
                "flow": flow_model,
                "rgb": rgb_model,
            }
            return meta
        meta = copy.deepcopy(self.config)
        endpoint = self.config["endpoint"]
        meta["quantize_effective"] = self.quantize
        if self._call is not None:
            meta["runtime_used"] = self._call.name
        meta["registry_version"] = self.registry_version
        meta["channels"] = endpoint_channels(endpoint)
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
                "registry_dir": str(self.config["weights"]["registry_dir"]),
                "model_name": registry.get("model_name", self.config["weights"]["model_name"]),
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
                "seed": self.config["weights"]["seed"],
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


def random_weights_marks() -> dict[str, Any]:
    """Metadata keys marking a run with random weights."""
    return {"random_weights": True, "weights_note": RANDOM_WEIGHTS_NOTE}
