"""Shared aggregation maths, written once: pure functions over stacked update arrays.

``updates`` has shape (silos, parameters); nothing here modifies its inputs.
"""

from __future__ import annotations

import numpy as np


def weighted_mean(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average of the rows of ``updates`` weighted by ``weights`` (e.g. train sizes), in float64.

    McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from Decentralized
    Data": the server average of FedAvg weighs silo k by n_k / sum(n).
    """
    w = np.asarray(weights, dtype=np.float64)
    return (w / w.sum()) @ np.asarray(updates, dtype=np.float64)
