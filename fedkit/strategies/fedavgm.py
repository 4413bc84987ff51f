"""FedAvgM: Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
Classification"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fedkit.strategies.aggregate import weighted_mean
from fedkit.strategies.base import Controls, ServerSide


class MomentumState(NamedTuple):
    """FedAvgM's server momentum buffer (float64, one entry per parameter).

    Parameters
    ----------
    momentum
        The momentum buffer ``m``.
    """

    momentum: np.ndarray


@dataclass(frozen=True)
class FedAvgM(ServerSide):
    """FedAvg with server momentum: the weighted mean of the deltas drives heavy-ball SGD on the server.

    ``m = server_momentum * m + delta``; ``params + server_lr * m`` (Hsu et al.'s ``v <- beta v + dw; w <- w - v``
    with updates as negative pseudo-gradients, plus Flower's server learning rate). With ``server_momentum=0``
    and ``server_lr=1`` it is FedAvg.

    Parameters
    ----------
    name
        The strategy's registry name.
    server_lr
        Server learning rate.
    server_momentum
        Server momentum, in [0, 1).
    """

    name: str = "fedavgm"
    server_lr: float = 1.0
    server_momentum: float = 0.9

    def init(self, params: np.ndarray) -> MomentumState:
        """A zero momentum buffer."""
        return MomentumState(momentum=np.zeros(params.shape, dtype=np.float64))

    def aggregate(
        self,
        updates: np.ndarray,
        weights: np.ndarray,
        state: MomentumState,
        params: np.ndarray,
        controls: Controls | None = None,
    ) -> tuple[np.ndarray, MomentumState]:
        """One momentum step along the train-size-weighted mean delta."""
        momentum = self.server_momentum * state.momentum + weighted_mean(updates, weights)
        return (params + self.server_lr * momentum).astype(params.dtype), MomentumState(momentum=momentum)
