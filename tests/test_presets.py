"""Presets: selectable from the CLI, and the search winners beat FLamby's references on the test sets."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

import fedkit
from fedkit import RunConfig, run
from fedkit.cli import main
from fedkit.data import load_silos
from fedkit.data.silos import validation_split
from fedkit.errors import ConfigError
from fedkit.presets import PRESETS, preset

SEEDS = range(42, 47)


def _avg4(fields: dict) -> float:
    """Mean test Avg4 over seeds 42-46, each run on its config's own data (a preset may standardize otherwise)."""
    runs = [run(RunConfig(**{**fields, "seed": s}), trackers=[], progress=False) for s in SEEDS]
    return float(np.mean([r.final["avg_accuracy"] for r in runs]))


def test_cli_preset_is_overridden_by_flags() -> None:
    with mock.patch.object(fedkit, "run", side_effect=SystemExit(0)) as call, pytest.raises(SystemExit):
        main(["run", "--preset", "best-personalized", "--rounds", "3"])
    assert call.call_args.args[0] == RunConfig(**{**PRESETS["best-personalized"], "rounds": 3})
    with pytest.raises(ConfigError, match="No preset 'best'; the presets are: flamby-fedavg, best-global"):
        preset("best")


def test_search_winners_beat_flamby_pooled_and_the_local_baseline(data_dir) -> None:
    best_global = _avg4(PRESETS["best-global"])
    best_personal = _avg4(PRESETS["best-personalized"])
    local = _avg4({"strategy": "local", "optimizer": "adam", "lr": 0.001, "local_epochs": 50, "rounds": 1})
    assert best_global >= 0.79  # issue 14's target for the global model
    assert best_personal >= 0.80 and best_personal > max(0.7353, local)


def test_validation_folds_come_only_from_train_rows(data_dir) -> None:
    fed = load_silos("flamby")
    folds = [validation_split(fed, seed=42, fold=f) for f in range(4)]
    for i, silo in enumerate(fed.silos):
        val = np.concatenate([f.silos[i].x_test for f in folds])
        assert len(val) == silo.n_train  # the 4 validation folds partition the train rows
        assert {r.tobytes() for r in val} == {r.tobytes() for r in silo.x_train}
        assert not {r.tobytes() for r in val} & {r.tobytes() for r in silo.x_test} - {r.tobytes() for r in silo.x_train}
    with pytest.raises(ConfigError, match="'fold' parameter of validation_split must be in \\[0, 4\\)"):
        validation_split(fed, seed=1, fold=4)


def test_validation_folds_take_every_valid_seed_and_differ_between_silos(data_dir) -> None:
    fed = load_silos("flamby")
    largest = validation_split(fed, seed=2**32 - 1)  # seed * 1000 + silo would exceed sklearn's 2**32 - 1
    assert [s.n_test for s in largest.silos] == [s.n_test for s in validation_split(fed, seed=0).silos]
    again = validation_split(fed, seed=2**32 - 1)
    assert all(np.array_equal(a.x_test, b.x_test) for a, b in zip(largest.silos, again.silos, strict=True))
    other = validation_split(fed, seed=7)
    assert not all(np.array_equal(a.y_test, b.y_test) for a, b in zip(largest.silos, other.silos, strict=True))


def test_baseline_drops_the_strategy_and_its_hyperparameters() -> None:
    from fedkit.presets import baseline_fields

    fields = {"strategy": "fedprox", "mu": 0.01, "rounds": 3, "lr": 0.01}
    assert baseline_fields(fields) == {"strategy": "fedavg", "rounds": 3, "lr": 0.01}
