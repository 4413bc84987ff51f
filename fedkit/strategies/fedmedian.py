"""FedMedian: Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkit.strategies.aggregate import coordinate_median
from fedkit.strategies.base import Controls, EmptyState, ServerSide


@dataclass(frozen=True)
class FedMedian(ServerSide):
    """Global parameters move by the coordinate-wise median of the silos' deltas (train sizes ignored).

    Parameters
    ----------
    name
        The strategy's registry name.
    """

    name: str = "fedmedian"

    def aggregate(
        self,
        updates: np.ndarray,
        weights: np.ndarray,
        state: EmptyState,
        params: np.ndarray,
        controls: Controls | None = None,
    ) -> tuple[np.ndarray, EmptyState]:
        """``params + median_k delta_k`` per coordinate."""
        return (params + coordinate_median(updates)).astype(params.dtype), state
