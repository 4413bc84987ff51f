"""Named run configurations: the winners of ``benchmarks/search.py`` under the FLamby protocol.

The search scores every candidate on validation rows carved out of each silo's train set
(:func:`fedkit.data.silos.validation_split`, seeds 42-46), never on the test sets; the test
numbers in the README were measured once, after the choice.
"""

from __future__ import annotations

from typing import Any

from fedkit.errors import ConfigError

_FLAMBY = {"split": "flamby", "model": "logreg", "rounds": 15, "local_steps": 100, "batch_size": 4, "optimizer": "sgd"}

PRESETS: dict[str, dict[str, Any]] = {
    # FLamby's FedAvg benchmark configuration
    "flamby-fedavg": {**_FLAMBY, "strategy": "fedavg", "lr": 0.001},
    # best global model by 4-fold CV inside the train sets (benchmarks/search.py)
    "best-global": {**_FLAMBY, "strategy": "scaffold", "lr": 0.003162},
    # best personalized models (each silo's own bias on shared weights), same search
    "best-personalized": {**_FLAMBY, "strategy": "fedavg", "lr": 0.03162, "personalize": "fedper"},
}


def preset(name: str) -> dict[str, Any]:
    """The RunConfig fields of preset ``name`` (a copy)."""
    if name not in PRESETS:
        raise ConfigError(f"No preset {name!r}; the presets are: {', '.join(PRESETS)}.")
    return dict(PRESETS[name])
