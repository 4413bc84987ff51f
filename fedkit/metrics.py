"""Binary classification metrics from logits: log loss, ROC AUC, accuracy at probability 0.5.

:func:`grouped_metrics` scores many silos in one pass (one sort for all of them), which is what
keeps evaluation of a thousand silos per round cheap.
"""

from __future__ import annotations

import numpy as np

METRICS: tuple[str, ...] = ("loss", "auc", "accuracy")


def grouped_metrics(y: np.ndarray, z: np.ndarray, group: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Per-group ``loss`` (mean BCE from logits), ``auc`` (NaN with one class) and ``accuracy`` (logit > 0).

    AUC is Mann-Whitney U with average ranks for ties, equal to scikit-learn's ``roc_auc_score``.
    A group with any non-finite logit (a diverged model) gets NaN for all three: a number computed from
    NaN scores would mean nothing.

    Parameters
    ----------
    y
        0/1 labels.
    z
        Logits, one per row.
    group
        Each row's group id, in ``[0, n_groups)``.
    n_groups
        Number of groups.

    Returns
    -------
    dict[str, np.ndarray]
        ``loss``, ``auc`` and ``accuracy``, each an array with one value per group.
    """
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    group = np.asarray(group, dtype=np.int64)
    if len(z) == 0:  # no rows in any group: nothing to score
        return {m: np.full(n_groups, np.nan) for m in METRICS}
    diverged = np.bincount(group, ~np.isfinite(z), minlength=n_groups) > 0
    if diverged.any():
        z = np.where(np.isfinite(z), z, 0.0)  # scored as 0, then blanked: no NaN arithmetic, no warnings
    n = np.bincount(group, minlength=n_groups).astype(np.float64)
    loss = np.bincount(group, np.logaddexp(0.0, z) - y * z, minlength=n_groups) / n
    accuracy = np.bincount(group, (z > 0) == (y == 1), minlength=n_groups) / n
    positives = np.bincount(group, y, minlength=n_groups)
    negatives = n - positives
    order = np.lexsort((z, group))
    g, zs = group[order], z[order]
    new = np.empty(len(zs), dtype=bool)
    new[0] = True
    new[1:] = (zs[1:] != zs[:-1]) | (g[1:] != g[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(zs))
    first_of_group = np.searchsorted(g, np.arange(n_groups))
    # rank within the group, ties averaged: (start + end + 1) / 2 relative to the group's first row
    rank = np.repeat((starts + ends + 1) / 2.0, ends - starts) - first_of_group[g]
    rank_sum = np.bincount(g, rank * y[order], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)
    auc[(positives == 0) | (negatives == 0)] = np.nan
    for values in (loss, auc, accuracy):
        values[diverged] = np.nan
    return {"loss": loss, "auc": auc, "accuracy": accuracy}


def binary_metrics(y: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """``{"loss", "auc", "accuracy"}`` for labels ``y`` and logits ``z``; AUC is NaN when ``y`` has one class.

    Parameters
    ----------
    y
        0/1 labels.
    z
        Logits, one per row.
    """
    values = grouped_metrics(y, z, np.zeros(len(y), dtype=np.int64), 1)
    return {m: float(values[m][0]) for m in METRICS}


def roc_auc(y: np.ndarray, z: np.ndarray) -> float:
    """ROC AUC of logits ``z`` for labels ``y`` (NaN with one class).

    Parameters
    ----------
    y
        0/1 labels.
    z
        Logits, one per row.
    """
    return binary_metrics(y, z)["auc"]
