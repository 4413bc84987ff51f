"""SCAFFOLD: Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fedkit.strategies.aggregate import weighted_mean
from fedkit.strategies.base import Controls, LocalTerm


class ScaffoldState(NamedTuple):
    """The server control variate ``c``.

    Parameters
    ----------
    control
        The server control variate ``c``.
    """

    control: np.ndarray


@dataclass(frozen=True)
class Scaffold:
    """Control variates correct client drift: each local gradient gets ``c - c_i`` added.

    Silos keep their own ``c_i`` and update it with the paper's option II,
    ``c_i+ = c_i - c + (x - y_i) / (K * lr)``; the server moves
    ``x += server_lr * mean(dy)`` (weighted by train size, as FLamby) and
    ``c += |S| / N * mean(dc_i)``.

    Parameters
    ----------
    name
        The strategy's registry name.
    server_lr
        Server learning rate.
    """

    name: str = "scaffold"
    server_lr: float = 1.0

    def init(self, params: np.ndarray) -> ScaffoldState:
        """``c = 0``, in float64 like every strategy's state (the parameters may be float32)."""
        return ScaffoldState(np.zeros(np.shape(params), dtype=np.float64))

    def local_term(self, state: ScaffoldState, params: np.ndarray) -> LocalTerm:
        """Send the server control variate to the silos."""
        return LocalTerm(control=state.control)

    def aggregate(
        self,
        updates: np.ndarray,
        weights: np.ndarray,
        state: ScaffoldState,
        params: np.ndarray,
        controls: Controls | None = None,
    ) -> tuple[np.ndarray, ScaffoldState]:
        """``x + server_lr * weighted mean of the deltas``; ``c + |S| / N * mean_i(dc_i)`` over the sampled S of N.

        Without ``controls`` (no silo sent a change of its control variate) ``c`` stays as it is.
        """
        new = (params + self.server_lr * weighted_mean(updates, weights)).astype(params.dtype)
        if controls is None:
            return new, state
        step = len(controls.deltas) / controls.n_silos * np.asarray(controls.deltas, dtype=np.float64).mean(axis=0)
        return new, ScaffoldState(np.asarray(state.control, dtype=np.float64) + step)
