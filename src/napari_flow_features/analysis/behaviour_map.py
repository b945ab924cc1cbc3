"""The behaviour map of a feature table: a 2-D embedding of its rows and clusters in it.

Every row of a feature table (one frame, or one frame of one landmark) becomes a point in two
dimensions (PCA of the standardised features by default, UMAP when ``umap-learn`` is installed),
and the points are grouped (scikit-learn's HDBSCAN, or k-means with a given k). The clusters are
found in the 2-D embedding, where the user sees them (the B-SOiD practice of clustering a UMAP
embedding; HDBSCAN's density estimate does not hold in hundreds of dimensions). Landmarks are
**pooled**: all rows share one embedding, so cluster 3 means the same movement at every landmark,
and the ethogram compares them. Rows with a non-finite feature (a missing landmark) keep NaN
coordinates and cluster -1, and are counted apart from HDBSCAN's noise (also -1).

No Qt: the CLI (``flow-features map``), the figures and the plots dock all call
:func:`behaviour_map`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadInputError
from ..io._atomic import FILE_KEY, HASH_KEY, SIZE_KEY
from ..io.tables import feature_columns

#: Embedding methods; ``umap`` needs the ``umap`` extra (``pip install umap-learn``).
METHODS = ("pca", "umap")
#: Clustering methods.
CLUSTERINGS = ("hdbscan", "kmeans")
#: The columns the map adds to a table.
MAP_COLUMNS = ("embed_0", "embed_1", "cluster")
#: Metadata a table read from a file carries about that file (io/_atomic.py), not about its rows.
_FILE_KEYS = (HASH_KEY, SIZE_KEY, FILE_KEY)


@dataclass(frozen=True)
class MapSettings:
    """How a behaviour map is made.

    Attributes
    ----------
    method : str, default "pca"
        ``pca`` or ``umap`` (the ``umap`` extra).
    clusters : str, default "hdbscan"
        ``hdbscan`` (density: finds the number of clusters, leaves noise) or ``kmeans``.
    k : int, default 4
        The number of k-means clusters.
    min_cluster_size : int, optional
        HDBSCAN's smallest cluster; by default 2 % of the finite rows, at least 5.
    n_neighbors : int, default 15
        UMAP's neighbourhood size.
    standardise : bool, default True
        Scale each feature to zero mean and unit variance before the embedding.
    seed : int, default 0
        Random state of k-means and UMAP (the same table gives the same map).
    """

    method: str = "pca"
    clusters: str = "hdbscan"
    k: int = 4
    min_cluster_size: int | None = None
    n_neighbors: int = 15
    standardise: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        """Check the choices, naming a wrong one."""
        if self.method not in METHODS:
            raise BadInputError(f"Embedding method must be one of {METHODS}, not {self.method!r}")
        if self.clusters not in CLUSTERINGS:
            raise BadInputError(f"Clustering must be one of {CLUSTERINGS}, not {self.clusters!r}")
        if self.k < 1:
            raise BadInputError(f"k-means needs k >= 1, not {self.k}")
        if self.min_cluster_size is not None and self.min_cluster_size < 2:
            raise BadInputError(f"min_cluster_size must be >= 2, not {self.min_cluster_size}")
        if self.n_neighbors < 2:
            raise BadInputError(f"n_neighbors must be >= 2, not {self.n_neighbors}")


def import_umap() -> Any:
    """Import umap-learn without TensorFlow (see ``_umap_guard``).

    ``import umap`` imports TensorFlow for its ParametricUMAP when TensorFlow is installed (it is,
    here): seconds of start-up, and in a process with a napari viewer a crash on Mesa/Xvfb. The
    guard refuses TensorFlow to umap-learn only, which then goes on without ParametricUMAP.

    Returns
    -------
    module
        The ``umap`` package.

    Raises
    ------
    BadInputError
        umap-learn is not installed.
    """
    import warnings

    from .._umap_guard import install

    install()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportWarning)  # "ParametricUMAP will be unavailable"
            import umap  # type: ignore[import-untyped]
    except ImportError:
        raise BadInputError(
            "UMAP needs umap-learn: pip install 'napari-flow-features[umap]' (or use --method pca)"
        ) from None
    return umap


def _embed(values: np.ndarray, settings: MapSettings) -> tuple[np.ndarray, dict[str, Any]]:
    """The 2-D embedding of finite rows, and what to record about it."""
    if settings.method == "pca":
        from sklearn.decomposition import PCA

        k = min(2, values.shape[1])
        pca = PCA(n_components=k).fit(values)
        out = np.zeros((len(values), 2))
        out[:, :k] = pca.transform(values)
        ratio = [float(r) for r in pca.explained_variance_ratio_] + [0.0] * (2 - k)
        return out, {"explained_variance_ratio": ratio}
    umap = import_umap()
    n_neighbors = min(settings.n_neighbors, len(values) - 1)
    reducer = umap.UMAP(
        n_components=2, n_neighbors=n_neighbors, random_state=settings.seed, n_jobs=1
    )
    return np.asarray(reducer.fit_transform(values), float), {"n_neighbors": n_neighbors}


def _cluster(points: np.ndarray, settings: MapSettings) -> tuple[np.ndarray, dict[str, Any]]:
    """Cluster labels (-1: noise) of the embedded rows, and what to record about them."""
    if settings.clusters == "kmeans":
        from sklearn.cluster import KMeans

        if settings.k > len(points):
            raise BadInputError(f"k-means with k={settings.k} needs at least {settings.k} "
                                f"rows with finite features; the table has {len(points)}")  # fmt: skip
        labels = KMeans(n_clusters=settings.k, n_init=10, random_state=settings.seed).fit_predict(
            points
        )
        return labels, {"k": settings.k}
    from sklearn.cluster import HDBSCAN

    size = settings.min_cluster_size or max(5, round(0.02 * len(points)))
    size = min(size, len(points))
    labels = HDBSCAN(min_cluster_size=max(2, size), copy=True).fit_predict(points)
    return labels, {"min_cluster_size": int(size)}


def behaviour_map(table: pd.DataFrame, settings: MapSettings | None = None) -> pd.DataFrame:
    """Add a 2-D embedding and clusters to a feature table.

    Parameters
    ----------
    table : pandas.DataFrame
        A feature table (DESIGN.md: ``frame``, identity columns, ``f0000…`` or
        ``flow_f…``/``rgb_f…``). Columns of an earlier map are replaced.
    settings : MapSettings, optional
        The method and clustering (default: PCA of standardised features, HDBSCAN).

    Returns
    -------
    pandas.DataFrame
        A copy of ``table`` with ``embed_0``, ``embed_1`` (NaN on rows with a non-finite
        feature) and ``cluster`` (-1: noise or a missing row); ``attrs`` keeps the table's
        metadata (less the hash and size of the file it was read from) and adds ``behaviour_map``: the settings, ``clustered_on``, ``pooled``,
        ``n_clusters``, ``noise_rows``, ``missing_rows``, ``rows`` and, for PCA,
        ``explained_variance_ratio`` of the two axes.

    Raises
    ------
    BadInputError
        No feature columns, fewer than 3 rows with finite features, or k-means' k above them.
    """
    settings = settings or MapSettings()
    cols = feature_columns(table)
    if not cols:
        raise BadInputError(
            f"A behaviour map needs feature columns (f0000…); got {list(table.columns)[:8]}"
        )
    values = table[cols].to_numpy(np.float64)
    ok = np.isfinite(values).all(axis=1)
    if ok.sum() < 3:
        raise BadInputError(
            f"A behaviour map needs at least 3 rows with finite features; the table has {ok.sum()}"
        )
    finite = values[ok]
    if settings.standardise:
        from sklearn.preprocessing import StandardScaler

        finite = StandardScaler().fit_transform(finite)
    points, embed_meta = _embed(finite, settings)
    labels, cluster_meta = _cluster(points, settings)
    out = table.drop(columns=[c for c in MAP_COLUMNS if c in table.columns]).copy()
    embedding = np.full((len(table), 2), np.nan)
    embedding[ok] = points
    cluster = np.full(len(table), -1, np.int64)
    cluster[ok] = labels
    out["embed_0"], out["embed_1"], out["cluster"] = embedding[:, 0], embedding[:, 1], cluster
    kept = ("method", "clusters", "standardise", "seed")  # the rest as each method used it
    settings_meta = {k: v for k, v in asdict(settings).items() if k in kept}
    # The input file's size and hash describe other data now (write_table records new ones).
    kept_attrs = {k: v for k, v in table.attrs.items() if k not in _FILE_KEYS}
    out.attrs = {**kept_attrs, "behaviour_map": {
        **settings_meta, **embed_meta, **cluster_meta,
        "clustered_on": "embedding", "pooled": True, "rows": len(table),
        "n_clusters": len(set(labels.tolist()) - {-1}),
        "noise_rows": int((labels == -1).sum()), "missing_rows": int((~ok).sum()),
    }}  # fmt: skip
    return out
