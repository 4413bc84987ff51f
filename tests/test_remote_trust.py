"""Trust and recovery of the remote engine without FLARE: sites answered in-process through the wire encoding.

Under secure aggregation each site checks its own update before masking it and signs its verdict;
the server records the statements in the audit log and sums only the accepted updates. The server
keeps checkpoints and the audit log in its own store, each site its own state per round, and a run
whose server died resumes from them to the uninterrupted run's result. The submitting machine keeps
a verified copy of the audit log and notices a rewritten server log.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from dataclasses import replace

import numpy as np
import pytest
from test_remote_engine import HOSPITALS, SIGNERS, VERIFIER, remote_run, site_workers, transport_for

import fedkit
from fedkit.errors import ConfigError, RemoteRunError
from fedkit.privacy import audit
from fedkit.remote import wire
from fedkit.remote.server import RelayTracker, serve
from fedkit.remote.silo import SiloWorker
from fedkit.remote.submit import _Follower
from fedkit.tracking.local import LocalStore

TOLERANCE = 1e-6


class Poisoned(SiloWorker):
    """A site whose local training sends an update with 100 added to every parameter (a poisoned or broken site)."""

    def _engine(self, before_round=None):
        engine = super()._engine(before_round)
        if not getattr(engine, "poisoned", False):
            fit = engine.fit

            def poisoned(params, server_round, silos, term=None):
                return [replace(r, params=r.params + np.float32(100)) for r in fit(params, server_round, silos, term)]

            engine.fit, engine.poisoned = poisoned, True
        return engine


def config(**fields) -> fedkit.RunConfig:
    return fedkit.RunConfig(**{"engine": "remote", "rounds": 3, **fields})


def rejected(result) -> set[tuple[int, str, str]]:
    return {(r["round"], r["silo"], r["kind"]) for r in result.rejected}


def test_a_site_refuses_to_mask_its_own_oversized_update_as_the_server_refuses_it_in_the_clear() -> None:
    runs = {}
    for secure in (True, False):
        workers = site_workers(va=Poisoned)
        runs[secure], _, _ = remote_run(config(max_update_norm=10.0, secure_aggregation=secure), workers=workers)
    secure, clear = runs[True], runs[False]
    assert rejected(secure) == rejected(clear) == {(r, "va", "norm") for r in (1, 2, 3)}
    np.testing.assert_allclose(secure.params, clear.params, atol=TOLERANCE, rtol=0)
    reasons = [r["reason"] for r in secure.rejected]
    assert all("exceeds max_update_norm=10 (checked on the site, before masking)" in r for r in reasons)
    assert all(re.findall(r"\d+(?:\.\d+)?", r) == ["2", "10"] for r in reasons)  # "L2" and the bound: no norm
    norms = [r["value"] for r in secure.records if r["split"] == "update" and r["metric"] == "norm"]
    assert norms and all(np.isnan(v) for v in norms)
    assert any("the update of silo 'va' was rejected" in note for note in secure.notes)


def test_the_round_audit_record_holds_each_sites_signed_statement(tmp_path) -> None:
    store = LocalStore(tmp_path / "server.sqlite")
    workers = site_workers(va=Poisoned)
    result, _, _ = remote_run(config(max_update_norm=10.0, secure_aggregation=True), workers=workers, store=store)
    log = store.audit_log(result.run_id)
    audit.verify(log, result.run_id, ended=True)
    start = log[0]
    assert set(start["sites"]) == set(HOSPITALS)
    assert start["silos"] == {h: audit.silo_checksums([workers[h]._part])[h] for h in HOSPITALS}  # own rows
    rounds = [r for r in log if r["kind"] == "round" and r["round"] > 0]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    for record in rounds:
        signed = {a["statement"]["silo"]: a for a in record["attestations"]}
        assert set(signed) == set(HOSPITALS)
        assert record["participants"] == ["cleveland", "hungarian", "switzerland"]
        for site, attestation in signed.items():
            said = attestation["statement"]
            assert (said["run_id"], said["round"], said["bound"]) == (result.run_id, record["round"], 10.0)
            assert said["accepted"] is (site != "va")
            certificate = base64.b64decode(start["sites"][site]["certificate"])
            VERIFIER.verify(site, certificate, audit.canonical(said), base64.b64decode(attestation["signature"]))


def test_a_statement_that_does_not_verify_rejects_the_update() -> None:
    workers = site_workers()

    def transport(task, payload, sites, need):
        replies = {s: workers[s].handle(task, payload) for s in sites}
        if task == wire.FIT and payload["round"] == 2:  # va's verdict altered on the way
            replies["va"]["statement"] = {**replies["va"]["statement"], "bound": 1e9}
        return replies

    result, _ = serve(transport, config(secure_aggregation=True), list(HOSPITALS), RelayTracker(), verifier=VERIFIER)
    assert rejected(result) == {(2, "va", "statement")}
    (entry,) = result.rejected
    assert "its signed statement of its own check is not valid: it names bound 1000000000.0" in entry["reason"]
    trained = {(r["round"], r["silo"]) for r in result.records if r["model"] == "local" and r["split"] == "train"}
    assert (2, "va") in trained  # it trained; its update was left out of the sum


def test_a_statement_signed_by_another_site_is_rejected() -> None:
    workers = site_workers()

    def transport(task, payload, sites, need):
        replies = {s: workers[s].handle(task, payload) for s in sites}
        if task == wire.FIT and payload["round"] == 1:  # va's statement signed with cleveland's key
            said = replies["va"]["statement"]
            forged = base64.b64encode(SIGNERS["cleveland"].sign(audit.canonical(said))).decode()
            replies["va"]["signature"] = forged
        return replies

    result, _ = serve(transport, config(secure_aggregation=True), list(HOSPITALS), RelayTracker(), verifier=VERIFIER)
    assert rejected(result) == {(1, "va", "statement")}
    assert "its signature does not verify" in result.rejected[0]["reason"]


class ServerDied(RuntimeError):
    """The server's job died (the test's stand-in for SIGKILL of its process)."""


def dying_transport(workers, task, at_round):
    """Sites answer; the server dies once they have answered ``task`` of round ``at_round`` (their state moved)."""
    return dying_transport_over(transport_for(workers, set()), task, at_round)


def dying_transport_over(transport, task, at_round):
    """``transport``, with the server dying once the sites have answered ``task`` of round ``at_round``."""
    state = {"round": 0}

    def dying(name, payload, sites, need):
        state["round"] = payload.get("round", state["round"])
        replies = transport(name, payload, sites, need)
        done = {(name, state["round"])}
        if name == wire.EVALUATE_FIT:  # in the clear: round r's evaluation with round r + 1's training
            done = {(wire.EVALUATE, state["round"] - 1), (wire.FIT, state["round"])}
        if (task, at_round) in done:
            raise ServerDied(f"server job killed after {task} of round {at_round}")
        return replies

    return dying


CASES = {
    "scaffold-secure": {"strategy": "scaffold", "secure_aggregation": True},
    "fedper-mlp": {"personalize": "fedper", "model": "mlp", "secure_aggregation": False},
    "fedadam-federated-secure": {"strategy": "fedadam", "lr": 0.01, "standardize": "federated"},
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_whose_server_died_resumes_from_its_store_to_the_uninterrupted_result(tmp_path, case) -> None:
    run = config(rounds=4, **CASES[case])
    whole, _, _ = remote_run(run, workers=site_workers(state=tmp_path / "a"), store=LocalStore(tmp_path / "a.sqlite"))
    store = LocalStore(tmp_path / "b.sqlite")
    workers = site_workers(state=tmp_path / "b")
    with pytest.raises(ServerDied):  # after round 3's training: the sites stored round 3, the server only round 2
        serve(dying_transport(workers, wire.FIT, 3), run, list(HOSPITALS), RelayTracker(), store=store)
    (stored,) = store.list_runs()
    assert stored["status"] == "failed"
    assert workers["cleveland"].state.rounds(stored["run_id"]) == [1, 2, 3]  # the last three rounds it trained
    relay = RelayTracker()
    fresh = site_workers(state=tmp_path / "b")  # new job processes: only the sites' own files remain
    resumed, _, _ = remote_run(run, workers=fresh, store=store, resume=stored["run_id"], relay=relay)
    assert resumed.status == "finished" and resumed.run_id == stored["run_id"]
    np.testing.assert_allclose(resumed.params, whole.params, atol=TOLERANCE, rtol=0)
    assert len(resumed.records) == len(whole.records)
    for a, b in zip(resumed.records, whole.records, strict=True):
        assert {k: a[k] for k in a if k != "value"} == {k: b[k] for k in b if k != "value"}
        assert (np.isnan(a["value"]) and np.isnan(b["value"])) or abs(a["value"] - b["value"]) <= TOLERANCE, (a, b)
    assert store.verify_audit(stored["run_id"])[1] == len(store.audit_log(stored["run_id"]))
    kinds = [r["kind"] for r in store.audit_log(stored["run_id"])]
    assert kinds[-3:] == ["round", "round", "end"] and "resume" in kinds
    history = [e for e in relay.since(0) if e["kind"] == "history"]
    assert len(history) == 1 and max(r["round"] for r in history[0]["rows"]) == 2


def test_a_site_that_lost_its_state_cannot_resume_and_says_which(tmp_path) -> None:
    run = config(strategy="scaffold", secure_aggregation=False)
    store = LocalStore(tmp_path / "server.sqlite")
    workers = site_workers(state=tmp_path / "sites")
    with pytest.raises(ServerDied):
        serve(dying_transport(workers, wire.EVALUATE, 2), run, list(HOSPITALS), RelayTracker(), store=store)
    run_id = store.list_runs()[0]["run_id"]
    (tmp_path / "sites" / "va" / "state.sqlite").unlink()
    with pytest.raises(ConfigError, match=rf"Site 'va' cannot resume run {run_id} after round 1: it trained"):
        remote_run(run, workers=site_workers(state=tmp_path / "sites"), store=store, resume=run_id)


def test_a_site_silent_at_the_start_is_named_and_a_resumed_run_keeps_the_silos_it_started_with(tmp_path) -> None:
    """va is connected but does not answer hello: a note names it; when it answers at the resume it stays out."""
    run = config(rounds=4, secure_aggregation=True)
    store = LocalStore(tmp_path / "server.sqlite")
    workers = site_workers(state=tmp_path / "sites")
    silent = transport_for(workers, {"va"})
    with pytest.raises(ServerDied):
        serve(dying_transport_over(silent, wire.FIT, 2), run, list(HOSPITALS), RelayTracker(), store=store)
    run_id = store.list_runs()[0]["run_id"]
    assert sorted(store.audit_log(run_id)[0]["silos"]) == ["cleveland", "hungarian", "switzerland"]
    resumed, engine, _ = remote_run(run, workers=site_workers(state=tmp_path / "sites"), store=store, resume=run_id)
    assert resumed.status == "finished" and list(resumed.final["silos"]) == ["cleveland", "hungarian", "switzerland"]
    assert engine.notes[0] == (
        f"Site 'va' is connected but was not in run {run_id} when it started, so the resumed run goes on without "
        "it; start a new run to include it."
    )
    whole, without_va, relay = remote_run(run, down_at_start={"va"}, relay=RelayTracker())  # never interrupted
    np.testing.assert_allclose(resumed.params, whole.params, atol=TOLERANCE, rtol=0)
    note = without_va.notes[0]
    assert note.startswith("Site 'va' is connected to the server but did not answer the run's first task")
    assert [e["text"] for e in relay.since(0) if e["kind"] == "note"] == [note] and note in whole.notes


def follow(relay: RelayTracker, store: LocalStore, run: fedkit.RunConfig, **options) -> _Follower:
    """The submitting machine's side: the relayed events replayed into ``store``."""
    follower = _Follower(run, [store], [], **options)
    follower.feed(relay.since(0))
    return follower


def test_the_submitting_machine_keeps_a_verified_copy_of_the_servers_audit_log(tmp_path) -> None:
    server = LocalStore(tmp_path / "server.sqlite")
    run = config(secure_aggregation=True, max_update_norm=10.0)
    result, _, relay = remote_run(run, store=server, started_by="alice@hospital (FLARE submitter)")
    here = LocalStore(tmp_path / "here.sqlite")
    follower = follow(relay, here, run, run_id=result.run_id)
    assert follower.finish().run_id == result.run_id
    assert here.audit_log(result.run_id) == server.audit_log(result.run_id)
    head, count = here.verify_audit(result.run_id)
    assert head == server.verify_audit(result.run_id)[0] and count > 5
    assert here.audit_log(result.run_id)[0]["user"] == "alice@hospital (FLARE submitter)"


@pytest.mark.parametrize("tamper", ["edited", "removed"])
def test_a_round_whose_relayed_audit_record_was_tampered_with_is_refused_before_its_rows_are_stored(
    tmp_path, tamper
) -> None:
    """The copy here grows a round at a time, each round's records checked as the continuation of what it holds."""
    run = config(rounds=5, secure_aggregation=False)
    result, _, relay = remote_run(run, store=LocalStore(tmp_path / "server.sqlite"))
    events = relay.since(0)
    target = [e for e in events if e["kind"] == "round" and e["audit"]][3]
    if tamper == "edited":  # content changed in transit, hash kept
        target["audit"][0] = {**target["audit"][0], "participants": ["va"]}
    else:  # the round before's record never arrives
        before = next(e for e in events if e["kind"] == "round" and e["round"] == target["round"] - 1)
        before["audit"] = []
    here = LocalStore(tmp_path / "here.sqlite")
    follower = _Follower(run, [here], [])
    expected = "relayed does not verify: Audit record .* was edited" if tamper == "edited" else "records were removed"
    with pytest.raises(RemoteRunError, match=expected):
        follower.feed(events)
    last = target["round"] - (1 if tamper == "edited" else 2)  # the last round stored whole here
    assert max(r["round"] for r in here.history(result.run_id)) == target["round"] - 1
    assert here.audit_log(result.run_id)[-1]["round"] == last
    here.verify_audit(result.run_id)  # what the copy holds verifies: nothing unchecked was stored


def rewrite(store: LocalStore, run_id: str, seq: int, **fields) -> None:
    """Edit record ``seq`` of the run's log and recompute every hash after it: a log that verifies on its own."""
    records = store.audit_log(run_id)
    records[seq].update(fields)
    head = records[seq - 1]["hash"] if seq else audit.GENESIS
    with sqlite3.connect(store.path) as con:
        for record in records[seq:]:
            record["prev"] = head
            record["hash"] = head = audit.record_hash(record)
            con.execute(
                "UPDATE audit SET record = ? WHERE run_id = ? AND seq = ?",
                (audit.canonical(record).decode(), run_id, record["seq"]),
            )


def test_a_rewritten_server_log_is_noticed_when_the_run_resumes(tmp_path) -> None:
    run = config(strategy="scaffold", secure_aggregation=False)
    server, here = LocalStore(tmp_path / "server.sqlite"), LocalStore(tmp_path / "here.sqlite")
    workers = site_workers(state=tmp_path / "sites")
    relay = RelayTracker()
    with pytest.raises(ServerDied):
        serve(dying_transport(workers, wire.FIT, 3), run, list(HOSPITALS), relay, store=server)
    follower = follow(relay, here, run)
    assert follower.status == "failed" and here.get(follower.run_id)["status"] == "failed"
    rewrite(server, follower.run_id, 0, user="mallory")
    server.verify_audit(follower.run_id)  # the server's log verifies on its own ...
    relay = RelayTracker()
    remote_run(run, workers=site_workers(state=tmp_path / "sites"), store=server, resume=follower.run_id, relay=relay)
    with pytest.raises(RemoteRunError, match=r"audit log of run .* was rewritten: its record 0 \(start\) differs"):
        follow(relay, here, run, run_id=follower.run_id, resumed=True)  # ... but not against the copy here


def test_a_resumed_run_continues_this_machines_record_of_it(tmp_path) -> None:
    run = config(strategy="fedprox", mu=0.01, secure_aggregation=True)
    server, here = LocalStore(tmp_path / "server.sqlite"), LocalStore(tmp_path / "here.sqlite")
    relay = RelayTracker()
    with pytest.raises(ServerDied):
        serve(dying_transport(site_workers(), wire.EVALUATE, 2), run, list(HOSPITALS), relay, store=server)
    run_id = follow(relay, here, run).run_id
    relay = RelayTracker()
    done, _, _ = remote_run(run, store=server, resume=run_id, relay=relay)
    result = follow(relay, here, run, run_id=run_id, resumed=True).finish()
    assert here.get(run_id)["status"] == "finished"
    assert here.audit_log(run_id) == server.audit_log(run_id)
    here.verify_audit(run_id)
    assert {r["round"] for r in here.history(run_id)} == {0, 1, 2, 3}
    np.testing.assert_array_equal(result.params, done.params)
    assert json.dumps(result.summary()["final"]) == json.dumps(done.summary()["final"])


def test_a_site_that_leaves_the_secure_sum_after_its_check_is_no_participant(tmp_path) -> None:
    """va's update passes its own check in round 1, but its masked input is lost: the sum is of the other three."""
    server = LocalStore(tmp_path / "server.sqlite")
    base, seen = transport_for(site_workers(), set()), {"dropped": False}

    def transport(task, payload, sites, need):
        replies = base(task, payload, sites, need)
        if task == wire.FIT and payload["round"] == 1:  # round 1's training sum
            seen["dropped"] = replies["va"].pop("masked", None) is not None
        return replies

    run = config(secure_aggregation=True, rounds=2)
    result, _ = serve(transport, run, list(HOSPITALS), RelayTracker(), store=server, verifier=VERIFIER, min_silos=2)
    assert seen["dropped"]
    (record,) = [r for r in server.audit_log(result.run_id) if r["kind"] == "round" and r["round"] == 1]
    assert {a["statement"]["silo"] for a in record["attestations"] if a["statement"]["accepted"]} == set(HOSPITALS)
    assert record["participants"] == ["cleveland", "hungarian", "switzerland"]  # what the sum holds
    assert "Round 1: silo 'va' answered training without its masked input; the secure sum is of the others." in (
        result.notes
    )
    (second,) = [r for r in server.audit_log(result.run_id) if r["kind"] == "round" and r["round"] == 2]
    assert second["participants"] == list(HOSPITALS)
