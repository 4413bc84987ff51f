"""95% intervals of a test-set ROC AUC (DeLong) and accuracy (Wilson): how much a per-silo score can be trusted.

A silo's test set can be tiny: FLamby's Switzerland has 16 test patients, one of them negative,
so its AUC of 0.93 is the rank of one patient among 15. Every per-silo AUC and accuracy fedkit
reports comes with ``n_test`` and one of these intervals, computed once, here.

**AUC: DeLong et al. (1988)**, "Comparing the areas under two or more correlated receiver operating
characteristic curves: a nonparametric approach", with midranks for ties (Sun & Xu 2014). Chosen
over a bootstrap because it is exact arithmetic on the test rows (no resampling, no seed, the same
numbers on every engine), costs one sort, and needs only the class-conditional counts of the scores
on ordered levels, so it can be computed from a site's own rows or from summed score histograms
(:mod:`fedkit.evalstats`) alike. Its variance needs at least two rows of each class: with one
negative (or one positive) it is undefined, and the interval is the whole ``[0, 1]``, which is
what one patient can tell about a ranking. The interval is the normal one, clipped to ``[0, 1]``
(as pROC's ``ci.auc(method="delong")``); a test set the model separates perfectly has variance 0
and gets ``[1, 1]``, so read it with ``n_test``.

**Accuracy: Wilson (1927)** score interval, "Probable inference, the law of succession, and
statistical inference": closed form from the number of correct rows and ``n``, never of zero width
and good coverage at small ``n`` and near 0 or 1, where the Wald interval fails (Agresti & Coull 1998).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Z95 = 1.959963984540054
"""The standard normal quantile of 0.975: two-sided 95%."""

INTERVAL_KEYS: tuple[str, ...] = ("auc_low", "auc_high", "accuracy_low", "accuracy_high")
"""The interval bounds a run's final block carries per silo, next to ``auc`` and ``accuracy``."""


def wilson(correct: Any, n: Any, z: float = Z95) -> tuple[Any, Any]:
    """Wilson score interval of a proportion ``correct / n`` (NaN where ``n`` is 0); numbers or arrays.

    Parameters
    ----------
    correct
        Number(s) of successes (correctly classified rows).
    n
        Number(s) of trials (test rows).
    z
        Normal quantile of the interval (default: 95%, two-sided).

    Returns
    -------
    tuple
        The lower and upper bounds, inside ``[0, 1]`` (floats for numbers, arrays for arrays).
    """
    correct, n = np.asarray(correct, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = correct / n
        scale = 1 + z * z / n
        center = (p + z * z / (2 * n)) / scale
        half = z / scale * np.sqrt(np.maximum(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    low, high = (
        np.where(n > 0, np.maximum(0.0, center - half), np.nan),
        np.where(n > 0, np.minimum(1.0, center + half), np.nan),
    )
    return (float(low), float(high)) if low.ndim == 0 else (low, high)


def _delong_levels(
    positives: np.ndarray, negatives: np.ndarray, group: np.ndarray, n_groups: int, z: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeLong per group from class counts on score levels sorted by group, then by score: (auc, low, high) arrays."""
    p, q = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    n_pos = np.bincount(group, p, minlength=n_groups)
    n_neg = np.bincount(group, q, minlength=n_groups)
    first = np.searchsorted(group, np.arange(n_groups))[group]  # each level's group's first level
    cum_p, cum_q = np.concatenate([[0.0], np.cumsum(p)]), np.concatenate([[0.0], np.cumsum(q)])
    below = cum_q[:-1] - cum_q[first]  # negatives of the group scored lower than the level
    above = n_pos[group] - (cum_p[1:] - cum_p[first])  # positives of the group scored higher
    with np.errstate(invalid="ignore", divide="ignore"):
        # placement values (midranks): a positive's share of negatives below it, a negative's share of positives above
        v10 = (below + 0.5 * q) / n_neg[group]
        v01 = (above + 0.5 * p) / n_pos[group]
        auc = np.bincount(group, np.where(p > 0, p * v10, 0.0), minlength=n_groups) / n_pos
        s10 = np.bincount(group, np.where(p > 0, p * (v10 - auc[group]) ** 2, 0.0), minlength=n_groups) / (n_pos - 1)
        s01 = np.bincount(group, np.where(q > 0, q * (v01 - auc[group]) ** 2, 0.0), minlength=n_groups) / (n_neg - 1)
        half = z * np.sqrt(s10 / n_pos + s01 / n_neg)
    low, high = np.maximum(0.0, auc - half), np.minimum(1.0, auc + half)
    thin = (n_pos < 2) | (n_neg < 2)  # DeLong's variance is undefined: one row of a class tells nothing more
    low, high = np.where(thin, 0.0, low), np.where(thin, 1.0, high)
    undefined = (n_pos == 0) | (n_neg == 0)
    return tuple(np.where(undefined, np.nan, a) for a in (auc, low, high))  # type: ignore[return-value]


def delong_from_counts(positives: np.ndarray, negatives: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """ROC AUC and its DeLong interval from class counts on ordered score levels (ties share a level).

    Parameters
    ----------
    positives, negatives
        Per score level, in increasing order of score, how many positive and negative rows have
        it: the unique scores of a test set, or the bins of a score histogram.
    z
        Normal quantile of the interval (default: 95%, two-sided).

    Returns
    -------
    tuple of float
        ``(auc, low, high)``: NaN for all three with one class; ``low, high = 0, 1`` when a class
        has a single row (DeLong's variance is undefined).
    """
    group = np.zeros(len(positives), dtype=np.int64)
    return tuple(float(a[0]) for a in _delong_levels(positives, negatives, group, 1, z))  # type: ignore[return-value]


def grouped_intervals(
    y: np.ndarray, z: np.ndarray, group: np.ndarray, n_groups: int, level: float = Z95
) -> dict[str, np.ndarray]:
    """Per group, the 95% intervals of its AUC (DeLong) and accuracy at probability 0.5 (Wilson), in one sort.

    The counterpart of :func:`fedkit.metrics.grouped_metrics`: many silos' test rows at once.

    Parameters
    ----------
    y
        0/1 labels of the rows.
    z
        The model's logits of the rows (positive means predicted positive).
    group
        Each row's group id in ``[0, n_groups)``.
    n_groups
        Number of groups.
    level
        Normal quantile of the intervals (default: 95%, two-sided).

    Returns
    -------
    dict
        :data:`INTERVAL_KEYS`, an array of ``n_groups`` each (NaN where undefined).
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    z = np.asarray(z, dtype=np.float64).ravel()
    group = np.asarray(group, dtype=np.int64).ravel()
    order = np.lexsort((z, group))
    g, zs, ys = group[order], z[order], y[order]
    new = np.ones(len(zs), dtype=bool)
    new[1:] = (zs[1:] != zs[:-1]) | (g[1:] != g[:-1])
    block = np.cumsum(new) - 1  # the score level (tie block) of each sorted row
    positives = np.bincount(block, ys, minlength=int(new.sum()))
    negatives = np.bincount(block, 1.0 - ys, minlength=int(new.sum()))
    _, auc_low, auc_high = _delong_levels(positives, negatives, g[new], n_groups, level)
    correct = np.bincount(group, (z > 0) == (y == 1), minlength=n_groups)
    accuracy_low, accuracy_high = wilson(correct, np.bincount(group, minlength=n_groups), level)
    return {"auc_low": auc_low, "auc_high": auc_high, "accuracy_low": accuracy_low, "accuracy_high": accuracy_high}


def delong(labels: np.ndarray, logits: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """ROC AUC of ``logits`` for 0/1 ``labels`` and its DeLong interval (see :func:`delong_from_counts`).

    Parameters
    ----------
    labels
        0/1 labels of the test rows.
    logits
        The model's scores of the same rows (any monotone score gives the same result).
    z
        Normal quantile of the interval (default: 95%, two-sided).

    Returns
    -------
    tuple of float
        ``(auc, low, high)``.
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    levels, index = np.unique(np.asarray(logits, dtype=np.float64).ravel(), return_inverse=True)
    positives = np.bincount(index, weights=y, minlength=len(levels))
    negatives = np.bincount(index, weights=1.0 - y, minlength=len(levels))
    return delong_from_counts(positives, negatives, z)


def metric_intervals(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """The 95% intervals of a test set's AUC (DeLong) and accuracy at probability 0.5 (Wilson), keyed by
    :data:`INTERVAL_KEYS` (NaN where undefined: no rows, or one class for the AUC).

    Parameters
    ----------
    labels
        0/1 labels of the test rows.
    logits
        The model's logits of the same rows (positive means predicted positive, as in :mod:`fedkit.metrics`).

    Returns
    -------
    dict
        ``auc_low``, ``auc_high``, ``accuracy_low``, ``accuracy_high``.
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    values = grouped_intervals(y, logits, np.zeros(len(y), dtype=np.int64), 1)
    return {k: float(v[0]) for k, v in values.items()}


def intervals_from_stats(stats: np.ndarray) -> dict[str, float]:
    """The 95% intervals of a (summed) evaluation-statistics vector (:mod:`fedkit.evalstats`): the AUC's
    DeLong interval on its score histograms, the accuracy's Wilson interval on its confusion counts.

    What the server can say of the pooled test rows from the sum alone (under secure aggregation too);
    the histogram's bins stand for the score levels, as for the pooled AUC itself.

    Parameters
    ----------
    stats
        A stats vector on :data:`fedkit.evalstats.BINS`.

    Returns
    -------
    dict
        ``auc_low``, ``auc_high``, ``accuracy_low``, ``accuracy_high``.
    """
    from fedkit.evalstats import layout

    where = layout()
    n, _, tp, _, tn, _ = (float(v) for v in stats[:6])
    _, auc_low, auc_high = delong_from_counts(stats[where["positive"]], stats[where["negative"]])
    accuracy_low, accuracy_high = wilson(tp + tn, n)
    return {"auc_low": auc_low, "auc_high": auc_high, "accuracy_low": accuracy_low, "accuracy_high": accuracy_high}


def interval_text(low: float | None, high: float | None) -> str:
    """An interval for a table cell: ``0.62–0.86`` (2 decimals), ``null`` when undefined (None or NaN).

    Parameters
    ----------
    low, high
        The bounds.
    """
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "null"
    return f"{low:.2f}–{high:.2f}"
