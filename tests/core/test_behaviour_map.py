"""The behaviour map: embedding and clusters of feature tables, its figure, ``flow-features map``.

The tables are made here: frames move between known states (each a centre in feature space plus
noise), so the clusters a user relies on are known before the map is computed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from napari_flow_features.analysis.behaviour_map import MapSettings, behaviour_map
from napari_flow_features.analysis.figures import (
    NOISE_COLOUR,
    behaviour_map_figure,
    cluster_colours,
)
from napari_flow_features.errors import BadInputError
from napari_flow_features.io.tables import read_table, write_table

C = 24


def states_table(t: int = 240, n_states: int = 3, seed: int = 0, prefix: str = "f") -> tuple:
    """A table whose frames cycle through ``n_states`` states in blocks of 40, and the states."""
    rng = np.random.default_rng(seed)
    state = (np.arange(t) // 40) % n_states
    centres = rng.normal(size=(n_states, C)) * 3
    values = centres[state] + 0.3 * rng.normal(size=(t, C))
    table = pd.DataFrame(values, columns=[f"{prefix}{c:04d}" for c in range(C)])
    table.insert(0, "frame", np.arange(t))
    table.attrs = {"endpoint": "Mixed_5c", "post_encoder": "gap"}
    return table, state


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labellings group the rows alike (labels may be renamed)."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("clusters", ["hdbscan", "kmeans"])
def test_pca_map_finds_the_states_and_keeps_missing_rows_missing(clusters):
    table, state = states_table()
    table.loc[[7, 100], "f0003"] = np.nan  # a landmark lost at two frames
    mapped = behaviour_map(table, MapSettings(clusters=clusters, k=3))
    ok = np.ones(len(table), bool)
    ok[[7, 100]] = False
    assert mapped["cluster"].to_numpy()[~ok].tolist() == [-1, -1]
    assert mapped[["embed_0", "embed_1"]].to_numpy()[~ok].tolist() == [[np.nan] * 2] * 2 or (
        np.isnan(mapped[["embed_0", "embed_1"]].to_numpy()[~ok]).all()
    )
    assert same_partition(mapped["cluster"].to_numpy()[ok], state[ok])
    meta = mapped.attrs["behaviour_map"]
    assert meta["n_clusters"] == 3 and meta["missing_rows"] == 2 and meta["noise_rows"] == 0
    assert meta["method"] == "pca" and meta["clusters"] == clusters and meta["pooled"]
    assert mapped.attrs["endpoint"] == "Mixed_5c"  # the table's metadata travels on
    # The embedding is PCA of the standardised features, computed here independently.
    x = table[[f"f{c:04d}" for c in range(C)]].to_numpy()[ok]
    z = (x - x.mean(0)) / x.std(0)
    _, s, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    expected = z @ vt[:2].T
    got = mapped[["embed_0", "embed_1"]].to_numpy()[ok]
    for k in range(2):  # PCA axes are defined up to their sign
        assert np.allclose(np.abs(got[:, k]), np.abs(expected[:, k]), atol=1e-6)
    assert np.allclose(meta["explained_variance_ratio"], (s[:2] ** 2) / (s**2).sum())
    assert list(table.columns) == ["frame", *[f"f{c:04d}" for c in range(C)]]  # input untouched


def test_hdbscan_calls_scattered_rows_noise():
    table, _ = states_table(t=200, n_states=2)
    rng = np.random.default_rng(5)
    table.loc[::25, "f0000":] = rng.normal(size=(8, C)) * 40  # 8 outliers far from both states
    mapped = behaviour_map(table, MapSettings(min_cluster_size=10))
    assert set(np.flatnonzero(mapped["cluster"].to_numpy() == -1)) >= set(range(0, 200, 25))
    assert mapped.attrs["behaviour_map"]["noise_rows"] >= 8
    assert mapped.attrs["behaviour_map"]["min_cluster_size"] == 10


def test_landmarks_share_one_map_and_a_second_map_replaces_the_first():
    table, _ = states_table()
    two = pd.concat(
        [table.assign(landmark="nose"), table.assign(landmark="paw")], ignore_index=True
    )
    mapped = behaviour_map(two, MapSettings(clusters="kmeans", k=3))
    half = len(table)
    # Pooled: the same features at two landmarks land on the same point, in the same cluster.
    assert np.allclose(mapped[["embed_0", "embed_1"]][:half], mapped[["embed_0", "embed_1"]][half:])
    assert (mapped["cluster"][:half].to_numpy() == mapped["cluster"][half:].to_numpy()).all()
    again = behaviour_map(mapped, MapSettings(clusters="kmeans", k=2))
    assert list(again.columns).count("cluster") == 1 and again["cluster"].nunique() == 2


def test_two_stream_columns_are_features():
    table, state = states_table(prefix="flow_f")
    rgb, _ = states_table(prefix="rgb_f", seed=1)
    mapped = behaviour_map(pd.concat([table, rgb.drop(columns="frame")], axis=1))
    assert same_partition(mapped["cluster"].to_numpy(), state)


def test_umap_map_without_tensorflow():
    """UMAP (umap-learn imports TensorFlow for ParametricUMAP) runs without loading it."""
    pytest.importorskip("umap")
    code = (
        "import sys, numpy as np, pandas as pd\n"
        "from napari_flow_features.analysis.behaviour_map import MapSettings, behaviour_map\n"
        "rng = np.random.default_rng(0); state = np.arange(150) // 50\n"
        "x = rng.normal(size=(3, 8))[state] * 3 + 0.2 * rng.normal(size=(150, 8))\n"
        "t = pd.DataFrame(x, columns=[f'f{c:04d}' for c in range(8)]); t.insert(0, 'frame', 0)\n"
        "m = behaviour_map(t, MapSettings(method='umap', n_neighbors=10))\n"
        "pairs = set(zip(m['cluster'], state))\n"
        "print(len(pairs), m['cluster'].nunique(), 'tensorflow' in sys.modules,"
        " m.attrs['behaviour_map']['n_neighbors'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "3", "False", "10"]


def test_bad_tables_and_settings_are_named():
    table, _ = states_table(t=10)
    with pytest.raises(BadInputError, match="needs feature columns"):
        behaviour_map(table[["frame"]])
    table.loc[2:, "f0001"] = np.nan
    with pytest.raises(
        BadInputError, match="at least 3 rows with finite features; the table has 2"
    ):
        behaviour_map(table)
    with pytest.raises(BadInputError, match="k=5 needs at least 5 rows"):
        behaviour_map(table.iloc[:4].fillna(0.0), MapSettings(clusters="kmeans", k=5))
    with pytest.raises(BadInputError, match="Embedding method must be one of"):
        MapSettings(method="tsne")


def test_figure_shows_the_embedding_and_the_cluster_of_each_frame(tmp_path):
    table, _ = states_table(t=120)
    table = table.drop(index=[30, 31]).reset_index(drop=True)  # two frames without a row
    table.loc[5, "f0002"] = np.nan
    mapped = behaviour_map(table, MapSettings(clusters="kmeans", k=3))
    fig = behaviour_map_figure(mapped, tmp_path / "map.png")
    scatter_ax, strip = fig.axes
    ok = mapped["cluster"].to_numpy() >= 0
    offsets = scatter_ax.collections[0].get_offsets()
    assert np.allclose(offsets, mapped[["embed_0", "embed_1"]].to_numpy()[ok])
    colours = np.array(cluster_colours(3))[mapped["cluster"].to_numpy()[ok]]
    from matplotlib.colors import to_rgba_array

    assert np.allclose(scatter_ax.collections[0].get_facecolors(), to_rgba_array(colours))
    image = np.asarray(strip.get_images()[0].get_array())
    expected = np.full(120, -1)
    expected[mapped["frame"]] = mapped["cluster"]
    assert image.shape == (1, 120) and (image[0] - 1 == expected).all()
    assert expected[30] == expected[31] == expected[5] == -1
    cmap = strip.get_images()[0].get_cmap()
    from matplotlib.colors import to_hex

    assert to_hex(cmap(0)) == NOISE_COLOUR  # missing frames are grey in the strip
    assert strip.get_xlim() == (-0.5, 119.5)  # column f is frame f
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"
    assert "3 clusters" in scatter_ax.get_title() and "1 missing" in scatter_ax.get_title()


def test_figure_has_one_ethogram_row_per_landmark():
    table, _ = states_table(t=80)
    two = pd.concat(
        [table.assign(landmark="nose"), table.assign(landmark="paw")], ignore_index=True
    )
    two.loc[two.index[-1], "f0000"] = np.nan  # paw lost at the last frame
    mapped = behaviour_map(two, MapSettings(clusters="kmeans", k=2))
    strip = behaviour_map_figure(mapped).axes[1]
    image = np.asarray(strip.get_images()[0].get_array()) - 1
    assert image.shape == (2, 80)
    assert (image[0] == mapped["cluster"][:80]).all() and image[1, -1] == -1
    assert [t.get_text() for t in strip.get_yticklabels()] == ["nose", "paw"]


def run_cli(*args: str):
    return subprocess.run([sys.executable, "-m", "napari_flow_features.cli", "map", *args],
                          capture_output=True, text=True)  # fmt: skip


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_writes_the_table_with_the_map_and_its_figure(tmp_path, suffix):
    table, state = states_table()
    source = write_table(table, tmp_path / f"features{suffix}")
    out = tmp_path / f"mapped{suffix}"
    done = run_cli(str(source), "-o", str(out), "--clusters", "kmeans", "--k", "3",
                   "--figure", str(tmp_path / "map.png"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    mapped = read_table(out)
    assert same_partition(mapped["cluster"].to_numpy(), state)
    assert np.allclose(mapped[[f"f{c:04d}" for c in range(C)]], table.iloc[:, 1:])
    assert mapped.attrs["behaviour_map"]["k"] == 3 and mapped.attrs["endpoint"] == "Mixed_5c"
    assert (tmp_path / "map.png").is_file()
    assert "3 clusters" in done.stdout and str(out) in done.stdout
    if suffix == ".csv":
        assert json.loads((tmp_path / "mapped.csv.json").read_text())["behaviour_map"]["k"] == 3


def test_cli_default_output_and_bad_input(tmp_path):
    table, _ = states_table(t=60)
    source = write_table(table, tmp_path / "features.csv")
    done = run_cli(str(source))
    assert done.returncode == 0, done.stderr
    assert "cluster" in read_table(tmp_path / "features_map.csv").columns
    bad = run_cli(str(source), "--k", "0")
    assert bad.returncode == 2 and "k" in bad.stderr
    missing = run_cli(str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    no_features = write_table(table[["frame"]], tmp_path / "frames.csv")
    failed = run_cli(str(no_features), "-o", str(tmp_path / "out.csv"))
    assert failed.returncode == 2 and "needs feature columns" in failed.stderr
    assert not (tmp_path / "out.csv").exists()
