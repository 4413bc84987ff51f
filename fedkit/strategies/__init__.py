"""Aggregation strategies, one module each, registered by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedkit.strategies.base import Strategy
from fedkit.strategies.fedavg import FedAvg

REGISTRY: dict[str, Callable[..., Strategy]] = {"fedavg": FedAvg}
STRATEGIES: tuple[str, ...] = tuple(REGISTRY)


def make_strategy(name: str, **options: Any) -> Strategy:
    """The strategy registered as ``name`` with its options (validated by RunConfig)."""
    return REGISTRY[name](**options)


__all__ = ["REGISTRY", "STRATEGIES", "Strategy", "make_strategy"]
