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


# -- robustness: concurrent writers and a process killed in the middle of a write -----------------------------------

CONCURRENT = """
import fedkit
fedkit.run(fedkit.RunConfig(rounds=12, local_steps=2, seed={seed}), progress=False)
"""

WRITER = """
import sys
import numpy as np
from fedkit.privacy.audit import Chain
from fedkit.tracking.checkpoint import Checkpoint, encode
from fedkit.tracking.local import LocalStore

store, run_id = LocalStore(), sys.argv[1]
store.start_run(run_id, {{}}, {{"directory": "-", "sha256": {{}}, "verified": True}})
chain = Chain(run_id)
for r in range(100_000):
    rows = [
        {{"round": r, "silo": f"s{{i}}", "model": "global", "split": "test", "metric": "m", "value": float(i)}}
        for i in range({rows})
    ]
    blob = encode(Checkpoint(r, np.full(200_000, r, np.float32), {{}}, {{}}))
    store.save_round(run_id, r, rows, checkpoint=blob, audit=[chain.append("round", {{"round": r}})])
    print(r, flush=True)
"""


def _integrity(db) -> str:
    with sqlite3.connect(db) as con:
        return con.execute("PRAGMA integrity_check").fetchone()[0]


def test_four_concurrent_runs_share_one_store(data_dir, fedkit_home) -> None:
    import subprocess
    import sys

    children = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT.format(seed=s)], stderr=subprocess.PIPE, text=True)
        for s in range(4)
    ]
    errors = [child.communicate(timeout=300)[1] for child in children]
    assert [child.returncode for child in children] == [0] * 4, errors
    assert _integrity(fedkit_home / "runs.sqlite") == "ok"
    runs = LocalStore().list_runs()
    assert sorted(r["seed"] for r in runs) == [0, 1, 2, 3] and {r["status"] for r in runs} == {"finished"}
    for r in runs:
        rounds = {row["round"] for row in LocalStore().history(r["run_id"])}
        assert rounds == set(range(13))
        assert LocalStore().verify_audit(r["run_id"])[1] == 15  # start, rounds 0-12, end


@pytest.mark.parametrize("delay", [0.0, 0.013, 0.037, 0.071, 0.15])
def test_a_sigkill_during_a_write_leaves_every_finished_round_readable(fedkit_home, delay: float) -> None:
    import signal
    import subprocess
    import sys
    import time

    from fedkit.tracking.checkpoint import decode

    rows_per_round = 300
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(rows=rows_per_round), "killed-writer"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(3):  # a few rounds are written, then it is killed at some point of the next writes
        assert child.stdout.readline(), child.stderr.read()
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert _integrity(fedkit_home / "runs.sqlite") == "ok"
    store = LocalStore()
    assert store.get("killed-writer")["status"] == "interrupted"
    history = store.history("killed-writer")
    per_round: dict[int, int] = {}
    for row in history:
        per_round[row["round"]] = per_round.get(row["round"], 0) + 1
    last = max(per_round)
    assert per_round == dict.fromkeys(range(last + 1), rows_per_round)  # whole rounds only, none missing
    saved = decode(store.checkpoint("killed-writer"))
    assert saved.server_round == last and (saved.params == last).all()  # written with the round's metrics
    assert [r["round"] for r in store.audit_log("killed-writer")] == list(range(last + 1))
    store.verify_audit("killed-writer")
