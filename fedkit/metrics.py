"""Binary classification metrics from logits: log loss, ROC AUC, accuracy at probability 0.5."""

from __future__ import annotations

import math

import numpy as np

METRICS: tuple[str, ...] = ("loss", "auc", "accuracy")


def log_loss(y: np.ndarray, z: np.ndarray) -> float:
    """Mean binary cross-entropy of labels ``y`` given logits ``z`` (stable: softplus(z) - y*z)."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def roc_auc(y: np.ndarray, z: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney U with average ranks for ties, equal to scikit-learn's); NaN with one class."""
    positives = int(np.sum(y == 1))
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(z, kind="mergesort")
    ranks = np.empty(len(z), dtype=np.float64)
    sorted_z = z[order]
    # average rank of each group of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_z[1:] != sorted_z[:-1]])
    ends = np.r_[starts[1:], len(z)]
    group_rank = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(group_rank, ends - starts)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def accuracy(y: np.ndarray, z: np.ndarray) -> float:
    """Share of rows where (logit > 0) equals the label, i.e. accuracy at probability 0.5."""
    return float(np.mean((z > 0) == (y == 1)))


def binary_metrics(y: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """``{"loss", "auc", "accuracy"}`` for labels ``y`` and logits ``z``; AUC is NaN when ``y`` has one class."""
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    return {"loss": log_loss(y, z), "auc": roc_auc(y, z), "accuracy": accuracy(y, z)}
