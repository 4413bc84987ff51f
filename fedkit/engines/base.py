"""The engine interface: how parameters reach the silos and come back. The round loop needs nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedkit.strategies.base import LocalTerm


@dataclass(frozen=True)
class Scores:
    """A model's logits on one silo's test set, with the labels: enough for every metric and for pooling."""

    silo: str
    labels: np.ndarray
    logits: np.ndarray


@dataclass(frozen=True)
class FitReply:
    """What one silo returns from a round.

    Its local parameters (personal coordinates replaced by the global ones), train size, mean train
    loss, step count, its local model's scores on its own test set (None when not asked for: a
    sweep that records only final evaluations), and SCAFFOLD's control delta.
    """

    silo: str
    params: np.ndarray
    n_train: int
    train_loss: float
    steps: int
    local_test: Scores | None
    control_delta: np.ndarray | None = None


class Engine(Protocol):
    """Moves parameters to silos and back; simulation runs them in-process, remote over a network."""

    @property
    def silos(self) -> tuple[str, ...]:
        """Names of all silos, in order."""
        ...

    def initial_params(self) -> np.ndarray:
        """The seeded initial global parameters."""
        ...

    def fit(
        self, params: np.ndarray, server_round: int, silos: Sequence[str], term: LocalTerm | None = None
    ) -> list[FitReply]:
        """Local training of ``silos`` from ``params`` in round ``server_round``, adding the strategy's local term."""
        ...

    def evaluate(self, params: np.ndarray) -> list[Scores]:
        """Scores of the global parameters on every silo's test set."""
        ...

    def evaluate_personal(self, params: np.ndarray, server_round: int) -> list[Scores]:
        """Scores of each silo's own model on its own test set (asked when ``RunConfig.scored`` is personal)."""
        ...
