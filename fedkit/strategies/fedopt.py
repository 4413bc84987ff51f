"""FedAdam, FedYogi, FedAdagrad: Reddi et al. 2021, "Adaptive Federated Optimization" (Algorithm 2).

One family, one file: the three differ only in the second-moment rule, so they share
:func:`adaptive_step` and the state instead of three copies of it. Each composes with
:func:`~fedkit.strategies.aggregate.weighted_mean` for the round's delta.

Where the paper leaves a choice we follow FLamby's Fed-Heart-Disease benchmark
(``flamby/config_heart_disease.json`` and ``flamby/strategies/fed_opt.py``): ``beta1=0.9``,
``beta2=0.999``, ``tau=1e-8``, ``m`` starting at zero, no bias correction; the server learning
rates are FLamby's tuned ones. The paper asks for ``v_{-1} >= tau**2``; we start ``v`` at exactly
``tau**2`` (FLamby starts at 0: a difference of ``tau**2``, 1e-16 by default, in ``v``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fedkit.strategies.aggregate import weighted_mean
from fedkit.strategies.base import Controls, ServerSide


class AdaptiveState(NamedTuple):
    """First and second moments of the server's pseudo-gradient (float64, one entry per parameter).

    Parameters
    ----------
    m
        First moment.
    v
        Second moment.
    """

    m: np.ndarray
    v: np.ndarray


def initial_moments(params: np.ndarray, tau: float) -> AdaptiveState:
    """``m = 0`` and ``v = tau**2``, the smallest start Algorithm 2 allows.

    Parameters
    ----------
    params
        The initial global parameters.
    tau
        Adaptivity / epsilon.
    """
    return AdaptiveState(m=np.zeros(params.shape, dtype=np.float64), v=np.full(params.shape, tau**2, dtype=np.float64))


def adaptive_step(
    params: np.ndarray, delta: np.ndarray, m: np.ndarray, v: np.ndarray, server_lr: float, beta1: float, tau: float
) -> tuple[np.ndarray, AdaptiveState]:
    """The shared tail of Algorithm 2, given the round's delta and the already-updated ``v``.

    ``m = beta1 m + (1 - beta1) delta``; ``params + server_lr * m / (sqrt(v) + tau)`` in ``params.dtype``.

    Parameters
    ----------
    params
        The global parameters before this round.
    delta
        The round's weighted mean delta.
    m
        The first moment before this round.
    v
        The second moment, already updated.
    server_lr
        Server learning rate.
    beta1
        First-moment decay.
    tau
        Adaptivity / epsilon.
    """
    m = beta1 * m + (1 - beta1) * delta
    return (params + server_lr * m / (np.sqrt(v) + tau)).astype(params.dtype), AdaptiveState(m=m, v=v)


class _Adaptive(ServerSide):
    """``init`` and ``aggregate`` of the family; a subclass gives its fields and :meth:`second_moment`."""

    server_lr: float
    beta1: float
    tau: float

    def second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        """The new ``v`` from the old one and ``delta**2``."""
        raise NotImplementedError

    def init(self, params: np.ndarray) -> AdaptiveState:
        """``m = 0``, ``v = tau**2``."""
        return initial_moments(params, self.tau)

    def aggregate(
        self,
        updates: np.ndarray,
        weights: np.ndarray,
        state: AdaptiveState,
        params: np.ndarray,
        controls: Controls | None = None,
    ) -> tuple[np.ndarray, AdaptiveState]:
        """One step along the train-size-weighted mean delta."""
        delta = weighted_mean(updates, weights)
        v = self.second_moment(state.v, delta**2)
        return adaptive_step(params, delta, state.m, v, self.server_lr, self.beta1, self.tau)


@dataclass(frozen=True)
class FedAdagrad(_Adaptive):
    """Adagrad on the server: ``v = v + delta**2`` (Reddi et al. 2021, Algorithm 2).

    Parameters
    ----------
    name
        The strategy's registry name.
    server_lr
        Server learning rate.
    beta1
        First-moment decay.
    tau
        Adaptivity / epsilon.
    """

    name: str = "fedadagrad"
    server_lr: float = 0.316228
    beta1: float = 0.9
    tau: float = 1e-8

    def second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        """``v + delta**2``.

        Parameters
        ----------
        v
            The second moment before this round.
        squared
            The round's ``delta**2``.
        """
        return v + squared


@dataclass(frozen=True)
class FedAdam(_Adaptive):
    """Adam on the server: ``v = beta2 v + (1 - beta2) delta**2`` (Reddi et al. 2021, Algorithm 2).

    Parameters
    ----------
    name
        The strategy's registry name.
    server_lr
        Server learning rate.
    beta1
        First-moment decay.
    beta2
        Second-moment decay.
    tau
        Adaptivity / epsilon.
    """

    name: str = "fedadam"
    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    tau: float = 1e-8

    def second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        """``beta2 v + (1 - beta2) delta**2``.

        Parameters
        ----------
        v
            The second moment before this round.
        squared
            The round's ``delta**2``.
        """
        return self.beta2 * v + (1 - self.beta2) * squared


@dataclass(frozen=True)
class FedYogi(_Adaptive):
    """Yogi on the server: ``v = v - (1 - beta2) delta**2 sign(v - delta**2)`` (Reddi et al. 2021, Algorithm 2).

    Parameters
    ----------
    name
        The strategy's registry name.
    server_lr
        Server learning rate.
    beta1
        First-moment decay.
    beta2
        Second-moment decay.
    tau
        Adaptivity / epsilon.
    """

    name: str = "fedyogi"
    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    tau: float = 1e-8

    def second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        """``v - (1 - beta2) delta**2 sign(v - delta**2)``.

        Parameters
        ----------
        v
            The second moment before this round.
        squared
            The round's ``delta**2``.
        """
        return v - (1 - self.beta2) * squared * np.sign(v - squared)
