"""Divergence is a clear event: a seeded sweep of valid configurations, extremes included, never ends in an uncaught
exception, a RuntimeWarning or a number computed from non-finite scores."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import fields
from typing import Any

import numpy as np
import pytest

import fedkit
from fedkit import RunConfig
from fedkit.config import PERSONALIZE
from fedkit.data.silos import SYNTHETIC
from fedkit.errors import ConfigError, RoundFailedError
from fedkit.strategies import STRATEGIES
from fedkit.training import OPTIMIZERS

N_CONFIGS = 60
SEED = 20240607
BUDGET_S = 60


def random_config(rng: np.random.Generator) -> dict[str, Any]:
    """RunConfig fields, each of a valid type and range, drawn towards the extremes (lr up to 1e3, batch 1 or
    larger than any silo, fraction 0.1, 60 silos, every strategy and personalization)."""
    split = str(rng.choice(["flamby", "hospitals", *SYNTHETIC]))
    fields_: dict[str, Any] = {
        "split": split,
        "strategy": str(rng.choice(STRATEGIES)),
        "personalize": str(rng.choice(PERSONALIZE)),
        "model": str(rng.choice(["logreg", "mlp"])),
        "optimizer": str(rng.choice(OPTIMIZERS)),
        "lr": float(10 ** rng.uniform(-4, 3)),
        "batch_size": int(rng.choice([1, 2, 4, 64, 1000])),
        "fraction": float(rng.choice([0.1, 0.5, 1.0])),
        "rounds": int(rng.integers(1, 4)),
        "local_steps": int(rng.integers(1, 9)),
        "seed": int(rng.integers(0, 1000)),
    }
    if split in SYNTHETIC:
        fields_["silos"] = int(rng.choice([2, 4, 12, 60]))
    if rng.random() < 0.2 and fields_.get("silos", 4) <= 4:  # the per-silo torch path: a few silos, or it is slow
        fields_["backend"] = "torch"
    if rng.random() < 0.3:
        fields_["max_update_norm"] = float(10 ** rng.uniform(-3, 3))
    if rng.random() < 0.2:
        fields_["min_silos"] = int(rng.integers(1, 4))
    if rng.random() < 0.2:
        fields_["dropout"] = float(rng.choice([0.1, 0.5, 0.9]))
    if fields_["strategy"] == "krum" and rng.random() < 0.5:
        fields_["byzantine"] = int(rng.integers(0, 3))
    return fields_


def names_a_field(message: str, given: dict[str, Any]) -> bool:
    """Whether a refusal names one of the RunConfig fields (as 'name' or name=)."""
    names = {f.name for f in fields(RunConfig)}
    return any(re.search(rf"'{n}'|\b{n}=", message) for n in names)


def check_summary(summary: dict[str, Any], result: Any) -> None:
    """Valid JSON without NaN; a silo whose update was non-finite has no number for its local model's scores."""
    text = json.dumps(summary, allow_nan=False)  # raises on NaN or infinity anywhere
    assert json.loads(text)["status"] == summary["status"]
    diverged = {(r["round"], r["silo"]) for r in result.rejected if r["kind"] == "nonfinite"}
    for row in summary["history"]:
        if row["model"] == "local" and row["split"] == "test" and (row["round"], row["silo"]) in diverged:
            assert row["value"] is None, row  # scores from NaN/inf parameters are not a number
        if row["value"] is not None:
            assert math.isfinite(row["value"])


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_seeded_sweep_refuses_finishes_finite_or_reports_divergence(data_dir) -> None:
    rng = np.random.default_rng(SEED)
    outcomes = {"refused": 0, "finished": 0, "diverged": 0}
    start = time.monotonic()
    for _ in range(N_CONFIGS):
        given = random_config(rng)
        try:
            config = RunConfig(**given)
        except ConfigError as exc:
            assert names_a_field(str(exc), given), (given, str(exc))
            outcomes["refused"] += 1
            continue
        try:
            result = fedkit.run(config, progress=False)
        except RoundFailedError as exc:
            message = str(exc)
            assert re.match(r"Round \d+: ", message) and exc.run_id, (given, message)
            assert exc.silos or "aggregated global model" in message, (given, message)
            assert re.search(r"\b(lower|raise|relax)\b", message, re.IGNORECASE), message  # cause and fix
            assert fedkit.load_run(exc.run_id)["status"] == "failed"
            outcomes["diverged"] += 1
            continue
        assert np.isfinite(result.params).all(), given
        check_summary(result.summary(), result)
        outcomes["finished"] += 1
    elapsed = time.monotonic() - start
    print(f"sweep of {N_CONFIGS}: {outcomes} in {elapsed:.1f} s")
    assert all(outcomes.values()), outcomes  # the sweep reaches all three outcomes
    assert elapsed < BUDGET_S


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_lr_1000_mlp_reports_the_divergence_instead_of_nan_numbers(data_dir, capsys) -> None:
    """The run of the issue: SGD lr 1000, MLP, 2 rounds — every silo but one diverges and is named with the fix."""
    from fedkit.cli import main

    code = main(["run", "--model", "mlp", "--lr", "1000", "--rounds", "2", "--min-silos", "2", "--json", "-q"])
    out = capsys.readouterr()
    payload = json.loads(out.out)  # still valid JSON
    assert code == 2 and payload["status"] == "failed"
    assert payload["error"].startswith("Round 1: only 1 of 4 updates passed validation")
    assert "'cleveland', 'hungarian', 'va'" in payload["error"] and "lower lr (e.g. lr=100)" in payload["error"]
    assert fedkit.load_run(payload["run_id"])["status"] == "failed"
    result = fedkit.run(RunConfig(model="mlp", lr=1000.0, rounds=2), progress=False)  # min_silos=1: one silo left
    assert np.isfinite(result.params).all() and {r["silo"] for r in result.rejected} == {"cleveland", "hungarian", "va"}
    check_summary(result.summary(), result)
