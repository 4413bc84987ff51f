"""fedkit: a Jupyter-first kit for cross-silo federated learning on the UCI Heart Disease hospitals.

Public API (imported lazily, so ``import fedkit`` is fast and needs no optional extras)::

    fedkit.load_silos(split, ...)   # -> Federation
    fedkit.RunConfig(...)           # validated run configuration
    fedkit.run(config)              # -> RunResult
    fedkit.runs()                   # -> DataFrame of recorded runs
    fedkit.sweep(base, grid, seeds) # -> SweepResult: a grid × seeds as one stacked job
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from fedkit._version import __version__

_EXPORTS = {
    "RunConfig": "fedkit.config",
    "load_silos": "fedkit.data.silos",
    "Federation": "fedkit.data.silos",
    "run": "fedkit.api",
    "RunResult": "fedkit.result",
    "runs": "fedkit.api",
    "sweep": "fedkit.sweeps",
    "SweepResult": "fedkit.sweeps",
    "load_run": "fedkit.api",
    "compare": "fedkit.comparison",
    "make_trackers": "fedkit.tracking.factory",
    "sync": "fedkit.tracking.delivery",
    "FedkitError": "fedkit.errors",
    "ConfigError": "fedkit.errors",
    "DataError": "fedkit.errors",
}

__all__ = [
    "ConfigError",
    "DataError",
    "Federation",
    "FedkitError",
    "RunConfig",
    "RunResult",
    "SweepResult",
    "__version__",
    "compare",
    "load_run",
    "load_silos",
    "make_trackers",
    "run",
    "runs",
    "sweep",
    "sync",
]

if TYPE_CHECKING:
    from fedkit.api import load_run, run, runs
    from fedkit.comparison import compare
    from fedkit.config import RunConfig
    from fedkit.data.silos import Federation, load_silos
    from fedkit.errors import ConfigError, DataError, FedkitError
    from fedkit.result import RunResult
    from fedkit.sweeps import SweepResult, sweep
    from fedkit.tracking.delivery import sync
    from fedkit.tracking.factory import make_trackers


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fedkit' has no attribute {name!r}")
