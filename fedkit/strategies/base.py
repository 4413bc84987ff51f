"""The strategy contract: a small value with pure ``init`` and ``aggregate`` (optax/Flower style)."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np

from fedkit.client import Penalty


class EmptyState(NamedTuple):
    """State of a strategy that keeps none."""


class Strategy(Protocol):
    """How the server turns silo updates into new global parameters.

    ``init(params) -> state`` and ``aggregate(updates, weights, state, params) -> (params, state)``
    are pure: no I/O, inputs untouched, state returned (a NamedTuple), never kept on ``self``.
    ``updates`` are the silos' parameter deltas (local minus global), shape (silos, parameters).
    """

    name: str

    def init(self, params: np.ndarray) -> Any:
        """The strategy's state before the first round."""
        ...

    def aggregate(
        self, updates: np.ndarray, weights: np.ndarray, state: Any, params: np.ndarray
    ) -> tuple[np.ndarray, Any]:
        """New global parameters and state from this round's updates."""
        ...

    def penalty(self, global_params: np.ndarray) -> Penalty | None:
        """An extra local-objective term for the silos this round (None for most strategies)."""
        ...
