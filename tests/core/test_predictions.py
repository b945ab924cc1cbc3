"""Kinetics predictions (extract --predict): two-stream = softmax of the summed logits, checked
against the two Logits networks run independently on DeepMind-layout checkpoints of random values."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import moving_pattern

from napari_flow_features.errors import BadInputError
from napari_flow_features.extract.pipeline import extract_features
from napari_flow_features.flow.compute import compute_flow
from napari_flow_features.flow.sequences import preprocess_flow_inplace
from napari_flow_features.model.checkpoint import load_deepmind_checkpoint
from napari_flow_features.model.extractor import DynamicFeatureExtractor
from napari_flow_features.model.i3d import build_i3d
from napari_flow_features.model.kinetics import kinetics_labels
from napari_flow_features.model.weights import published_shapes


def write_scaled_checkpoint(prefix, name: str, seed: int) -> None:
    """The published variables of ``name`` with random values scaled so activations stay moderate
    (kernels ~ 1/sqrt(fan-in)): softmax probabilities then differ, and top-5 orders are stable."""
    rng = np.random.default_rng(seed)
    values = {}
    for var, shape in published_shapes(name).items():
        if var.endswith("/w"):
            arr = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        elif var.endswith("moving_variance"):
            arr = 1.0 + 0.1 * np.abs(rng.standard_normal(shape))
        else:
            arr = 0.1 * rng.standard_normal(shape)
        values[var] = arr.astype(np.float32)
    names = sorted(values)
    tf.raw_ops.SaveV2(
        prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
        tensors=[values[n] for n in names],
    )  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    write_scaled_checkpoint(root / "flow", "flow_imagenet", 1)
    write_scaled_checkpoint(root / "rgb", "rgb_imagenet", 2)
    return str(root / "flow"), str(root / "rgb")


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_two_stream_predictions_are_the_softmax_of_summed_logits(checkpoints):
    flow_ckpt, rgb_ckpt = checkpoints
    video = moving_pattern(24, 224, 224)  # grey: the RGB stream repeats it to 3 channels
    ext = DynamicFeatureExtractor(
        stream="two-stream", endpoint="Logits", windowing="sliding", clip_length=16, stride=8,
        runtime="tensorflow",
        weights={"source": "deepmind", "checkpoint": flow_ckpt, "rgb_checkpoint": rgb_ckpt},
    )  # fmt: skip
    result = extract_features(
        video, ext, post_encoder="gap", max_side=None, flow_method="dis", predict=True
    )
    preds = result.metadata["predictions"]
    assert [p["start_frame"] for p in preds] == [0, 8]  # windows 0..15 and 8..23

    # Independently: both networks from the checkpoints, DeepMind's preprocessing by hand.
    flow_net, rgb_net = build_i3d(2, "Logits"), build_i3d(3, "Logits")
    load_deepmind_checkpoint(flow_net, flow_ckpt)
    load_deepmind_checkpoint(rgb_net, rgb_ckpt)
    flow = compute_flow(video, "dis")  # (23, 224, 224, 2)
    labels = kinetics_labels(400)
    for w, start in enumerate((0, 8)):
        idx = np.minimum(np.arange(start, start + 16), len(flow) - 1)  # edge-padded last field
        flow_clip = preprocess_flow_inplace(flow[idx].astype(np.float32), 20.0, quantize=True)
        rgb_clip = np.repeat(video[start : start + 16, ..., None], 3, -1) / 127.5 - 1.0
        logits = np.asarray(flow_net(flow_clip[None]))[0] + np.asarray(rgb_net(rgb_clip[None]))[0]
        prob = softmax(logits.astype(np.float64))
        top = np.argsort(-prob)[:5]
        assert -np.diff(logits[np.argsort(-logits)[:6]]).min() > 1e-4  # a ranking, not a tie
        assert preds[w]["labels"] == [labels[i] for i in top]
        np.testing.assert_allclose(preds[w]["probs"], prob[top], rtol=1e-3, atol=1e-5)
    table = result.table
    assert table.loc[0, "top1_label"] == preds[0]["labels"][0]  # frame 0: window 0
    assert table.loc[23, "top5_prob"] == pytest.approx(preds[1]["probs"][4])  # frame 23: window 1
    assert [c for c in table.columns if c.startswith("flow_f")][-1] == "flow_f0399"


def test_predict_needs_logits_and_deepmind_weights(checkpoints):
    video = moving_pattern(16, 224, 224)
    gap_model = DynamicFeatureExtractor(endpoint="Conv3d_1a_7x7", runtime="tensorflow")
    with pytest.raises(BadInputError, match="need the Logits end point, not Conv3d_1a_7x7"):
        extract_features(video, gap_model, post_encoder="gap", max_side=None, predict=True)
    random_logits = DynamicFeatureExtractor(stream="rgb", endpoint="Logits", runtime="tensorflow")
    with pytest.raises(BadInputError, match="need DeepMind's weights; these are random"):
        extract_features(video, random_logits, post_encoder="gap", max_side=None, predict=True)


def test_extract_cli_predict_writes_labels(checkpoints, tmp_path, capsys):
    from napari_flow_features.cli import main
    from napari_flow_features.io.tables import read_table
    from napari_flow_features.io.video import write_video

    flow_ckpt, rgb_ckpt = checkpoints
    video = tmp_path / "v.mp4"
    write_video(video, moving_pattern(16, 224, 224), fps=25)
    out = tmp_path / "p.parquet"
    assert main(["extract", str(video), "--stream", "two-stream", "--predict", "--windowing",
                 "sliding", "--checkpoint", flow_ckpt, "--rgb-checkpoint", rgb_ckpt,
                 "--max-side", "224", "--runtime", "tensorflow", "-o", str(out)]) == 0  # fmt: skip
    assert "Kinetics, window at frame 0:" in capsys.readouterr().out
    table = read_table(out)
    pred = table.attrs["predictions"][0]
    assert table.attrs["endpoint"] == "Logits" and len(table) == 16
    assert (table["top1_label"] == pred["labels"][0]).all()
    assert table["top2_prob"].to_numpy() == pytest.approx(pred["probs"][1])
