"""One immutable, validated configuration for the Python API, YAML files, the CLI and the widgets.

Two frozen dataclasses:

- :class:`ExtractorConfig`: the encoder (``DynamicFeatureExtractor``): every field of
  ``model/default_config.yaml``, with ``weights`` a nested frozen :class:`WeightsConfig`;
- :class:`ExtractionSettings`: what a run does besides the encoder (post-encoder, flow method,
  region, landmarks, ...) plus an :class:`ExtractorConfig`. This is what the napari extraction
  dock saves and what ``flow-features extract --config`` reads.

Both are validated once, when made: an unknown field is an error naming it and listing the valid
ones; every value is checked (type, range, choices; ``0`` is a value, never "unset") with a
message naming the field. They cannot change: assignment raises
:class:`dataclasses.FrozenInstanceError`, and a changed setting is a new object
(:meth:`ExtractorConfig.replace`, :meth:`ExtractionSettings.replace`). They are hashable and
compare by value (the model worker keeps warm models keyed by an :class:`ExtractorConfig`), they
pickle (Dask tasks, the worker process), and ``to_yaml`` / ``from_yaml`` round-trip exactly.
:class:`ExtractorConfig` is also a read-only mapping (``config["endpoint"]``) for code written
against the plain dicts of earlier versions; new code uses attributes (``config.endpoint``).

Old spellings (``sequence_length``, ``bound``) still load, with a :class:`FutureWarning` naming
the new one; docs/configuration.md lists every field and the one name of each concept.

Why frozen dataclasses and not pydantic: import cost. Measured on this project's 2-core machine
with ``python -X importtime`` (the minimum of 10 fresh interpreters, under load; a prototype module
that defines the three models and builds one of each): pydantic 2.14 models 115-122 ms, frozen
dataclasses 18 ms (``dataclasses`` itself 14 ms of it). This module, with the package's
``__init__``, measured 27 ms. YAML loads only when a file is read or written, and nothing here
imports NumPy, YAML, pydantic, TensorFlow, napari or OpenCV (tests/core/test_config.py checks).
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInputError

__all__ = [
    "DEPRECATED_NAMES",
    "ExtractionSettings",
    "ExtractorConfig",
    "WeightsConfig",
    "default_weights_source",
    "read_yaml_mapping",
]

#: Per-frame schemes: fully convolutional chunks (default) or the seed's sliding windows.
WINDOWINGS = ("chunked", "sliding")
#: I3D streams (docs/streams.md) and their input channels; two-stream runs both encoders.
STREAMS = ("flow", "rgb", "two-stream")
STREAM_CHANNELS = {"flow": 2, "rgb": 3}
FUSIONS = ("concat", "average")
PRECISIONS = ("float32", "mixed_bfloat16", "int8")
RUNTIMES = ("auto", "tensorflow", "openvino", "torch")
#: pretrained: DeepMind's flow_imagenet / rgb_imagenet, fetched and cached on first use.
WEIGHT_SOURCES = ("pretrained", "random", "deepmind", "registry")
#: Frames recomputed on each side of a chunk: the measured reach of a change through Mixed_5c is
#: ±48 frames, and with 48-frame margins chunked inference equals one pass exactly (DESIGN.md).
CHUNK_MARGIN = 48
#: The pipeline's choices (the same tuples as in the modules that use them; a test keeps them equal).
POST_ENCODERS = ("none", "gap", "point")
INTERPOLATIONS = ("bilinear", "nearest")
FLOW_METHODS = ("farneback", "dis", "tvl1", "tvl1-skimage")
POINTS_FORMATS = ("auto", "table", "DeepLabCut", "SLEAP", "LightningPose", "NWB")
#: ``max_side: auto`` resizes a video's frames to this longest side before flow and encoder; a flow
#: file keeps the size it was computed at (it cannot be resized without changing its values).
AUTO_MAX_SIDE = 256
#: How kept flow is stored: float16, float32, or uint8 quantised as DeepMind did.
KEEP_FLOW_DTYPES = ("float16", "float32", "uint8")
#: Activation heatmaps reduce a feature map over channels by its mean or L2 norm (or one channel).
HEATMAP_REDUCTIONS = ("mean", "l2")

#: Set to ``random`` (or ``pretrained``) to change the default weights, e.g. on an offline CI
#: machine or in tests; a configuration that names its weights is not affected.
DEFAULT_WEIGHTS_ENV = "NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS"

#: Old spellings that still load (with a FutureWarning) → the one name used everywhere now.
DEPRECATED_NAMES = {"sequence_length": "clip_length", "bound": "flow_bound"}


def default_weights_source() -> str:
    """``pretrained``, or what ``$NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS`` says.

    Returns
    -------
    str
        The weight source a configuration that names none gets.

    Raises
    ------
    BadInputError
        When the variable holds something other than ``pretrained`` or ``random``.
    """
    chosen = os.environ.get(DEFAULT_WEIGHTS_ENV)
    if not chosen:
        return "pretrained"
    if chosen not in ("pretrained", "random"):
        raise BadInputError(f"{DEFAULT_WEIGHTS_ENV} must be pretrained or random, not {chosen!r}")
    return chosen


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """Read the mapping of fields in a YAML settings file.

    Parameters
    ----------
    path
        The YAML file.

    Returns
    -------
    dict
        Its top-level mapping (empty for an empty file).

    Raises
    ------
    BadInputError
        When the file is missing, is not valid YAML, or does not hold a mapping.
    """
    yaml = _yaml()
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"Config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise BadInputError(f"Config file is not valid YAML ({exc}): {path}") from exc
    if not isinstance(loaded, dict):
        raise BadInputError(f"Config file must hold a mapping of fields: {path}")
    return loaded


def _yaml() -> Any:
    """PyYAML, imported on first use, with the config objects known to its safe dumper.

    ``yaml.safe_dump(config)`` then writes the fields as a mapping (code written for the plain
    dicts of earlier versions dumps ``settings.extractor`` this way).
    """
    import yaml

    if ExtractorConfig not in yaml.SafeDumper.yaml_representers:
        for kind in (WeightsConfig, ExtractorConfig):
            yaml.SafeDumper.add_representer(kind, _represent_fields)
    return yaml


def _represent_fields(dumper: Any, config: Any) -> Any:
    return dumper.represent_dict(config.to_dict())


def _write_yaml(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    from .io._atomic import atomic_write_path

    yaml = _yaml()

    path = Path(path)
    with atomic_write_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# -- value checks: each returns the clean value or raises naming the field --------------------


def _fail(name: str, expected: str, value: Any) -> BadInputError:
    return BadInputError(f"Config field {name} must be {expected}, got {value!r}")


def _whole(name: str, value: Any, minimum: int, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = f"a whole number ≥ {minimum}" + (" or null" if optional else "")
        raise _fail(name, what, value)
    return int(value)


def _choice(name: str, value: Any, choices: tuple[Any, ...], optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if value not in choices or isinstance(value, bool):
        what = ", ".join(str(c) for c in choices) + (" or null" if optional else "")
        raise BadInputError(f"Config field {name} must be one of {what}, not {value!r}")
    return value


def _flag(name: str, value: Any, optional: bool = False) -> bool | None:
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise _fail(name, "true or false" + (" or null" if optional else ""), value)
    return value


def _text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise _fail(name, "a non-empty text or null", value)
    return value


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(name, "a number", value)
    return float(value)


def _rename_deprecated(values: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """``values`` with old spellings renamed, each with a FutureWarning naming the new one."""
    out = dict(values)
    for old, new in DEPRECATED_NAMES.items():
        if old not in out:
            continue
        if new in out:
            raise BadInputError(f"{origin} sets both {old!r} and {new!r}: keep only {new!r}")
        warnings.warn(
            f"Config field {old!r} ({origin}) is deprecated: it is called {new!r} now",
            FutureWarning,
            stacklevel=4,
        )
        out[new] = out.pop(old)
    return out


def _check_names(values: Mapping[str, Any], valid: Any, origin: str, prefix: str = "") -> None:
    unknown = [k for k in values if k not in valid]
    if unknown:
        raise BadInputError(
            f"Unknown config field {f'{prefix}{unknown[0]}'!r} in {origin}; valid: "
            + ", ".join(sorted(valid))
        )


class _MappingView(Mapping[str, Any]):
    """A read-only mapping over a frozen dataclass's fields (``config["endpoint"]``)."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]


@dataclass(frozen=True, eq=True)
class WeightsConfig(_MappingView):
    """Where the encoder's weights come from (``weights:`` in YAML).

    Parameters
    ----------
    source
        ``pretrained`` (DeepMind's ``flow_imagenet`` / ``rgb_imagenet``, downloaded and cached on
        first use), ``random`` (from ``seed``), ``deepmind`` (a checkpoint you give) or
        ``registry`` (a model saved with ``ModelSerializer``). Default: ``pretrained``, or
        ``$NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS``.
    seed
        Seed for random weights (≥ 0).
    checkpoint
        Checkpoint prefix for ``deepmind`` (the flow one for two-stream).
    rgb_checkpoint
        Two-stream with ``deepmind``: the RGB checkpoint prefix.
    registry_dir, model_name, version
        The registry folder, model name and version for ``registry`` (version null: the newest).
    """

    source: str = field(default_factory=default_weights_source)
    seed: int = 0
    checkpoint: str | None = None
    rgb_checkpoint: str | None = None
    registry_dir: str | None = None
    model_name: str | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        _choice("weights.source", self.source, WEIGHT_SOURCES)
        _set(self, "seed", _whole("weights.seed", self.seed, 0))
        for name in ("checkpoint", "rgb_checkpoint", "registry_dir", "model_name"):
            _set(self, name, _text(f"weights.{name}", getattr(self, name)))
        version = self.version
        if isinstance(version, numbers.Integral) and not isinstance(version, bool):
            version = str(version)  # YAML reads ``version: 3`` as a number
        _set(self, "version", _text("weights.version", version))
        if self.source == "deepmind" and not self.checkpoint:
            raise BadInputError("weights.source is deepmind but weights.checkpoint is not set")
        if self.source == "registry" and not (self.registry_dir and self.model_name):
            raise BadInputError(
                "weights.source is registry: set weights.registry_dir and weights.model_name"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], origin: str = "weights") -> WeightsConfig:
        """Make weights settings from a mapping of field names.

        Parameters
        ----------
        values
            Field names and values; missing fields take their defaults.
        origin
            Where the values come from, for error messages.

        Returns
        -------
        WeightsConfig
            The validated settings.
        """
        if not isinstance(values, Mapping):
            raise BadInputError(f"Config field weights must be a mapping ({origin})")
        _check_names(values, cls._names(), origin, "weights.")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as plain data.

        Returns
        -------
        dict
            YAML- and JSON-able field values.
        """
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> WeightsConfig:
        """Return a copy with ``changes`` applied (validated like a new object).

        Parameters
        ----------
        **changes
            Field names and their new values.

        Returns
        -------
        WeightsConfig
            A new object; this one is unchanged.
        """
        return type(self).from_dict({**self.to_dict(), **changes}, "replace()")


def _set(obj: object, name: str, value: Any) -> None:
    """Store a normalised value while a frozen object is being made (never afterwards)."""
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, eq=True)
class ExtractorConfig(_MappingView):
    """The I3D encoder's configuration (``DynamicFeatureExtractor``; docs/configuration.md).

    Parameters
    ----------
    windowing
        ``chunked`` (fully convolutional chunks with 48-frame margins: seamless rows) or
        ``sliding`` (the seed's ``clip_length``-frame windows at ``stride``).
    chunk_length
        Frames per encoder pass in chunked mode: ``auto`` (the default: as many as the chunk
        memory budget allows, so margins are recomputed rarely: docs/performance.md), or a multiple
        of 8, at least 104.
    clip_length
        Frames per clip (window length L) in sliding mode (≥ 1).
    stride
        Frames between window starts in sliding mode (≥ 1).
    stream
        ``flow``, ``rgb``, ``two-stream`` or null (follows ``in_channels``; flow when neither
        is set). See :meth:`resolved`.
    in_channels
        2 (optical flow), 3 (RGB) or null (from ``stream``).
    fusion
        Two-stream only: ``concat`` or ``average``.
    endpoint
        The I3D end point whose feature map is returned (``Mixed_5c``, ``Mixed_4f``, ...).
    num_classes
        Classes of the Logits layer (400 or 600 for Kinetics).
    resize
        Longest side in pixels before the encoder (≥ 8), or null to keep the size.
    flow_bound
        Flow is clipped to ±``flow_bound`` px/frame, then divided by it (> 0).
    quantize
        Quantise flow to 256 levels like DeepMind; null: on with DeepMind weights.
    precision
        ``float32``, ``mixed_bfloat16`` (refused when the extractor is built on a CPU without
        native bfloat16) or ``int8`` (OpenVINO + NNCF, calibrated on the run's first clips).
    runtime
        ``auto``, ``tensorflow``, ``openvino`` or ``torch`` (docs/performance.md).
    batch_size
        Windows per encoder call in sliding mode (≥ 1).
    weights
        Where the weights come from (:class:`WeightsConfig`; a mapping is merged into the
        defaults).

    Examples
    --------
    >>> config = ExtractorConfig(endpoint="Mixed_4f", weights={"source": "random"})
    >>> config.endpoint, config["clip_length"]
    ('Mixed_4f', 16)
    >>> config.replace(clip_length=32).clip_length
    32
    """

    windowing: str = "chunked"
    chunk_length: int | str = "auto"
    clip_length: int = 16
    stride: int = 8
    stream: str | None = None
    in_channels: int | None = None
    fusion: str = "concat"
    endpoint: str = "Mixed_5c"
    num_classes: int = 400
    resize: int | None = None
    flow_bound: float = 20.0
    quantize: bool | None = None
    precision: str = "float32"
    runtime: str = "auto"
    batch_size: int = 4
    weights: WeightsConfig = field(default_factory=WeightsConfig)

    def __post_init__(self) -> None:
        from .model.i3d import ENDPOINTS

        weights = self.weights
        if not isinstance(weights, WeightsConfig):
            weights = WeightsConfig.from_dict(weights)
        _set(self, "weights", weights)
        _choice("windowing", self.windowing, WINDOWINGS)
        chunk = self.chunk_length
        lowest = 2 * CHUNK_MARGIN + 8
        if chunk == "auto":
            pass
        elif (
            isinstance(chunk, bool)
            or not isinstance(chunk, numbers.Integral)
            or chunk % 8
            or (chunk < lowest)
        ):
            raise _fail("chunk_length", f"auto, or a multiple of 8 and at least {lowest}", chunk)
        else:
            _set(self, "chunk_length", int(chunk))
        for name in ("clip_length", "stride", "num_classes", "batch_size"):
            _set(self, name, _whole(name, getattr(self, name), 1))
        _choice("stream", self.stream, STREAMS, optional=True)
        if self.in_channels is not None and (
            isinstance(self.in_channels, bool) or self.in_channels not in (2, 3)
        ):
            raise _fail("in_channels", "2 (flow), 3 (RGB) or null", self.in_channels)
        self._check_stream_channels()
        _choice("fusion", self.fusion, FUSIONS)
        if self.endpoint not in ENDPOINTS:
            raise BadInputError(
                f"Unknown end point {self.endpoint!r}; choose one of {', '.join(ENDPOINTS)}"
            )
        _set(self, "resize", _whole("resize", self.resize, 8, optional=True))
        bound = _number("flow_bound", self.flow_bound)
        if not bound > 0:
            raise _fail("flow_bound", "a positive number of pixels per frame", self.flow_bound)
        _set(self, "flow_bound", bound)
        _flag("quantize", self.quantize, optional=True)
        _choice("precision", self.precision, PRECISIONS)
        _choice("runtime", self.runtime, RUNTIMES)
        stream = self.resolved_stream
        if stream == "two-stream":
            if self.weights.source == "deepmind" and not self.weights.rgb_checkpoint:
                raise BadInputError(
                    "two-stream with weights.source deepmind needs weights.checkpoint (flow) and "
                    "weights.rgb_checkpoint (RGB)"
                )
            if self.weights.source == "registry":
                raise BadInputError(
                    "Registry models are single-stream: two-stream takes DeepMind or random weights"
                )

    def _check_stream_channels(self) -> None:
        stream, channels = self.stream, self.in_channels
        if stream is None or channels is None:
            return
        want = STREAM_CHANNELS.get(stream, 2)  # two-stream: the flow encoder's
        if channels != want:
            kind = "RGB" if channels == 3 else "optical flow"
            raise BadInputError(
                f"The config asks for the {stream} stream ({want} input channels) but "
                f"in_channels is {channels} ({kind})"
            )

    # -- derived values: computed, never stored back -----------------------------------------
    @property
    def resolved_stream(self) -> str:
        """The stream that runs: ``stream``, else the one ``in_channels`` names, else ``flow``."""
        if self.stream is not None:
            return self.stream
        return {3: "rgb"}.get(self.in_channels or 2, "flow")

    @property
    def resolved_in_channels(self) -> int:
        """Input channels of the (first) encoder: 2 for flow and two-stream, 3 for RGB."""
        return STREAM_CHANNELS.get(self.resolved_stream, 2)

    def resolved(self) -> ExtractorConfig:
        """Return a copy with ``stream`` and ``in_channels`` filled in (this one is unchanged).

        Returns
        -------
        ExtractorConfig
            The same configuration with no null stream or channels.
        """
        return self.replace(stream=self.resolved_stream, in_channels=self.resolved_in_channels)

    # -- conversions -------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Return the names of the fields, in file order.

        Returns
        -------
        tuple of str
            Top-level field names (``weights`` included).
        """
        return cls._names()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], origin: str = "settings") -> ExtractorConfig:
        """Make a configuration from a mapping; missing fields take their defaults.

        Parameters
        ----------
        values
            Field names and values (``weights`` a mapping or a :class:`WeightsConfig`). Old
            spellings (``sequence_length``, ``bound``) are renamed with a FutureWarning.
        origin
            Where the values come from, for messages (a file name, "keyword arguments").

        Returns
        -------
        ExtractorConfig
            The validated configuration.

        Raises
        ------
        BadInputError
            An unknown field (named, with the valid ones) or a bad value (named).
        """
        if not isinstance(values, Mapping):
            raise BadInputError(f"Config in {origin} must be a mapping of fields")
        values = _rename_deprecated(values, origin)
        _check_names(values, cls._names(), origin)
        weights = values.get("weights")
        if isinstance(weights, Mapping) and not isinstance(weights, WeightsConfig):
            values["weights"] = WeightsConfig.from_dict(weights, origin)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike | None = None, **overrides: Any) -> ExtractorConfig:
        """Read a YAML file's fields over the defaults, then apply keyword overrides.

        A settings file that :class:`ExtractionSettings` writes also works: its ``extraction:``
        section (the pipeline's options) is not part of the encoder's configuration and is
        left out here.

        Parameters
        ----------
        path
            The YAML file, or None for the defaults.
        **overrides
            Fields that replace the file's (``weights`` merges into the file's weights).

        Returns
        -------
        ExtractorConfig
            The validated configuration.
        """
        values: dict[str, Any] = {}
        if path is not None:
            values = _rename_deprecated(read_yaml_mapping(path), str(path))
            values.pop("extraction", None)
            _check_names(values, cls._names(), str(path))
        overrides = _rename_deprecated(overrides, "keyword arguments")
        _check_names(overrides, cls._names(), "keyword arguments")
        return cls.from_dict(_merge_weights(values, overrides), str(path or "keyword arguments"))

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as plain data (``weights`` a nested dict).

        Returns
        -------
        dict
            YAML- and JSON-able values; ``from_dict`` of it equals this object.
        """
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | os.PathLike) -> Path:
        """Write the configuration as YAML, atomically.

        Parameters
        ----------
        path
            Where to write; :meth:`from_yaml` of it equals this object.

        Returns
        -------
        pathlib.Path
            The path written.
        """
        return _write_yaml(path, self.to_dict())

    def replace(self, **changes: Any) -> ExtractorConfig:
        """Return a copy with ``changes`` applied, validated like a new object.

        Parameters
        ----------
        **changes
            Fields and their new values; ``weights`` given as a mapping merges into the current
            weights (``replace(weights={"seed": 3})`` keeps the source).

        Returns
        -------
        ExtractorConfig
            A new object; this one is unchanged.
        """
        changes = _rename_deprecated(changes, "replace()")
        _check_names(changes, self._names(), "replace()")
        return type(self).from_dict(_merge_weights(self.to_dict(), changes), "replace()")


def _merge_weights(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``changes``; a ``weights`` mapping merges field by field."""
    out = dict(base)
    for key, value in changes.items():
        old = out.get(key)
        if key == "weights" and isinstance(value, Mapping) and isinstance(old, Mapping):
            if not isinstance(value, WeightsConfig):
                value = {**dict(old), **value}
        out[key] = value
    return out


@dataclass(frozen=True, eq=True)
class ExtractionSettings:
    """What a run extracts with: the encoder's configuration and the pipeline's options.

    Saved by the napari extraction dock (**Save settings…**), read by ``flow-features extract
    --config`` and by :func:`~napari_flow_features.extract.batch.extract_many`. In YAML the
    encoder's fields sit at the top level (as ``DynamicFeatureExtractor`` reads them) and these
    options under ``extraction:``.

    Parameters
    ----------
    extractor
        The encoder (:class:`ExtractorConfig`; a mapping of its fields is accepted).
    post_encoder
        ``none``, ``gap`` or ``point``.
    interpolation
        ``bilinear`` or ``nearest`` (point post-encoder).
    interpolate_missing
        Fill frames without a landmark by interpolating between known ones.
    flow_method
        ``farneback``, ``dis``, ``tvl1`` or ``tvl1-skimage``.
    max_side
        Resize frames so the longest side is at most this (≥ 1 px); ``auto`` (the default): 256
        px for a video, a flow file's own size; null: the video's size.
    roi
        ``(x, y, w, h)`` in video pixels, or null for the whole frame.
    start, stop
        First frame and the frame after the last (null: the video's start / end).
    points
        A landmark file (per video; a manifest's ``points`` column), or null.
    points_format
        ``auto``, ``table``, ``DeepLabCut``, ``SLEAP``, ``LightningPose`` or ``NWB``.
    keypoints, individuals
        Comma-separated names to keep from a pose file (null: all).
    min_confidence
        Points below this confidence count as missing (0 to 1), or null.
    max_gap
        Fill gaps of at most this many frames linearly (≥ 0), or null.
    allow_length_mismatch
        Accept tracks whose length differs from the video's by more than the tolerated 1 % (at
        most 10 frames) at the end (docs/landmarks.md).
    frames
        Only the rows of these frames (what :func:`~napari_flow_features.extract_frame` asks
        for: the run encodes just what they need), or null for every frame of the range.
    heatmap
        Also return each frame's activation map reduced over channels: ``mean``, ``l2`` or a
        channel number; null for none.
    predict
        Add each window's top-5 Kinetics classes (a ``Logits`` end point with DeepMind weights).
    maps_path
        Post-encoder ``none``: where the feature maps ``.npy`` goes (null: the run's work folder).
    keep_flow
        Also write the computed flow to this ``.npy`` (a video source only), or null.
    keep_flow_dtype
        How kept flow is stored: ``float16``, ``float32`` or ``uint8`` (quantised like DeepMind).
    flow_cache
        A folder keeping the last video's flow, so a run on the same selection skips it; or null.
    flow_workers
        Threads computing flow (null: chosen for the method and the cores).

    Notes
    -----
    The windowing options (``windowing``, ``chunk_length``, ``clip_length``, ``stride``,
    ``batch_size``) live in :attr:`extractor`. A run resolves all of this against its source once
    (:func:`~napari_flow_features.extract.plan.plan_run`): a default that does not apply to the
    source is not applied (``max_side: auto`` leaves a flow file at its size), and an explicit
    choice that cannot apply is an error naming it.
    """

    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    post_encoder: str = "gap"
    interpolation: str = "bilinear"
    interpolate_missing: bool = False
    flow_method: str = "dis"
    max_side: int | str | None = "auto"
    roi: tuple[int, int, int, int] | None = None
    start: int | None = None
    stop: int | None = None
    points: str | None = None
    points_format: str = "auto"
    keypoints: str | None = None
    individuals: str | None = None
    min_confidence: float | None = None
    max_gap: int | None = None
    allow_length_mismatch: bool = False
    frames: tuple[int, ...] | None = None
    heatmap: str | int | None = None
    predict: bool = False
    maps_path: str | None = None
    keep_flow: str | None = None
    keep_flow_dtype: str = "float16"
    flow_cache: str | None = None
    flow_workers: int | None = None

    def __post_init__(self) -> None:
        extractor = self.extractor
        if not isinstance(extractor, ExtractorConfig):
            extractor = ExtractorConfig.from_dict(extractor, "extractor")
        _set(self, "extractor", extractor)
        _choice("post_encoder", self.post_encoder, POST_ENCODERS)
        _choice("interpolation", self.interpolation, INTERPOLATIONS)
        _flag("interpolate_missing", self.interpolate_missing)
        _choice("flow_method", self.flow_method, FLOW_METHODS)
        if isinstance(self.max_side, str) and self.max_side != "auto":
            raise _fail("max_side", "auto, a whole number ≥ 1 or null", self.max_side)
        if self.max_side != "auto":
            _set(self, "max_side", _whole("max_side", self.max_side, 1, optional=True))
        _set(self, "roi", _roi(self.roi))
        _set(self, "start", _whole("start", self.start, 0, optional=True))
        _set(self, "stop", _whole("stop", self.stop, 1, optional=True))
        if self.start is not None and self.stop is not None and self.stop <= self.start:
            raise BadInputError(
                f"Config field stop must be after start, got start {self.start}, stop {self.stop}"
            )
        _set(self, "points", _text("points", self.points))
        _choice("points_format", self.points_format, POINTS_FORMATS)
        for name in ("keypoints", "individuals"):
            _set(self, name, _names(name, getattr(self, name)))
        if self.min_confidence is not None:
            value = _number("min_confidence", self.min_confidence)
            if not 0.0 <= value <= 1.0:
                raise _fail("min_confidence", "between 0 and 1, or null", self.min_confidence)
            _set(self, "min_confidence", value)
        _set(self, "max_gap", _whole("max_gap", self.max_gap, 0, optional=True))
        _flag("allow_length_mismatch", self.allow_length_mismatch)
        self._check_run_options()

    def _check_run_options(self) -> None:
        if self.frames is not None:
            if isinstance(self.frames, (str, bytes)) or not hasattr(self.frames, "__iter__"):
                raise _fail("frames", "a list of frame numbers or null", self.frames)
            frames = tuple(sorted({_whole("frames", f, 0) for f in self.frames}))
            if not frames:
                raise _fail("frames", "at least one frame number, or null", self.frames)
            _set(self, "frames", frames)
        heat = self.heatmap
        if heat is not None and heat not in HEATMAP_REDUCTIONS:
            if isinstance(heat, str) and heat.strip().isdigit():
                heat = int(heat)
            if isinstance(heat, bool) or not isinstance(heat, numbers.Integral) or heat < 0:
                raise _fail("heatmap", "mean, l2, a channel number or null", self.heatmap)
            _set(self, "heatmap", int(heat))
        _flag("predict", self.predict)
        for name in ("maps_path", "keep_flow", "flow_cache"):
            _set(self, name, _text(name, getattr(self, name)))
        _choice("keep_flow_dtype", self.keep_flow_dtype, KEEP_FLOW_DTYPES)
        _set(self, "flow_workers", _whole("flow_workers", self.flow_workers, 1, optional=True))

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Return the names of the pipeline's options (every field but ``extractor``).

        Returns
        -------
        tuple of str
            Option names, in file order.
        """
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extractor")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], origin: str = "settings") -> ExtractionSettings:
        """Make settings from a mapping: option names, and ``extractor`` (a mapping or config).

        Parameters
        ----------
        values
            Field names and values; missing ones take their defaults.
        origin
            Where the values come from, for messages.

        Returns
        -------
        ExtractionSettings
            The validated settings.

        Raises
        ------
        BadInputError
            An unknown setting (named, with the valid ones) or a bad value (named).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise BadInputError(
                f"Unknown extraction setting(s) {', '.join(unknown)} in {origin}; "
                f"valid: {', '.join(sorted(names))}"
            )
        values = dict(values)
        extractor = values.get("extractor")
        if extractor is not None and not isinstance(extractor, ExtractorConfig):
            values["extractor"] = ExtractorConfig.from_dict(extractor, f"{origin} (extractor)")
        return cls(**values)

    @classmethod
    def from_yaml(
        cls, path: str | os.PathLike | None = None, **overrides: Any
    ) -> ExtractionSettings:
        """Read a settings file, then apply overrides.

        Parameters
        ----------
        path
            A YAML file: the encoder's fields at the top level and the pipeline's options under
            ``extraction:`` (what :meth:`to_yaml` and the napari dock write); None: the defaults.
        **overrides
            Option names, encoder field names, or ``extractor=`` (a mapping merged into the
            file's encoder fields, or an :class:`ExtractorConfig` that replaces them).

        Returns
        -------
        ExtractionSettings
            The validated settings.
        """
        loaded = dict(read_yaml_mapping(path)) if path is not None else {}
        origin = str(path) if path is not None else "keyword arguments"
        options = loaded.pop("extraction", None) or {}
        if not isinstance(options, Mapping):
            raise BadInputError(f"Config field extraction must be a mapping ({path})")
        extractor = ExtractorConfig.from_dict(loaded, origin)
        settings = cls.from_dict({**options, "extractor": extractor}, origin)
        return settings._with(overrides, "keyword arguments") if overrides else settings

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as plain data (``extractor`` a nested dict, ``roi`` a list).

        Returns
        -------
        dict
            YAML- and JSON-able values; :meth:`from_dict` of it equals this object.
        """
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["extractor"] = self.extractor.to_dict()
        out["roi"] = list(self.roi) if self.roi is not None else None
        out["frames"] = list(self.frames) if self.frames is not None else None
        return out

    def to_yaml(self, path: str | os.PathLike) -> Path:
        """Write the settings as YAML, atomically.

        The encoder's fields go at the top level, the options under ``extraction:``: what
        :meth:`from_yaml`, ``DynamicFeatureExtractor(path)`` and ``flow-features extract
        --config`` read.

        Parameters
        ----------
        path
            Where to write.

        Returns
        -------
        pathlib.Path
            The path written.
        """
        data = self.to_dict()
        return _write_yaml(path, {**data.pop("extractor"), "extraction": data})

    def replace(self, **changes: Any) -> ExtractionSettings:
        """Return a copy with ``changes`` applied, validated like a new object.

        Parameters
        ----------
        **changes
            Option names; encoder field names (merged into ``extractor``); or ``extractor=``
            (a mapping merged into the current encoder config, or an :class:`ExtractorConfig`).

        Returns
        -------
        ExtractionSettings
            A new object; this one is unchanged.
        """
        return self._with(changes, "replace()")

    def with_overrides(self, values: Mapping[str, Any], origin: str) -> ExtractionSettings:
        """Return a copy with ``values`` applied, as :meth:`replace`, naming ``origin`` in errors.

        Parameters
        ----------
        values
            Option names and encoder field names with their new values.
        origin
            Where the values come from (a manifest row), for messages.

        Returns
        -------
        ExtractionSettings
            A new object; this one is unchanged.
        """
        return self._with(values, origin)

    def _with(self, values: Mapping[str, Any], origin: str) -> ExtractionSettings:
        options = set(self.option_names())
        config_fields = set(ExtractorConfig.field_names())
        values = _rename_deprecated(values, origin)
        plain: dict[str, Any] = {}
        encoder: dict[str, Any] = {}
        for key, value in values.items():
            if key in options:
                plain[key] = value
            elif key == "extractor":
                if isinstance(value, ExtractorConfig):
                    plain["extractor"] = value
                elif isinstance(value, Mapping):
                    encoder.update(_rename_deprecated(value, origin))
                else:
                    raise BadInputError(f"extractor must be a mapping of fields ({origin})")
            elif key in config_fields:
                encoder[key] = value
            else:
                raise BadInputError(
                    f"Unknown setting {key!r} in {origin}; use an extraction setting "
                    f"({', '.join(sorted(options))}) or an extractor config field "
                    f"({', '.join(sorted(config_fields))})"
                )
        extractor = plain.pop("extractor", self.extractor)
        if encoder:
            _check_names(encoder, config_fields, origin)
            extractor = extractor.replace(**encoder)
        return self.from_dict({**self.to_dict(), **plain, "extractor": extractor}, origin)


def _roi(value: Any) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 4:
        raise _fail("roi", "[x, y, w, h] (four whole numbers) or null", value)
    x, y, w, h = (_whole("roi", v, 0) for v in value)
    if w < 1 or h < 1:
        raise _fail("roi", "[x, y, w, h] with w and h at least 1", value)
    return (x, y, w, h)


def _names(name: str, value: Any) -> str | None:
    """Landmark names: a comma-separated text, or a list of names (joined with commas)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        value = ",".join(value)
    return _text(name, value)
