"""FedAvg: McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from Decentralized Data"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkit.client import Penalty
from fedkit.strategies.aggregate import weighted_mean
from fedkit.strategies.base import EmptyState


@dataclass(frozen=True)
class FedAvg:
    """Global parameters move by the train-size-weighted mean of the silos' deltas."""

    name: str = "fedavg"

    def init(self, params: np.ndarray) -> EmptyState:
        """FedAvg keeps no state."""
        return EmptyState()

    def aggregate(
        self, updates: np.ndarray, weights: np.ndarray, state: EmptyState, params: np.ndarray
    ) -> tuple[np.ndarray, EmptyState]:
        """``params + sum_k n_k / n * delta_k``."""
        return (params + weighted_mean(updates, weights)).astype(params.dtype), state

    def penalty(self, global_params: np.ndarray) -> Penalty | None:
        """No extra local term."""
        return None
