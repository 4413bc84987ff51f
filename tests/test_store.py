"""The local run store: recorded runs, failed and stopped runs, interrupted processes."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

import fedkit
from fedkit import RunConfig, run
from fedkit.data import load_silos
from fedkit.engines.simulation import make_engine
from fedkit.tracking.local import LocalStore

FAST = RunConfig(rounds=3, local_steps=5)


def test_a_run_is_recorded_with_config_metrics_model_version_and_checksums(data_dir) -> None:
    result = run(FAST, progress=False)
    stored = fedkit.load_run(result.run_id)
    assert stored["status"] == "finished" and stored["finished_at"]
    assert stored["config"] == FAST.to_dict() and stored["fedkit_version"] == fedkit.__version__
    assert stored["data"]["verified"] is True and len(stored["data"]["sha256"]) == 4
    assert np.array_equal(stored["params"], result.params)
    history = LocalStore().history(result.run_id)
    assert len(history) == len(result.records)
    assert fedkit.runs().run_id.tolist() == [result.run_id]


def test_a_crash_marks_the_run_failed_with_whole_rounds_only(data_dir) -> None:
    fed = load_silos()
    engine = make_engine(fed, FAST)
    fit = engine.fit

    def exploding(params, server_round, silos, term=None):
        if server_round == 2:
            raise RuntimeError("silo went away")
        return fit(params, server_round, silos, term)

    engine.fit = exploding  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="silo went away"):
        run(FAST, federation=fed, engine=engine, progress=False)
    (row,) = LocalStore().list_runs()
    stored = fedkit.load_run(row["run_id"])
    assert stored["status"] == "failed" and "silo went away" in stored["error"]
    rounds = {r["round"] for r in LocalStore().history(row["run_id"])}
    assert rounds == {0, 1}


def test_should_stop_ends_cleanly_after_the_current_round(data_dir) -> None:
    calls = []
    result = run(FAST, progress=False, should_stop=lambda: calls.append(1) or len(calls) >= 1)
    assert result.status == "stopped" and result.summary()["final"]["round"] == 1
    assert fedkit.load_run(result.run_id)["status"] == "stopped"


def test_a_run_whose_process_died_reads_as_interrupted(data_dir, fedkit_home) -> None:
    result = run(RunConfig(rounds=1, local_steps=2), progress=False)
    with sqlite3.connect(fedkit_home / "runs.sqlite") as con:
        con.execute("UPDATE runs SET status = 'running', pid = 2147483646 WHERE run_id = ?", (result.run_id,))
    assert fedkit.load_run(result.run_id)["status"] == "interrupted"
