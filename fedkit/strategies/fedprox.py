"""FedProx: Li et al. 2020, "Federated Optimization in Heterogeneous Networks"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkit.strategies.base import EmptyState, LocalTerm
from fedkit.strategies.fedavg import FedAvg


@dataclass(frozen=True)
class FedProx(FedAvg):
    """FedAvg whose silos minimize ``loss + mu/2 * ||w - w_global||^2``, pulling local models toward the global one.

    Parameters
    ----------
    name
        The strategy's registry name.
    mu
        Proximal term weight (FLamby's Fed-Heart-Disease setting by default).
    """

    name: str = "fedprox"
    mu: float = 0.01

    def local_term(self, state: EmptyState, params: np.ndarray) -> LocalTerm:
        """The proximal term anchored at this round's global parameters."""
        return LocalTerm(prox_mu=self.mu, anchor=params)
