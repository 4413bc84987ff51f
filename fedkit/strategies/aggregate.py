"""Shared aggregation maths, written once: pure functions over stacked update arrays.

``updates`` has shape (silos, parameters); nothing here modifies its inputs.
"""

from __future__ import annotations

import math

import numpy as np

from fedkit.errors import ConfigError


def weighted_mean(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average of the rows of ``updates`` weighted by ``weights`` (e.g. train sizes), in float64.

    McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from Decentralized Data": the
    server average of FedAvg weighs silo k by n_k / sum(n).

    Parameters
    ----------
    updates
        One row per silo, one column per parameter.
    weights
        One non-negative weight per silo (not all zero).
    """
    w = np.asarray(weights, dtype=np.float64)
    return (w / w.sum()) @ np.asarray(updates, dtype=np.float64)


def coordinate_median(updates: np.ndarray) -> np.ndarray:
    """Coordinate-wise median of the rows of ``updates``, in float64 (weights play no part).

    Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates": with an even
    number of rows, the mean of the two middle values.

    Parameters
    ----------
    updates
        One row per silo, one column per parameter.
    """
    return np.median(np.asarray(updates, dtype=np.float64), axis=0)


def trimmed_mean(updates: np.ndarray, trim_beta: float) -> np.ndarray:
    """Coordinate-wise mean after dropping the ``floor(trim_beta * K)`` largest and smallest of K rows.

    Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"; unweighted, as
    in the paper (and scipy's ``trim_mean``, which Flower follows).

    Parameters
    ----------
    updates
        One row per silo, one column per parameter.
    trim_beta
        Fraction trimmed at each end, in [0, 0.5).
    """
    rows = np.asarray(updates, dtype=np.float64)
    count = len(rows)
    cut = math.floor(trim_beta * count)
    if 2 * cut >= count:
        raise ConfigError(
            f"trimmedmean with trim_beta={trim_beta} drops {cut} updates at each end of the {count} silos of "
            f"this round, leaving none; set trim_beta below {((count - 1) // 2 + 1) / count:.3g} or use more silos."
        )
    return np.sort(rows, axis=0)[cut : count - cut].mean(axis=0)


def krum_select(updates: np.ndarray, byzantine: int, krum_m: int) -> np.ndarray:
    """Indices of the ``krum_m`` rows of ``updates`` with the lowest Krum scores, best first.

    Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent": a row's
    score is the sum of its squared distances to its K - f - 2 nearest other rows (f = ``byzantine``); Krum
    keeps the best row, Multi-Krum the ``krum_m`` best. Ties go to the lower index.

    Parameters
    ----------
    updates
        One row per silo, one column per parameter.
    byzantine
        Number of Byzantine silos tolerated (f).
    krum_m
        How many rows to keep.
    """
    rows = np.asarray(updates, dtype=np.float64)
    count = len(rows)
    nearest = count - byzantine - 2
    if nearest < 1:
        raise ConfigError(
            f"krum with byzantine={byzantine} needs at least byzantine + 3 = {byzantine + 3} silos per round; "
            f"got {count} silos this round. Lower byzantine to at most {max(count - 3, 0)} or use more silos "
            "(or a larger fraction)."
        )
    if krum_m > count:
        raise ConfigError(
            f"krum with krum_m={krum_m} averages more updates than the {count} silos of this round; "
            f"set krum_m to at most {count}."
        )
    distances = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(distances, np.inf)
    scores = np.sort(distances, axis=1)[:, :nearest].sum(axis=1)
    return np.argsort(scores, kind="stable")[:krum_m]
