"""SCAFFOLD: Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fedkit.strategies.aggregate import weighted_mean
from fedkit.strategies.base import LocalTerm


class ScaffoldState(NamedTuple):
    """The server control variate ``c``."""

    control: np.ndarray


@dataclass(frozen=True)
class Scaffold:
    """Control variates correct client drift: each local gradient gets ``c - c_i`` added.

    Silos keep their own ``c_i`` and update it with the paper's option II,
    ``c_i+ = c_i - c + (x - y_i) / (K * lr)``; the server moves
    ``x += server_lr * mean(dy)`` (weighted by train size, as FLamby) and
    ``c += |S| / N * mean(dc_i)``.
    """

    name: str = "scaffold"
    server_lr: float = 1.0

    def init(self, params: np.ndarray) -> ScaffoldState:
        """``c = 0``."""
        return ScaffoldState(np.zeros_like(params))

    def local_term(self, state: ScaffoldState, params: np.ndarray) -> LocalTerm:
        """Send the server control variate to the silos."""
        return LocalTerm(control=state.control)

    def aggregate(
        self, updates: np.ndarray, weights: np.ndarray, state: ScaffoldState, params: np.ndarray
    ) -> tuple[np.ndarray, ScaffoldState]:
        """``x + server_lr * weighted mean of the deltas``; the control variate moves in :meth:`update_controls`."""
        return (params + self.server_lr * weighted_mean(updates, weights)).astype(params.dtype), state

    def update_controls(self, state: ScaffoldState, deltas: np.ndarray, n_silos: int) -> ScaffoldState:
        """``c + |S| / N * mean_i(dc_i)`` over the sampled silos S of N."""
        step = len(deltas) / n_silos * np.asarray(deltas, dtype=np.float64).mean(axis=0)
        return ScaffoldState((state.control + step).astype(state.control.dtype))
