"""The strategy contract: a small value with pure ``init`` and ``aggregate`` (optax/Flower style)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np


@dataclass(frozen=True)
class LocalTerm:
    """What a strategy adds to every silo's local objective, as data (so any engine can apply it).

    Parameters
    ----------
    prox_mu
        FedProx's proximal weight: the term is ``mu/2 * ||w - anchor||^2`` (Li et al. 2020); 0 for none.
    anchor
        The proximal term's anchor, this round's global parameters.
    control
        SCAFFOLD's server control variate ``c``; a silo adds ``c - c_i`` to every gradient, with ``c_i`` its own
        control variate (Karimireddy et al. 2020).
    """

    prox_mu: float = 0.0
    anchor: np.ndarray | None = None
    control: np.ndarray | None = None


class Controls(NamedTuple):
    """SCAFFOLD's control variates coming back from a round (Karimireddy et al. 2020).

    Parameters
    ----------
    deltas
        Each sampled silo's change of its control variate, ``c_i+ - c_i``, shape (silos, parameters).
    n_silos
        How many silos the round sampled them from (N, the federation's size).
    """

    deltas: np.ndarray
    n_silos: int


class EmptyState(NamedTuple):
    """State of a strategy that keeps none."""


class Strategy(Protocol):
    """How the server turns silo updates into new global parameters.

    ``init(params) -> state`` and ``aggregate(updates, weights, state, params, controls) -> (params, state)`` are
    pure: no I/O, inputs untouched, state returned (a NamedTuple), never kept on ``self``. The strategy's
    hyperparameters are its dataclass fields, named as the RunConfig fields that set them.
    """

    name: str

    def init(self, params: np.ndarray) -> Any:
        """The strategy's state before the first round.

        Parameters
        ----------
        params
            The initial global parameters.
        """
        ...

    def aggregate(
        self,
        updates: np.ndarray,
        weights: np.ndarray,
        state: Any,
        params: np.ndarray,
        controls: Controls | None = None,
    ) -> tuple[np.ndarray, Any]:
        """New global parameters and state from this round's updates.

        Parameters
        ----------
        updates
            The silos' parameter deltas (local minus global), shape (silos, parameters).
        weights
            Their train sizes.
        state
            The strategy's state before this round.
        params
            The global parameters before this round.
        controls
            The silos' control-variate changes when the strategy's local term sent them a control variate
            (SCAFFOLD), else None.
        """
        ...

    def local_term(self, state: Any, params: np.ndarray) -> LocalTerm | None:
        """What the silos add to their local objective this round (None for server-only strategies).

        Parameters
        ----------
        state
            The strategy's state before this round.
        params
            The global parameters of this round.
        """
        ...


class ServerSide:
    """Defaults for strategies that act only on the server: no state, no local term (so no ``controls`` come back)."""

    def init(self, params: np.ndarray) -> Any:
        """No state."""
        return EmptyState()

    def local_term(self, state: Any, params: np.ndarray) -> LocalTerm | None:
        """Silos train plainly."""
        return None
