"""Which columns name a landmark: the one rule, for tables, Points-layer features and pose files.

``individual`` + ``keypoint`` (movement and its napari loader), ``id`` + ``label``
(napari-deeplabcut: ``id`` is the individual, empty in single-animal projects, ``label`` the body
part), then one of ``landmark``, ``track_id``, ``label`` (ours). Everything that groups points by
landmark (landmark extraction, the results on a Points layer, plots, saved tables) calls
:func:`landmark_key` and reads identities with :meth:`LandmarkKey.values`.

One name per landmark, whatever the route: an unnamed individual (napari-deeplabcut's ``id`` of a
single-animal project is ``""``; a saved table gives NaN) is :data:`SINGLE_INDIVIDUAL`, the name
movement gives the one animal of a single-animal DeepLabCut file, so ``individual_0/snout`` is the
same landmark from the command line, movement's layers and napari-deeplabcut's layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..errors import BadInputError

# Which input columns name a landmark, first match wins, and the output columns they become.
# movement's napari loader and pose files: individual + keypoint; napari-deeplabcut: ``id`` is the
# individual ("" in single-animal projects) and ``label`` the body part; ours: one column.
_KEY_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("individual", "keypoint"), ("individual", "keypoint")),
    (("id", "label"), ("individual", "keypoint")),
    (("landmark",), ("landmark",)),
    (("track_id",), ("landmark",)),
    (("label",), ("landmark",)),
)
#: Columns that hold a point's confidence: movement's ``confidence``, DeepLabCut's ``likelihood``.
CONFIDENCE_COLUMNS = ("confidence", "likelihood")
#: Columns that carry landmark identity in a feature table (the output side of every rule).
IDENTITY_COLUMNS = ("individual", "keypoint", "landmark")
#: The name of the one animal of a single-animal file or layer (movement's name for it).
SINGLE_INDIVIDUAL = "individual_0"


@dataclass(frozen=True)
class LandmarkKey:
    """Which input columns identify a landmark, and what feature tables call them.

    Attributes
    ----------
    source : tuple of str
        The input columns (of a table or a Points layer's features) that identify a landmark.
    output : tuple of str
        What those columns are called in feature tables, in the same order.
    """

    source: tuple[str, ...]
    output: tuple[str, ...]

    def identity(self, table: pd.DataFrame) -> pd.DataFrame:
        """Each row's identity, in the ``output`` columns, by the one naming rule.

        An unnamed individual (``""``, NaN or None) is :data:`SINGLE_INDIVIDUAL` when no row of
        the table names one (a single-animal file or layer), ``""`` otherwise.

        Parameters
        ----------
        table : pandas.DataFrame
            Points with the ``source`` columns.

        Returns
        -------
        pandas.DataFrame
            The ``output`` columns, one row per row of ``table`` (same index).

        Raises
        ------
        BadInputError
            A row has no value in an identity column other than the individual: it names no
            landmark (each such row would otherwise become a landmark of its own).
        """
        out = pd.DataFrame(index=table.index)
        for source, output in zip(self.source, self.output, strict=True):
            column = table[source]
            missing = column.isna().to_numpy()
            if output == "individual":
                names = column.astype(object).where(~missing, "").map(str)
                unnamed = (names == "").to_numpy()
                out[output] = names.where(~unnamed, SINGLE_INDIVIDUAL if unnamed.all() else "")
                continue
            if missing.any():
                first = int(missing.argmax())
                raise BadInputError(
                    f"{int(missing.sum())} of {len(table)} points have no {output} (empty column "
                    f"{source!r}, first at row {first}): name every landmark, or drop those rows"
                )
            out[output] = column.to_numpy()
        return out

    def values(self, table: pd.DataFrame) -> list[tuple]:
        """Each row's identity as a tuple in ``output`` order (see :meth:`identity`).

        Parameters
        ----------
        table : pandas.DataFrame
            Points with the ``source`` columns.

        Returns
        -------
        list of tuple
            One identity per row (empty for an empty table).

        Raises
        ------
        BadInputError
            A row names no landmark (see :meth:`identity`).
        """
        if not len(table):
            return []
        ident = self.identity(table)
        return list(zip(*(ident[c].tolist() for c in self.output), strict=True))


def landmark_key(columns: Any) -> LandmarkKey | None:
    """Find which columns identify a landmark in a table or a Points layer's features.

    The first rule that matches wins: ``individual`` + ``keypoint`` (movement), ``id`` + ``label``
    (napari-deeplabcut), then one of ``landmark``, ``track_id``, ``label`` (ours).

    Parameters
    ----------
    columns : pandas.DataFrame or iterable of str
        A table, or its column names.

    Returns
    -------
    LandmarkKey or None
        The identity columns; ``None`` when there are none (a single landmark).
    """
    cols = set(columns.columns if isinstance(columns, pd.DataFrame) else columns)
    for source, output in _KEY_RULES:
        if set(source) <= cols:
            return LandmarkKey(source, output)
    return None


def landmark_label(identity: tuple) -> Any:
    """Name a landmark for messages, plot legends and metadata.

    Parameters
    ----------
    identity : tuple
        A landmark's identity values (see :meth:`LandmarkKey.values`).

    Returns
    -------
    object
        The value of a one-column identity, else the non-empty parts joined by ``/``
        (``mouse1/snout``; ``snout`` when the individual is unnamed).
    """
    if len(identity) == 1:
        return identity[0]
    return "/".join(str(v) for v in identity if str(v) != "") or "/".join(map(str, identity))


def landmark_ids(table: pd.DataFrame) -> list:
    """Label each row of a points table with its landmark.

    Parameters
    ----------
    table : pandas.DataFrame
        Points, with identity columns (see :func:`landmark_key`) or without.

    Returns
    -------
    list
        Each row's :func:`landmark_label`; all ``None`` when the table has no identity columns.
    """
    key = landmark_key(table)
    if key is None:
        return [None] * len(table)
    return [landmark_label(v) for v in key.values(table)]


def confidence_column(columns: Any) -> str | None:
    """Find the column that holds a point's confidence.

    Parameters
    ----------
    columns : pandas.DataFrame or iterable of str
        A table, or its column names.

    Returns
    -------
    str or None
        ``confidence`` (movement) or ``likelihood`` (DeepLabCut), whichever comes first; ``None``
        when there is neither.
    """
    cols = set(columns.columns if isinstance(columns, pd.DataFrame) else columns)
    return next((c for c in CONFIDENCE_COLUMNS if c in cols), None)
