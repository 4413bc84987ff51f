"""Helpers shared by the benchmark scripts: FLamby seeds, repeated and timed runs, mean ± std formatting."""

from __future__ import annotations

import statistics
import time
from typing import Any

import fedkit
from fedkit.presets import FLAMBY_PROTOCOL

SEEDS = tuple(range(42, 47))


def protocol(fields: dict[str, Any]) -> dict[str, Any]:
    """The FLamby protocol with ``fields`` on top (``local_epochs`` replaces the protocol's local steps)."""
    base = {k: v for k, v in FLAMBY_PROTOCOL.items() if not (k == "local_steps" and "local_epochs" in fields)}
    return {**base, **fields}


def finals(fields: dict[str, Any], seeds=SEEDS) -> list[dict]:
    """The ``final`` block of one run of ``fields`` per seed, on its config's own data (one stacked job, no store)."""
    result = fedkit.sweep(fields, None, seeds=list(seeds), trackers=[], progress=False)
    return [r.final for r in result.results]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def describe(fields: dict[str, Any]) -> str:
    """A config as the CLI flags that differ from the FLamby protocol."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in fields.items() if FLAMBY_PROTOCOL.get(k) != v)


def run_seconds(fields: dict[str, Any], federation: Any = None, seed: int = 42) -> float:
    """Seconds of one ``fedkit.run`` of ``fields`` with ``seed`` (no trackers; ``federation``: its silos, preloaded)."""
    start = time.perf_counter()
    fedkit.run(fedkit.RunConfig(**{**fields, "seed": seed}), federation=federation, trackers=[], progress=False)
    return time.perf_counter() - start


def median_run_seconds(fields: dict[str, Any], repeats: int = 11, federation: Any = None) -> float:
    """Median seconds of ``repeats`` runs of ``fields`` (seed 42, no trackers) after one warm-up (imports, caches)."""
    run_seconds(fields, federation)
    return statistics.median(run_seconds(fields, federation) for _ in range(repeats))
