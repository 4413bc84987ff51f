"""Krum and Multi-Krum: Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant Gradient
Descent"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkit.strategies.aggregate import krum_select, weighted_mean
from fedkit.strategies.base import Controls, EmptyState, ServerSide


@dataclass(frozen=True)
class Krum(ServerSide):
    """Global parameters move by the delta(s) closest to their neighbours, tolerating ``byzantine`` bad silos.

    Each delta is scored by the summed squared distances to its K - byzantine - 2 nearest others; the ``krum_m``
    best are averaged with train-size weights (as Flower does; ``krum_m=1`` is Krum, ``krum_m=K`` with
    ``byzantine=0`` is FedAvg).

    Parameters
    ----------
    name
        The strategy's registry name.
    byzantine
        Number of Byzantine silos tolerated.
    krum_m
        Silos averaged by multi-Krum (1 = Krum).
    """

    name: str = "krum"
    byzantine: int = 0
    krum_m: int = 1

    def aggregate(
        self,
        updates: np.ndarray,
        weights: np.ndarray,
        state: EmptyState,
        params: np.ndarray,
        controls: Controls | None = None,
    ) -> tuple[np.ndarray, EmptyState]:
        """``params`` plus the weighted mean of the ``krum_m`` best-scored deltas."""
        best = krum_select(updates, self.byzantine, self.krum_m)
        return (params + weighted_mean(updates[best], weights[best])).astype(params.dtype), state
