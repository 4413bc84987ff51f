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

import numpy as np

Z95 = 1.959963984540054
"""The standard normal quantile of 0.975: two-sided 95%."""

INTERVAL_KEYS: tuple[str, ...] = ("auc_low", "auc_high", "accuracy_low", "accuracy_high")
"""The interval bounds a run's final block carries per silo, next to ``auc`` and ``accuracy``."""


def wilson(correct: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``correct / n`` (NaN, NaN when ``n`` is 0).

    Parameters
    ----------
    correct
        Number of successes (correctly classified rows).
    n
        Number of trials (test rows).
    z
        Normal quantile of the interval (default: 95%, two-sided).

    Returns
    -------
    tuple of float
        The lower and upper bound, inside ``[0, 1]``.
    """
    if n <= 0:
        return math.nan, math.nan
    p = correct / n
    scale = 1 + z * z / n
    center = (p + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    return max(0.0, center - half), min(1.0, center + half)


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
    p = np.asarray(positives, dtype=np.float64)
    q = np.asarray(negatives, dtype=np.float64)
    n_pos, n_neg = p.sum(), q.sum()
    if n_pos == 0 or n_neg == 0:
        return math.nan, math.nan, math.nan
    # placement values (midranks): a positive's share of negatives below it, a negative's share of positives above
    v10 = (np.cumsum(q) - q + 0.5 * q) / n_neg
    v01 = (n_pos - np.cumsum(p) + 0.5 * p) / n_pos
    auc = float(np.sum(p * v10) / n_pos)
    if n_pos < 2 or n_neg < 2:
        return auc, 0.0, 1.0
    s10 = np.sum(p * (v10 - auc) ** 2) / (n_pos - 1)
    s01 = np.sum(q * (v01 - auc) ** 2) / (n_neg - 1)
    half = z * math.sqrt(s10 / n_pos + s01 / n_neg)
    return auc, max(0.0, auc - half), min(1.0, auc + half)


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
    z = np.asarray(logits, dtype=np.float64).ravel()
    if len(y) == 0:
        return dict.fromkeys(INTERVAL_KEYS, math.nan)
    _, auc_low, auc_high = delong(y, z)
    accuracy_low, accuracy_high = wilson(float(np.sum((z > 0) == (y == 1))), len(y))
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
