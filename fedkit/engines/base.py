"""The engine interface: how parameters reach the silos and come back. The round loop needs nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedkit.strategies.base import LocalTerm


@dataclass(frozen=True)
class Scores:
    """A model's logits on one silo's test set, with the labels: enough for every metric and for pooling.

    Parameters
    ----------
    silo
        The silo's name.
    labels
        Its test labels.
    logits
        The model's logits on its test rows.
    """

    silo: str
    labels: np.ndarray
    logits: np.ndarray


@dataclass(frozen=True)
class FitReply:
    """What one silo returns from a round.

    Parameters
    ----------
    silo
        The silo's name.
    params
        Its local parameters (personal coordinates replaced by the global ones).
    n_train
        Its train size.
    train_loss
        Mean train loss over its steps.
    steps
        Step count.
    local_test
        Its local model's scores on its own test set (None when not asked for: a sweep that
        records only final evaluations).
    control_delta
        SCAFFOLD's change of its control variate, else None.
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
        """Local training of ``silos`` from ``params`` in round ``server_round``, adding the strategy's local term.

        Parameters
        ----------
        params
            The global parameters of the round.
        server_round
            The round (1-based).
        silos
            Names of the silos that train this round.
        term
            The strategy's local term (None for server-only strategies).

        Returns
        -------
        list[FitReply]
            One reply per silo, in the order of ``silos``.
        """
        ...

    def evaluate(self, params: np.ndarray) -> list[Scores]:
        """Scores of the global parameters on every silo's test set.

        Parameters
        ----------
        params
            The global parameters.
        """
        ...

    def evaluate_personal(self, params: np.ndarray, server_round: int) -> list[Scores]:
        """Scores of each silo's own model on its own test set (asked when ``RunConfig.scored`` is personal).

        Parameters
        ----------
        params
            The global parameters.
        server_round
            The round (0 is the initial model).
        """
        ...
