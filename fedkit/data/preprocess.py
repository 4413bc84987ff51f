"""Column selection, missing values, one-hot encoding and standardization of the UCI rows.

All functions are pure (arrays in, new arrays out). Missing-value policy:

- ``"drop"`` (FLamby): rows with a missing value ('?') in a kept column are dropped; ``chol == 0``
  is kept as recorded.
- ``"impute"``: no row is dropped; ``chol == 0`` in switzerland and va means "not measured" and
  becomes missing; a missing value is replaced by the silo's own train mean (0 after
  standardization). A feature a silo never measured (chol in switzerland) is constant there.

slope, ca and thal are always dropped: they are missing for most patients outside Cleveland
(ca: 291/294 in hungarian, 118/123 in switzerland, 198/200 in va).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from fedkit.data.uci import COLUMNS

NUMERIC: tuple[str, ...] = ("age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak")
CATEGORICAL: dict[str, tuple[int, ...]] = {"cp": (1, 2, 3, 4), "restecg": (0, 1, 2)}
#: The 13 model features in column order: the numeric columns, then one-hot cp and restecg (first level dropped).
FEATURES: tuple[str, ...] = NUMERIC + tuple(
    f"{name}_{level}" for name, levels in CATEGORICAL.items() for level in levels[1:]
)
CHOL_NOT_MEASURED_IN: frozenset[str] = frozenset({"switzerland", "va"})
MISSING_POLICIES: tuple[str, ...] = ("drop", "impute")
STD_EPS = 1e-9
_KEPT = [COLUMNS.index(c) for c in NUMERIC + tuple(CATEGORICAL)]


def select(raw: np.ndarray, hospital: str, missing: str) -> np.ndarray:
    """Keep the 10 used columns plus the label; apply the missing-value policy's row rule.

    Parameters
    ----------
    raw
        One hospital's parsed file, the 14 UCI columns.
    hospital
        The hospital's name.
    missing
        Missing-value policy: ``"drop"`` or ``"impute"``.
    """
    table = raw[:, [*_KEPT, COLUMNS.index("num")]].copy()
    if missing == "impute" and hospital in CHOL_NOT_MEASURED_IN:
        chol = table[:, NUMERIC.index("chol")]
        chol[chol == 0] = np.nan
    if missing == "drop":
        table = table[~np.isnan(table).any(axis=1)]
    return table


def encode(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a selected table into features (one-hot cp and restecg, first level dropped) and 0/1 labels.

    The column order is ``FEATURES``, the same as FLamby's ``pd.get_dummies(..., drop_first=True)`` over the
    pooled data. A missing category makes its dummies missing.

    Parameters
    ----------
    table
        A table :func:`select` kept.
    """
    numeric = table[:, : len(NUMERIC)]
    dummies = [one_hot(table[:, len(NUMERIC) + i], levels) for i, levels in enumerate(CATEGORICAL.values())]
    x = np.column_stack([numeric, *dummies])
    y = (table[:, -1] > 0).astype(np.float64)
    return x, y


def one_hot(column: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Dummies (rows, len(levels) - 1) of ``column`` for ``levels[1:]``: the first level is dropped.

    A value that is none of the levels gets all zeros, like the first level (callers check levels first); a
    missing value (NaN) makes every dummy of its row missing.

    Parameters
    ----------
    column
        The categorical column's values.
    levels
        Its levels, the first one dropped.
    """
    column = np.asarray(column, dtype=np.float64)
    dummies = (column[:, None] == np.asarray(levels[1:], dtype=np.float64)[None, :]).astype(np.float64)
    dummies[np.isnan(column)] = np.nan
    return dummies


class Moments(NamedTuple):
    """Per-column count, sum and sum of squares of the non-missing values: all a silo shares to standardize.

    Parameters
    ----------
    n
        Non-missing values per column.
    total
        Their sum per column.
    squares
        Their sum of squares per column.
    """

    n: np.ndarray
    total: np.ndarray
    squares: np.ndarray


def moments(x: np.ndarray) -> Moments:
    """The :class:`Moments` of the rows of ``x``, ignoring NaN.

    Parameters
    ----------
    x
        Rows, shape (rows, features); NaN is missing.
    """
    present = ~np.isnan(x)
    values = np.where(present, x, 0.0)
    return Moments(present.sum(axis=0).astype(np.float64), values.sum(axis=0), (values**2).sum(axis=0))


def combine(parts: list[Moments]) -> Moments:
    """Add up moments from several silos (what a federated server does with them).

    Parameters
    ----------
    parts
        Each silo's moments.
    """
    return Moments(*(np.sum([getattr(p, f) for p in parts], axis=0) for f in Moments._fields))


def mean_std(m: Moments) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof=1, as ``torch.std``) from moments; 0 where undefined.

    Parameters
    ----------
    m
        Moments (one silo's or combined).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(m.n > 0, m.total / np.maximum(m.n, 1), 0.0)
        var = np.where(m.n > 1, (m.squares - m.n * mean**2) / np.maximum(m.n - 1, 1), 0.0)
    return mean, np.sqrt(np.maximum(var, 0.0))


def standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray | None) -> np.ndarray:
    """``(x - mean) / (std + 1e-9)``, or just mean-imputation when ``std`` is None; NaN become the mean.

    A feature constant in the train rows (std 0) is only centered: FLamby's ``/ (0 + 1e-9)`` would blow a
    different test value up to ~1e9 (it never happens in the four hospitals, but does in small synthetic silos).

    Parameters
    ----------
    x
        Rows, shape (rows, features); NaN is missing.
    mean
        Per-feature mean.
    std
        Per-feature standard deviation; None to impute only.
    """
    filled = np.where(np.isnan(x), mean, x)
    if std is None:
        return filled
    return (filled - mean) / np.where(std > 0, std + STD_EPS, 1.0)


def unstandardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray | None) -> np.ndarray:
    """The inverse of :func:`standardize` (missing values come back as the mean they were filled with).

    Parameters
    ----------
    x
        Standardized rows.
    mean
        Per-feature mean used to standardize.
    std
        Per-feature standard deviation used, or None.
    """
    x = np.asarray(x, dtype=np.float64)
    if std is None:
        return x
    return x * np.where(std > 0, std + STD_EPS, 1.0) + mean
