"""The audit log: what a run records, and `fedkit audit verify` finding every kind of tampering in the store."""

from __future__ import annotations

import getpass
import itertools
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import fedkit
from fedkit import RunConfig
from fedkit.cli import main
from fedkit.errors import AuditError
from fedkit.privacy.audit import GENESIS, Chain, array_digest, canonical, digest, record_hash, verify
from fedkit.tracking.local import LocalStore

CONFIG = RunConfig(rounds=3, local_steps=5, max_norm_ratio=4.0)


@pytest.fixture
def recorded(data_dir, fedkit_home: Path) -> tuple[str, Path]:
    """A finished run's id and the store file."""
    return fedkit.run(CONFIG, progress=False).run_id, fedkit_home / "runs.sqlite"


def _sql(db: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(db) as con:
        con.execute(statement, args)


def _verify(run_id: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["audit", "verify", run_id])
    out = capsys.readouterr()
    return code, out.out + out.err


# -- what a run records ------------------------------------------------------------------------------------------------


def test_a_run_records_who_versions_config_data_rounds_and_end(recorded) -> None:
    run_id, _ = recorded
    records = LocalStore().audit_log(run_id)
    assert [r["kind"] for r in records] == ["start", "round", "round", "round", "round", "end"]
    start = records[0]
    assert start["user"] == getpass.getuser() and start["versions"]["fedkit"] == fedkit.__version__
    assert start["config"] == CONFIG.to_dict() and start["config_sha256"] == digest(CONFIG.to_dict())
    assert start["data"]["sha256"] == fedkit.load_run(run_id)["data"]["sha256"]
    assert set(start["silos"]) == {"cleveland", "hungarian", "switzerland", "va"}
    assert start["dp"] is None  # the DP hook: filled when differential privacy is on
    last_round = records[4]
    assert last_round["round"] == 3 and last_round["participants"] == ["cleveland", "hungarian", "switzerland", "va"]
    rows = fedkit.load_run(run_id)["summary"]["history"]
    norms = {(r["silo"], r["round"]): r["value"] for r in rows if r["split"] == "update" and r["metric"] == "norm"}
    assert all(u["norm"] == norms[(u["silo"], 3)] and u["accepted"] for u in last_round["updates"])
    assert records[-1]["status"] == "finished" and records[-1]["params_sha256"] == array_digest(
        fedkit.load_run(run_id)["params"]
    )
    assert [r["seq"] for r in records] == list(range(6)) and records[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))


def test_records_hash_their_canonical_json(recorded) -> None:
    run_id, db = recorded
    with sqlite3.connect(db) as con:
        texts = [t for (t,) in con.execute("SELECT record FROM audit WHERE run_id = ? ORDER BY seq", (run_id,))]
    import hashlib

    for text in texts:
        record = json.loads(text)
        body = canonical({k: v for k, v in record.items() if k != "hash"})
        assert hashlib.sha256(body).hexdigest() == record["hash"] == record_hash(record)
        assert text.encode() == canonical(record)  # stored as the canonical encoding itself


# -- tampering ---------------------------------------------------------------------------------------------------------


def test_an_untouched_log_verifies(recorded, capsys) -> None:
    code, out = _verify(recorded[0], capsys)
    head = LocalStore().audit_log(recorded[0])[-1]["hash"]
    assert code == 0 and f"6 record(s), head hash {head}" in out


def test_an_edited_record_is_named(recorded, capsys) -> None:
    run_id, db = recorded
    record = LocalStore().audit_log(run_id)[3]
    record["updates"][0]["norm"] *= 0.5  # make an update look smaller than it was
    _sql(db, "UPDATE audit SET record = ? WHERE run_id = ? AND seq = 3", json.dumps(record), run_id)
    code, out = _verify(run_id, capsys)
    assert code == 1 and f"Audit record 3 of run {run_id} was edited" in out


def test_a_removed_record_is_named(recorded, capsys) -> None:
    run_id, db = recorded
    _sql(db, "DELETE FROM audit WHERE run_id = ? AND seq = 2", run_id)
    code, out = _verify(run_id, capsys)
    assert code == 1 and "Audit record 2 of run" in out and "is missing (removed): record 3 follows record 1" in out


def test_reordered_records_are_named(recorded, capsys) -> None:
    run_id, db = recorded
    with sqlite3.connect(db) as con:  # swap records 2 and 3
        con.execute("UPDATE audit SET seq = -1 WHERE run_id = ? AND seq = 2", (run_id,))
        con.execute("UPDATE audit SET seq = 2 WHERE run_id = ? AND seq = 3", (run_id,))
        con.execute("UPDATE audit SET seq = 3 WHERE run_id = ? AND seq = -1", (run_id,))
    code, out = _verify(run_id, capsys)
    assert code == 1 and "Audit record 2 of run" in out and "out of order (reordered): it holds record 3" in out


def test_a_record_appended_out_of_chain_is_named(recorded, capsys) -> None:
    run_id, db = recorded
    forged = Chain(run_id, seq=6, head="f" * 64).append("round", {"round": 4, "updates": []})  # a valid hash of its own
    _sql(db, "INSERT INTO audit VALUES (?, ?, ?)", run_id, 6, canonical(forged).decode())
    code, out = _verify(run_id, capsys)
    assert code == 1 and "Audit record 6 of run" in out and "does not continue the chain" in out


def test_a_record_appended_in_chain_after_the_end_is_named(recorded, capsys) -> None:
    run_id, db = recorded
    forged = Chain.after(LocalStore().audit_log(run_id), run_id).append("round", {"round": 4, "updates": []})
    _sql(db, "INSERT INTO audit VALUES (?, ?, ?)", run_id, 6, canonical(forged).decode())
    code, out = _verify(run_id, capsys)
    assert code == 1 and "Audit record 6 of run" in out and "after the run's end record without a resume" in out


def test_records_removed_from_the_end_are_found(recorded, capsys) -> None:
    run_id, db = recorded
    _sql(db, "DELETE FROM audit WHERE run_id = ? AND seq = 5", run_id)
    code, out = _verify(run_id, capsys)
    assert code == 1 and "ends at record 4 without an end record" in out


def test_a_record_of_another_run_is_named(data_dir, recorded, capsys) -> None:
    run_id, db = recorded
    other = fedkit.run(RunConfig(rounds=1, local_steps=2), progress=False).run_id
    copied = LocalStore().audit_log(other)[1]
    _sql(db, "UPDATE audit SET record = ? WHERE run_id = ? AND seq = 1", canonical(copied).decode(), run_id)
    code, out = _verify(run_id, capsys)
    assert code == 1 and f"belongs to run {other!r}" in out


def test_the_chain_logic_alone() -> None:
    chain = Chain("r1")
    log = [chain.append("start", {"x": 1}), chain.append("round", {"norm": 0.5}), chain.append("end", {})]
    assert verify(log, "r1", ended=True) == log[-1]["hash"] == chain.head
    resumed = Chain.after(log, "r1")
    assert (resumed.seq, resumed.head) == (3, log[-1]["hash"])
    with pytest.raises(AuditError, match="record 1 of run r1 was edited"):
        verify([log[0], {**log[1], "norm": 0.4}, log[2]], "r1")
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        Chain("r1").append("round", {"norm": float("nan")})  # NaN never enters a record: norms are null or numbers


def test_a_log_checked_a_part_at_a_time_finds_what_checking_it_whole_finds() -> None:
    """verify(tail, after=record) on every split of a seeded random log, clean and with one record tampered: the
    same head, or an error naming the same record as verify(whole)."""
    rng = np.random.default_rng(7)
    for trial in range(40):
        chain = Chain("r1")
        log = [chain.append("start", {})]
        log += [chain.append("round", {"norm": float(rng.random())}) for _ in range(int(rng.integers(1, 8)))]
        log.append(chain.append("end", {}))
        if trial % 2:  # tamper with one record: edit it, or put another run's, or drop one
            i = int(rng.integers(1, len(log)))
            log = [
                *log[:i],
                *[[{**log[i], "norm": -1.0}], [{**log[i], "run_id": "r2"}], []][int(rng.integers(3))],
                *log[i + 1 :],
            ]
        try:
            whole: str | None = verify(log, "r1", ended=True)
        except AuditError as exc:
            whole = str(exc)
        for k in range(1, len(log)):
            if whole is not None and whole.startswith("Audit record") and int(whole.split()[2]) < k:
                continue  # the bad record is in the part checked before
            try:
                part = verify(log[:k], "r1") and verify(log[k:], "r1", ended=True, after=log[k - 1])
            except AuditError as exc:
                part = str(exc)
            assert part == whole, (trial, k)


def test_audit_show_prints_every_record(recorded, capsys) -> None:
    assert main(["audit", "show", recorded[0]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and "start" in lines[0] and "round 3" in lines[4] and "finished after round 3" in lines[5]
    assert main(["audit", "show", recorded[0], "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == LocalStore().audit_log(recorded[0])


def test_the_global_parameters_hash_changes_with_any_bit() -> None:
    params = np.linspace(-1, 1, 14, dtype=np.float32)
    flipped = params.copy()
    flipped.view(np.uint32)[3] ^= 1
    assert array_digest(params) != array_digest(flipped) and array_digest(params) == array_digest(params.copy())
