"""Aggregation strategies, one module per strategy (FedAdam/FedYogi/FedAdagrad share ``fedopt``), registered by name.

A strategy's hyperparameters are its dataclass fields (besides ``name``); each has a RunConfig
field of the same name, and :attr:`RunConfig.strategy_options` picks the ones a run sets.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from fedkit.strategies.base import Strategy
from fedkit.strategies.fedavg import FedAvg
from fedkit.strategies.fedavgm import FedAvgM
from fedkit.strategies.fedmedian import FedMedian
from fedkit.strategies.fedopt import FedAdagrad, FedAdam, FedYogi
from fedkit.strategies.fedprox import FedProx
from fedkit.strategies.krum import Krum
from fedkit.strategies.scaffold import Scaffold
from fedkit.strategies.trimmedmean import TrimmedMean

REGISTRY: dict[str, type] = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedprox": FedProx,
    "scaffold": Scaffold,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedmedian": FedMedian,
    "trimmedmean": TrimmedMean,
    "krum": Krum,
}
BASELINES: tuple[str, ...] = ("pooled", "local")
"""Not aggregation strategies: the non-federated references, run through the same loop and metrics."""
STRATEGIES: tuple[str, ...] = (*REGISTRY, *BASELINES)
HYPERPARAMETERS: tuple[str, ...] = (
    "server_lr",
    "server_momentum",
    "mu",
    "beta1",
    "beta2",
    "tau",
    "trim_beta",
    "byzantine",
    "krum_m",
)


def options_of(name: str) -> tuple[str, ...]:
    """The hyperparameter names strategy ``name`` takes (none for the baselines).

    Parameters
    ----------
    name
        The strategy's name (a key of ``REGISTRY``).
    """
    cls = REGISTRY.get(name)
    return () if cls is None else tuple(f.name for f in fields(cls) if f.name != "name")


def make_strategy(name: str, **options: Any) -> Strategy:
    """The strategy ``name`` with the given hyperparameters (None means the strategy's default).

    Parameters
    ----------
    name
        The strategy's name (a key of ``REGISTRY``).
    **options
        Its hyperparameters, named as the RunConfig fields that set them.
    """
    return REGISTRY[name](**{k: v for k, v in options.items() if v is not None})


__all__ = ["BASELINES", "HYPERPARAMETERS", "REGISTRY", "STRATEGIES", "Strategy", "make_strategy", "options_of"]
