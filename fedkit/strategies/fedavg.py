"""FedAvg: McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from Decentralized Data"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkit.strategies.aggregate import weighted_mean
from fedkit.strategies.base import Controls, EmptyState, ServerSide


@dataclass(frozen=True)
class FedAvg(ServerSide):
    """Global parameters move by the train-size-weighted mean of the silos' deltas.

    Parameters
    ----------
    name
        The strategy's registry name.
    """

    name: str = "fedavg"

    def aggregate(
        self,
        updates: np.ndarray,
        weights: np.ndarray,
        state: EmptyState,
        params: np.ndarray,
        controls: Controls | None = None,
    ) -> tuple[np.ndarray, EmptyState]:
        """``params + sum_k n_k / n * delta_k``."""
        return (params + weighted_mean(updates, weights)).astype(params.dtype), state
