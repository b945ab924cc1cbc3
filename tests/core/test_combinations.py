"""Combinations, not examples: an all-pairs matrix over the options of one extraction.

Every pair of values of the parameters below appears in at least one case (a greedy pairwise
cover, deterministic). Each case asserts what a user relies on: a result or an error naming the
problem (never a traceback of another kind); one row per frame of the range (and landmark) with
the right ``frame`` numbers; metadata that is the plan (the options that shaped the result, none
that did not); the same rows streamed to a sink as kept in memory; the same features as the
canonical run of its group (in-memory source, TensorFlow, no flow cache, no kept flow), so source
kinds, runtimes, the flow cache and keeping the flow change nothing; and nothing left in the
temporary folder.
"""

from __future__ import annotations

import itertools
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import moving_pattern

from napari_flow_features.config import ExtractionSettings, ExtractorConfig
from napari_flow_features.errors import BadInputError
from napari_flow_features.extract.pipeline import extract_features
from napari_flow_features.io.flow_files import write_flo, write_flow_npy
from napari_flow_features.io.video import VideoArray, write_video

N_FRAMES, H, W = 24, 48, 64
RANGE = (3, 21)
ROI = (8, 8, 40, 32)
FLOW_KINDS = ("npy", "npz", "flo", "flow")
PARAMETERS: dict[str, tuple] = {
    "source": ("video", "frames", "npy", "npz", "flo", "flow"),
    "stream": ("flow", "rgb"),
    "post": ("none", "gap", "point1", "point2"),
    "windowing": ("chunked", "sliding"),
    "range": (None, RANGE),
    "roi": (None, ROI),
    "max_side": ("auto", None, 32),
    "runtime": ("tensorflow", "openvino"),
    "flow_cache": (False, True),
    "keep_flow": (False, True),
    "flow_workers": (None, 2),
}


def pairwise_cases(parameters: dict[str, tuple], seed: int = 0, tries: int = 80) -> list[dict]:
    """A greedy all-pairs cover of the valid combinations, then one case per invalid pair.

    Valid cases (no error expected) cover every pair of values that some valid case can hold;
    each pair that no valid case can hold (a flow file with a region, say) gets a case of its
    own, which must be refused with a named error.
    """
    names = list(parameters)
    pairs = [
        ((a, va), (b, vb))
        for a, b in itertools.combinations(names, 2)
        for va in parameters[a]
        for vb in parameters[b]
    ]
    rng = random.Random(seed)

    def random_case(fixed: dict) -> dict:
        return {n: fixed.get(n, rng.choice(parameters[n])) for n in names}

    def valid_with(pair: tuple) -> dict | None:
        for _ in range(200):
            case = random_case(dict(pair))
            if not expected_errors(case):
                return case
        return None

    possible = {pair for pair in pairs if valid_with(pair) is not None}
    left = set(possible)
    cases = []
    while left:
        first = sorted(left, key=repr)[0]
        best, best_gain = None, -1
        for _ in range(tries):
            case = random_case(dict(first))
            if expected_errors(case):
                continue
            gain = sum(
                ((x, case[x]), (y, case[y])) in left for x, y in itertools.combinations(names, 2)
            )
            if gain > best_gain:
                best, best_gain = case, gain
        best = best or valid_with(first)
        assert best is not None
        cases.append(best)
        left -= {((x, best[x]), (y, best[y])) for x, y in itertools.combinations(names, 2)}
    for pair in sorted(set(pairs) - possible, key=repr):
        cases.append(random_case(dict(pair)))
    return cases


def expected_errors(case: dict) -> list[str]:
    """The messages an impossible combination may be refused with (the plan's checks, in order)."""
    flow_source = case["source"] in FLOW_KINDS
    out = []
    if flow_source and case["roi"] is not None:
        out.append("roi")
    if flow_source and isinstance(case["max_side"], int):
        out.append("max_side 32 applies when flow is computed from a video")
    if flow_source and case["keep_flow"]:
        out.append("keep_flow writes the flow computed from a video")
    if flow_source and case["stream"] == "rgb":
        out.append("needs the video's frames")
    if case["keep_flow"] and case["stream"] == "rgb" and not flow_source:
        out.append("keep_flow keeps optical flow")
    return out


CASES = pairwise_cases(PARAMETERS)


def test_the_cover_holds_every_pair():
    valid = [c for c in CASES if not expected_errors(c)]
    refused = [c for c in CASES if expected_errors(c)]
    for a, b in itertools.combinations(PARAMETERS, 2):
        seen = {(c[a], c[b]) for c in CASES}
        assert seen == set(itertools.product(PARAMETERS[a], PARAMETERS[b])), (a, b)
    assert len(valid) >= 20 and len(refused) >= 5
    assert len(CASES) < 60  # pairs, not the product of every value (~55,000 combinations)


@dataclass
class Sources:
    video: str
    frames: np.ndarray
    flow: np.ndarray
    files: dict[str, str]
    landmarks: pd.DataFrame


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Sources:
    from napari_flow_features.flow.compute import compute_flow

    folder = tmp_path_factory.mktemp("combinations")
    video = folder / "moving.mp4"
    write_video(video, moving_pattern(N_FRAMES, H, W), fps=25, crf=8)
    with VideoArray(video) as decoded:
        frames = np.stack([np.asarray(decoded[i]) for i in range(N_FRAMES)])
    flow = compute_flow(frames, "dis").astype(np.float32)
    files = {"npy": str(write_flow_npy(folder / "flow.npy", flow))}
    np.savez(folder / "flow.npz", flow=flow)
    files["npz"] = str(folder / "flow.npz")
    flo = folder / "flo"
    flo.mkdir()
    for i, field in enumerate(flow):
        write_flo(flo / f"{i:04d}.flo", field)
    files["flo"] = str(flo)
    t = np.arange(N_FRAMES)
    # Two landmarks inside the region of interest, moving a little.
    landmarks = pd.DataFrame(
        {
            "frame": np.concatenate([t, t]),
            "x": np.concatenate([12 + 0.5 * t, 40 - 0.25 * t]),
            "y": np.concatenate([14 + 0.1 * t, 30 - 0.2 * t]),
            "track_id": np.repeat([0, 1], N_FRAMES),
        }
    )
    return Sources(str(video), frames, flow, files, landmarks)


_EXTRACTORS: dict[tuple[str, str], object] = {}


def extractor_for(stream: str, runtime: str):
    from napari_flow_features.model.extractor import DynamicFeatureExtractor

    key = (stream, runtime)
    if key not in _EXTRACTORS:
        config = ExtractorConfig(
            endpoint="Mixed_3c", stream=stream, runtime=runtime, weights={"source": "random"}
        )
        _EXTRACTORS[key] = DynamicFeatureExtractor(config=config)
    return _EXTRACTORS[key]


def case_source(case: dict, sources: Sources):
    kind = case["source"]
    if kind == "video":
        return sources.video
    if kind == "frames":
        return sources.frames
    if kind == "flow":
        return sources.flow
    return sources.files[kind]


def case_settings(case: dict, extractor, work: Path) -> tuple[ExtractionSettings, str | None]:
    changes: dict = {"post_encoder": case["post"][:5], "windowing": case["windowing"]}
    if case["windowing"] == "sliding":
        changes.update(clip_length=8, stride=4)
    if case["range"] is not None:
        changes["start"], changes["stop"] = case["range"]
    changes["roi"] = case["roi"]
    changes["max_side"] = case["max_side"]
    if case["flow_cache"]:
        changes["flow_cache"] = str(work / "cache")
    if case["keep_flow"]:
        changes["keep_flow"] = str(work / "kept.npy")
    changes["flow_workers"] = case["flow_workers"]
    settings = ExtractionSettings(extractor=extractor.config).replace(**changes)
    which = {"point1": "single", "point2": "both"}.get(case["post"])
    return settings, which


def landmarks_for(points: str | None, sources: Sources):
    if points is None:
        return None
    table = sources.landmarks
    return table[table.track_id == 0] if points == "single" else table


def leftovers(folder: Path) -> list[Path]:
    # TensorFlow's autograph writes the code it generates for a new trace to the temporary folder
    # and removes it at interpreter exit (tensorflow/python/autograph/pyct/loader.py): not ours.
    return sorted(p for p in folder.iterdir() if not p.name.startswith("__autograph_generated"))


_CANONICAL: dict[tuple, tuple[pd.DataFrame, np.ndarray | None]] = {}


def canonical_run(
    case: dict, sources: Sources, settings: ExtractionSettings, points, folder: Path
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The same run from the in-memory source of the case's kind, TensorFlow, nothing kept."""
    ignored = ("source", "runtime", "flow_cache", "keep_flow", "flow_workers")
    shaping = [(k, v) for k, v in case.items() if k not in ignored]
    key = (*shaping, ("flow source", case["source"] in FLOW_KINDS))
    if key not in _CANONICAL:
        source = sources.flow if case["source"] in FLOW_KINDS else sources.frames
        extractor = extractor_for(case["stream"], "tensorflow")
        run = {k: getattr(settings.extractor, k) for k in ("windowing", "clip_length", "stride")}
        plain = settings.replace(
            flow_cache=None, keep_flow=None, flow_workers=None,
            extractor=extractor.config.replace(**run),
            maps_path=str(folder / f"maps{len(_CANONICAL)}.npy") if case["post"] == "none" else None,
        )  # fmt: skip
        result = extract_features(source, extractor, plain, points=points)
        maps = None if result.feature_maps is None else np.array(result.feature_maps)
        _CANONICAL[key] = (result.table, maps)
    return _CANONICAL[key]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_combination(case, sources, tmp_path, tmp_path_factory, monkeypatch):
    extractor = extractor_for(case["stream"], case["runtime"])
    work = tmp_path / "work"
    work.mkdir()
    settings, which = case_settings(case, extractor, work)
    points = landmarks_for(which, sources)
    source = case_source(case, sources)
    reference, reference_maps = None, None
    if not expected_errors(case):
        folder = tmp_path_factory.mktemp("canonical")
        reference, reference_maps = canonical_run(case, sources, settings, points, folder)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    errors = expected_errors(case)
    if errors:
        with pytest.raises(BadInputError) as caught:
            extract_features(source, extractor, settings, points=points)
        assert any(text in str(caught.value) for text in errors), (str(caught.value), errors)
        assert leftovers(temp) == [] and not (work / "kept.npy").exists()
        return

    result = extract_features(source, extractor, settings, points=points)
    table, meta = result.table, result.metadata

    # Rows: one per frame of the range (and landmark), in order.
    start, stop = case["range"] or (0, N_FRAMES)
    n_landmarks = {"point1": 1, "point2": 2}.get(case["post"], 1)
    expected_frames = np.repeat(np.arange(start, stop), n_landmarks)
    np.testing.assert_array_equal(table["frame"].to_numpy(), expected_frames)

    # Metadata: the plan.
    assert meta["start_frame"] == start and meta["stop_frame"] == stop
    assert meta["n_frames"] == stop - start
    assert meta["stream"] == case["stream"] and meta["windowing"] == case["windowing"]
    assert meta["post_encoder"] == case["post"][:5]
    assert ("clip_length" in meta) == (case["windowing"] == "sliding")
    assert ("chunk_length" in meta) == (case["windowing"] == "chunked")
    flow_source = case["source"] in FLOW_KINDS
    side = case["max_side"]
    assert meta["max_side"] == (None if flow_source else (256 if side == "auto" else side))
    roi = case["roi"] or (0, 0, W, H)
    assert meta["roi_xywh"] == list(roi)
    work_hw = (roi[3], roi[2])
    if side == 32:
        scale = 32 / max(work_hw)
        work_hw = (round(work_hw[0] * scale), round(work_hw[1] * scale))
    assert tuple(meta["work_shape"]) == work_hw
    assert ("kept_flow" in meta) == case["keep_flow"]
    computes_flow = not flow_source and case["stream"] == "flow"
    assert meta.get("flow_workers") == ((case["flow_workers"] or 1) if computes_flow else None)
    if case["keep_flow"]:
        kept = np.load(work / "kept.npy", allow_pickle=False)
        assert kept.shape == (stop - start - 1, *work_hw, 2)
    if case["post"].startswith("point"):
        assert meta["landmarks"] == [str(k) for k in range(n_landmarks)]
        assert meta["missing_landmark_rows"] == 0 and meta["outside_frame_rows"] == 0

    # The same features from the canonical run of the group.
    feats = [c for c in table.columns if c.startswith(("f0", "flow_f", "rgb_f"))]
    assert reference is not None
    tolerance = 1e-4 if case["runtime"] == "openvino" else 1e-6
    np.testing.assert_allclose(
        table[feats].to_numpy(float), reference[feats].to_numpy(float), rtol=tolerance,
        atol=tolerance,
    )  # fmt: skip

    # Streamed to a sink: the same rows.
    blocks: list[pd.DataFrame] = []
    streamed = extract_features(source, extractor, settings.replace(keep_flow=None),
                                points=points, row_sink=blocks.append)  # fmt: skip
    assert len(streamed.table) == 0
    pd.testing.assert_frame_equal(pd.concat(blocks, ignore_index=True), table)
    if case["post"] == "none":  # the maps themselves, as the canonical run's
        np.testing.assert_allclose(
            np.asarray(result.feature_maps), reference_maps, rtol=tolerance, atol=tolerance
        )

    # Nothing left behind but the none post-encoder's maps (its work folder, by design).
    left = leftovers(temp)
    if case["post"] == "none":
        assert len(left) == 2 and all(
            sorted(p.name for p in folder.iterdir())
            == ["feature_maps.npy", "feature_maps.npy.json"]
            for folder in left
        )
    else:
        assert left == []
