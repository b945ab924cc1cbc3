"""One immutable configuration (config.py): validation, YAML round trip, old spellings, runs."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest
import yaml

from napari_flow_features.config import (
    DEFAULT_WEIGHTS_ENV,
    ExtractionSettings,
    ExtractorConfig,
    WeightsConfig,
)
from napari_flow_features.errors import BadInputError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _custom() -> ExtractionSettings:
    """Settings with a non-default value in every kind of field."""
    return ExtractionSettings(
        extractor=ExtractorConfig(
            windowing="sliding", chunk_length=128, clip_length=32, stride=4, stream="rgb",
            fusion="average", endpoint="Mixed_4f", num_classes=600, resize=64, flow_bound=12.5,
            quantize=True, runtime="tensorflow", batch_size=2,
            weights=WeightsConfig(source="deepmind", seed=5, checkpoint="/data/rgb/model.ckpt"),
        ),
        post_encoder="point", interpolation="nearest", interpolate_missing=True,
        flow_method="farneback", max_side=None, roi=(4, 8, 32, 16), start=0, stop=40,
        points="/data/s1.csv", points_format="DeepLabCut", keypoints="snout,left_ear",
        individuals="mouse1", min_confidence=0.0, max_gap=0,
    )  # fmt: skip


def test_assignment_raises_and_equal_configs_hash_alike():
    config = ExtractorConfig(endpoint="Mixed_4f")
    settings = ExtractionSettings(extractor=config)
    for obj, name, value in ((config, "endpoint", "Mixed_5c"), (config.weights, "seed", 3),
                             (settings, "max_side", 64), (settings.extractor, "clip_length", 8)):  # fmt: skip
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, value)
    with pytest.raises(TypeError):
        config["endpoint"] = "Mixed_5c"  # type: ignore[index]  # the mapping view is read-only
    assert config.endpoint == "Mixed_4f" and settings.max_side == "auto"
    # Equal by value, whatever way they were made; usable as dict keys (the worker's model cache).
    same = ExtractorConfig.from_dict({"endpoint": "Mixed_4f", "weights": {"seed": 0}})
    assert same == config and hash(same) == hash(config) and same is not config
    assert {config: "model"}[same] == "model"
    assert ExtractorConfig(endpoint="Mixed_4f", clip_length=8) != config
    assert pickle.loads(pickle.dumps(settings)) == settings  # Dask tasks, the worker process
    # The read-only mapping view of earlier versions' dicts.
    assert config["endpoint"] == "Mixed_4f" and config["weights"]["source"] == "random"
    assert config.get("nope") is None and "clip_length" in config
    assert list(config) == list(ExtractorConfig.field_names())


def test_changes_are_new_objects():
    config = ExtractorConfig(weights={"source": "random", "seed": 2})
    longer = config.replace(clip_length=32, weights={"seed": 3})
    assert (config.clip_length, config.weights.seed) == (16, 2)  # unchanged
    assert (longer.clip_length, longer.weights.seed, longer.weights.source) == (32, 3, "random")
    settings = ExtractionSettings(extractor=config)
    other = settings.replace(max_side=None, endpoint="Mixed_3c")  # an encoder field merges in
    assert (settings.max_side, settings.extractor.endpoint) == ("auto", "Mixed_5c")
    assert (other.max_side, other.extractor.endpoint, other.extractor.weights.seed) == (
        None, "Mixed_3c", 2)  # fmt: skip
    # dataclasses.replace validates too: no way round the checks.
    with pytest.raises(BadInputError, match="clip_length"):
        dataclasses.replace(config, clip_length=0)
    # Derived values are computed, never stored back.
    rgb = ExtractorConfig(in_channels=3)
    assert rgb.stream is None and rgb.resolved_stream == "rgb"
    assert rgb.resolved() == rgb.replace(stream="rgb") and rgb.stream is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"clip_length": 0}, r"clip_length must be a whole number ≥ 1, got 0"),
        ({"stride": True}, r"stride must be a whole number ≥ 1, got True"),
        ({"batch_size": 2.5}, r"batch_size must be a whole number"),
        ({"chunk_length": 100}, r"chunk_length must be auto, or a multiple of 8 and at least 104"),
        ({"flow_bound": 0}, r"flow_bound must be a positive number"),
        ({"flow_bound": "20"}, r"flow_bound must be a number, got '20'"),
        ({"resize": 0}, r"resize must be a whole number ≥ 8 or null, got 0"),
        ({"in_channels": 4}, r"in_channels must be 2 \(flow\), 3 \(RGB\) or null, got 4"),
        ({"stream": "depth"}, r"stream must be one of flow, rgb, two-stream or null"),
        ({"stream": "rgb", "in_channels": 2}, r"rgb stream \(3 input channels\) but in_channels"),
        ({"quantize": "yes"}, r"quantize must be true or false or null"),
        ({"precision": "float16"}, r"precision must be one of float32, mixed_bfloat16"),
        ({"runtime": "tensorrt"}, r"runtime must be one of auto, tensorflow, openvino"),
        ({"windowing": "blended"}, r"windowing must be one of chunked, sliding"),
        ({"endpoint": "Mixed_9"}, r"Unknown end point 'Mixed_9'; choose one of .*Mixed_5c"),
        ({"weights": {"seed": -1}}, r"weights.seed must be a whole number ≥ 0, got -1"),
        ({"weights": {"source": "hub"}}, r"weights.source must be one of pretrained, random"),
        ({"weights": {"source": "deepmind"}}, r"weights.checkpoint is not set"),
        ({"weights": {"source": "registry"}}, r"set weights.registry_dir and weights.model_name"),
        (
            {"stream": "two-stream", "weights": {"source": "deepmind", "checkpoint": "x"}},
            r"weights.rgb_checkpoint",
        ),
        ({"weights": "random"}, r"weights must be a mapping"),
    ],
)
def test_every_extractor_value_is_checked_by_name(values, message):
    with pytest.raises(BadInputError, match=message):
        ExtractorConfig.from_dict(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_side": 0}, r"max_side must be a whole number ≥ 1 or null, got 0"),  # 0 is no "unset"
        ({"roi": [0, 0, 0, 5]}, r"roi must be \[x, y, w, h\] with w and h at least 1"),
        ({"roi": "0,0,8,8"}, r"roi must be \[x, y, w, h\]"),
        ({"start": -1}, r"start must be a whole number ≥ 0"),
        ({"start": 5, "stop": 5}, r"stop must be after start"),
        ({"min_confidence": 1.5}, r"min_confidence must be between 0 and 1"),
        ({"max_gap": -2}, r"max_gap must be a whole number ≥ 0"),
        ({"post_encoder": "avg"}, r"post_encoder must be one of none, gap, point"),
        ({"interpolation": "cubic"}, r"interpolation must be one of bilinear, nearest"),
        ({"flow_method": "raft"}, r"flow_method must be one of farneback, dis"),
        ({"points_format": "csv"}, r"points_format must be one of auto, table"),
        ({"interpolate_missing": 1}, r"interpolate_missing must be true or false, got 1"),
        ({"keypoints": ""}, r"keypoints must be a non-empty text"),
    ],
)
def test_every_pipeline_option_is_checked_by_name(values, message):
    with pytest.raises(BadInputError, match=message):
        ExtractionSettings.from_dict(values)


def test_unknown_fields_are_named_with_the_valid_ones(tmp_path):
    with pytest.raises(
        BadInputError, match=r"Unknown config field 'clip_len' .*valid: .*clip_length"
    ):
        ExtractorConfig.from_dict({"clip_len": 8})
    with pytest.raises(BadInputError, match=r"Unknown config field 'weights.sed'.*seed"):
        ExtractorConfig(weights={"sed": 1})
    with pytest.raises(BadInputError, match=r"Unknown config field 'endpont'"):
        ExtractorConfig().replace(endpont="Mixed_4f")
    with pytest.raises(BadInputError, match=r"Unknown extraction setting\(s\) maxside.*max_side"):
        ExtractionSettings.from_dict({"maxside": 3})
    with pytest.raises(BadInputError, match=r"Unknown setting 'maxside' in row 3.*max_side"):
        ExtractionSettings().with_overrides({"maxside": 3}, "row 3")
    path = tmp_path / "s.yaml"
    path.write_text("endpoint: Mixed_4f\npost_encoder: gap\n")  # an option outside extraction:
    with pytest.raises(BadInputError, match=rf"'post_encoder' in {path}.*valid: .*endpoint"):
        ExtractionSettings.from_yaml(path)


def test_yaml_round_trip_is_exact(tmp_path):
    settings = _custom()
    path = settings.to_yaml(tmp_path / "study.yaml")
    again = ExtractionSettings.from_yaml(path)
    assert again == settings and hash(again) == hash(settings)
    assert again.to_yaml(tmp_path / "again.yaml").read_text() == path.read_text()
    assert ExtractionSettings.from_dict(settings.to_dict()) == settings
    # The file's layout: encoder fields at the top (what DynamicFeatureExtractor reads), the
    # pipeline's options under extraction:.
    doc = yaml.safe_load(path.read_text())
    assert doc["endpoint"] == "Mixed_4f" and doc["extraction"]["roi"] == [4, 8, 32, 16]
    assert doc["extraction"]["min_confidence"] == 0.0 and doc["extraction"]["max_gap"] == 0
    # The encoder alone reads the same file (its extraction: section is not the encoder's).
    assert ExtractorConfig.from_yaml(path) == settings.extractor
    config_path = settings.extractor.to_yaml(tmp_path / "encoder.yaml")
    assert ExtractorConfig.from_yaml(config_path) == settings.extractor
    # Overrides over a file: fields replace, weights merge.
    derived = ExtractorConfig.from_yaml(config_path, clip_length=8, weights={"seed": 9})
    assert (derived.clip_length, derived.weights.seed) == (8, 9)
    assert derived.weights.checkpoint == "/data/rgb/model.ckpt"
    assert yaml.safe_load(yaml.safe_dump(settings.extractor)) == settings.extractor.to_dict()


def test_old_spellings_load_with_a_warning_naming_the_new_one(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("sequence_length: 32\nbound: 15\nextraction:\n  max_side: 64\n")
    with pytest.warns(FutureWarning) as caught:
        settings = ExtractionSettings.from_yaml(path)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert "'bound'" in messages[0] and "called 'flow_bound'" in messages[0]
    assert "'sequence_length'" in messages[1] and "called 'clip_length'" in messages[1]
    assert (settings.extractor.clip_length, settings.extractor.flow_bound) == (32, 15.0)
    with pytest.warns(FutureWarning) as caught:  # the encoder alone reads the file the same way
        assert ExtractorConfig.from_yaml(path).flow_bound == 15.0
    assert sorted(str(w.message) for w in caught) == messages
    with pytest.warns(FutureWarning, match="flow_bound"):
        assert ExtractorConfig().replace(bound=4).flow_bound == 4.0
    with pytest.raises(BadInputError, match=r"both 'bound' and 'flow_bound'"):
        ExtractorConfig.from_dict({"bound": 4, "flow_bound": 5})


def test_defaults_are_the_shipped_yaml_and_the_documented_fields(monkeypatch):
    monkeypatch.delenv(DEFAULT_WEIGHTS_ENV)
    shipped = yaml.safe_load(
        resources.files("napari_flow_features.model").joinpath("default_config.yaml").read_text()
    )
    assert ExtractorConfig().to_dict() == shipped
    assert ExtractionSettings().extractor == ExtractorConfig()
    docs = (ROOT / "docs" / "configuration.md").read_text()
    names = [n for n in ExtractorConfig.field_names() if n != "weights"]
    names += [f"weights.{f.name}" for f in dataclasses.fields(WeightsConfig)]
    names += [f"extraction.{n}" for n in ExtractionSettings.option_names()]
    for name in names:
        assert f"`{name}`" in docs, f"{name} is not documented in docs/configuration.md"
    monkeypatch.setenv(DEFAULT_WEIGHTS_ENV, "random")
    assert ExtractorConfig().weights.source == "random"
    monkeypatch.setenv(DEFAULT_WEIGHTS_ENV, "hub")
    with pytest.raises(BadInputError, match=f"{DEFAULT_WEIGHTS_ENV} must be pretrained or random"):
        ExtractorConfig()


def test_choices_are_the_ones_the_pipeline_uses():
    from napari_flow_features import config
    from napari_flow_features.extract.post_encoders import INTERPOLATIONS, POST_ENCODERS
    from napari_flow_features.flow.compute import METHODS
    from napari_flow_features.io.poses import POINTS_FORMATS
    from napari_flow_features.model.runtime import RUNTIMES

    assert config.POST_ENCODERS == POST_ENCODERS and config.INTERPOLATIONS == INTERPOLATIONS
    assert config.FLOW_METHODS == METHODS and config.POINTS_FORMATS == POINTS_FORMATS
    assert config.RUNTIMES == RUNTIMES


def test_importing_the_config_is_light():
    code = (
        "import sys, napari_flow_features.config as c; c.ExtractionSettings(); "
        "print(sorted(m for m in ('numpy', 'yaml', 'tensorflow', 'keras', 'napari', 'cv2', "
        "'pydantic', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_worker_keys_equal_configs_alike():
    from napari_flow_features.extract.worker import _config_key

    sparse = _config_key({"endpoint": "Mixed_4f"})
    full = _config_key(ExtractorConfig(endpoint="Mixed_4f").to_dict())
    assert sparse == full and hash(sparse) == hash(full)
    assert _config_key({"endpoint": "Mixed_4f", "clip_length": 8}) != sparse


def test_a_run_leaves_the_callers_config_as_it_was(tmp_path):
    from napari_flow_features.extract.pipeline import extract_features
    from napari_flow_features.model.extractor import DynamicFeatureExtractor

    config = ExtractorConfig(endpoint="Conv3d_1a_7x7", windowing="sliding", clip_length=8,
                             runtime="tensorflow", weights={"source": "random"})  # fmt: skip
    before = config.to_dict()
    with pytest.raises(BadInputError, match="config_path or config, not both"):
        DynamicFeatureExtractor(tmp_path / "x.yaml", config=config)
    extractor = DynamicFeatureExtractor(config=config)
    flow = np.random.default_rng(0).normal(0, 2, (11, 16, 16, 2)).astype(np.float32)
    result = extract_features(flow, extractor, post_encoder="gap")
    assert len(result.table) == 12
    assert extractor.config is config and config.to_dict() == before
    assert config.stream is None and config.quantize is None  # not filled in by the run
    assert (extractor.stream, extractor.in_channels, extractor.quantize) == ("flow", 2, False)
    assert result.table.attrs["stream"] == "flow" and result.table.attrs["in_channels"] == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        extractor.config.clip_length = 4  # type: ignore[misc]
    # Keyword overrides make a new config; the caller's stays as it was.
    other = DynamicFeatureExtractor(config=config, clip_length=4)
    assert other.config.clip_length == 4 and config.clip_length == 8
    # A registry model's own end point is what runs; the config keeps the one it asked for.
    extractor.save_model_with_serializer(tmp_path / "reg", {"model_name": "small"})
    asked = ExtractorConfig(weights={"source": "registry", "registry_dir": str(tmp_path / "reg"),
                                     "model_name": "small"}, runtime="tensorflow")  # fmt: skip
    loaded = DynamicFeatureExtractor(config=asked)
    assert loaded.endpoint == "Conv3d_1a_7x7" and asked.endpoint == "Mixed_5c"
    assert loaded.config is asked and loaded.describe()["endpoint"] == "Conv3d_1a_7x7"
