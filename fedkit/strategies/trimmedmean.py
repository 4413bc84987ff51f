"""Trimmed mean: Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkit.strategies.aggregate import trimmed_mean
from fedkit.strategies.base import Controls, EmptyState, ServerSide


@dataclass(frozen=True)
class TrimmedMean(ServerSide):
    """Global parameters move by the coordinate-wise trimmed mean of the silos' deltas (train sizes ignored).

    Per coordinate, the ``floor(trim_beta * K)`` largest and smallest of K deltas are dropped, so
    the default 0.1 trims nothing with fewer than 10 silos (it is then the unweighted mean).

    Parameters
    ----------
    name
        The strategy's registry name.
    trim_beta
        Fraction trimmed at each end, in [0, 0.5).
    """

    name: str = "trimmedmean"
    trim_beta: float = 0.1

    def aggregate(
        self,
        updates: np.ndarray,
        weights: np.ndarray,
        state: EmptyState,
        params: np.ndarray,
        controls: Controls | None = None,
    ) -> tuple[np.ndarray, EmptyState]:
        """``params + trimmed_mean_k delta_k`` per coordinate."""
        return (params + trimmed_mean(updates, self.trim_beta)).astype(params.dtype), state
