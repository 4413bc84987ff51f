"""Outbox delivery counts: `fedkit runs sync RUN_ID` sends that run's events only, and every count is exact."""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable
from datetime import datetime

import pytest

import fedkit
from fedkit import RunConfig
from fedkit.cli import main
from fedkit.tracking import DeliveryWarning, LocalStore, RemoteTracker, TrackerError, sync
from fedkit.tracking import delivery as delivery_module

ROUNDS = 2
EVENTS = ROUNDS + 3  # start, round 0 (the initial model) .. round ROUNDS, end
FAST = RunConfig(split="iid", silos=2, rounds=ROUNDS, local_steps=1)


class Inbox:
    """A remote that records every event it accepts and can be told to fail from its n-th call on."""

    name = "mlflow"

    def __init__(self, fail_from: int | None = None) -> None:
        self.fail_from = fail_from
        self.calls = 0
        self.received: list = []

    def target(self) -> dict:
        return {"experiment": "x", "tracking_uri": "memory://"}

    def deliver(self, event) -> None:
        self.calls += 1
        if self.fail_from is not None and self.calls >= self.fail_from:
            raise ConnectionError("connection refused")
        self.received.append(event)


class FailsOnce(Inbox):
    """A remote down for its first call only."""

    def deliver(self, event) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("connection refused")
        self.received.append(event)


def _run_with_backend_down(store: LocalStore) -> str:
    with pytest.warns(DeliveryWarning):
        result = fedkit.run(FAST, trackers=[store, RemoteTracker(Inbox(fail_from=1), store)], progress=False)
    return result.run_id


def test_runs_sync_of_one_run_delivers_only_its_events_and_leaves_the_other_run_pending(
    data_dir, monkeypatch, capsys
) -> None:
    store = LocalStore()
    first, second = _run_with_backend_down(store), _run_with_backend_down(store)
    assert len(store.pending(first)) == len(store.pending(second)) == EVENTS
    inbox, rebuilt = Inbox(), []

    def rebuild(name: str, target: dict) -> Inbox:  # what `fedkit runs sync` does from the recorded target
        rebuilt.append((name, target))
        return inbox

    monkeypatch.setattr(delivery_module, "backend_from_target", rebuild)
    assert main(["runs", "sync", first, "-q"]) == 0
    assert rebuilt == [("mlflow", Inbox().target())]
    assert f"run {first} · mlflow: {EVENTS} event(s) delivered, 0 pending" in capsys.readouterr().out
    assert {e.run_id for e in inbox.received} == {first}
    assert [e.seq for e in inbox.received] == [0, *range(1, ROUNDS + 2), delivery_module.END_SEQ]
    assert store.pending(first) == []
    assert [e["seq"] for e in store.pending(second)] == [0, *range(1, ROUNDS + 2), delivery_module.END_SEQ]
    assert store.delivery(first)["mlflow"]["delivered"] == EVENTS
    assert store.delivery(second)["mlflow"] | {"target": None} == {
        "delivered": 0, "pending": EVENTS, "last_error": "ConnectionError: connection refused", "target": None,
    }  # fmt: skip
    assert main(["runs", "sync", "-q"]) == 0  # now the other run, and only it
    assert [e.run_id for e in inbox.received].count(second) == EVENTS
    assert len(inbox.received) == 2 * EVENTS


def test_sync_stops_at_the_first_failure_and_reports_exact_counts(data_dir) -> None:
    store = LocalStore()
    run_id = _run_with_backend_down(store)
    flaky = Inbox(fail_from=3)  # two events arrive, the third fails
    report = sync(run_id, store=store, backends={"mlflow": flaky}, progress=False)
    assert report == [{"run_id": run_id, "backend": "mlflow", "delivered": 2, "pending": EVENTS - 2,
                       "error": "ConnectionError: connection refused"}]  # fmt: skip
    assert flaky.calls == 3
    assert store.delivery(run_id)["mlflow"]["delivered"] == 2
    flaky.fail_from = None
    report = sync(run_id, store=store, backends={"mlflow": flaky}, progress=False)
    assert report[0]["delivered"] == EVENTS - 2 and report[0]["pending"] == 0 and report[0]["error"] is None
    assert [e.seq for e in flaky.received] == [0, *range(1, ROUNDS + 2), delivery_module.END_SEQ]
    # the event whose one attempt failed may have arrived: it is re-sent marked in doubt, the next ones are not
    assert [e.in_doubt for e in flaky.received[2:]] == [True] + [False] * (EVENTS - 3)


def test_each_backend_gets_only_its_own_events(data_dir) -> None:
    class Other(Inbox):
        name = "sagemaker"

    store = LocalStore()
    trackers = [store, RemoteTracker(Inbox(fail_from=1), store), RemoteTracker(Other(fail_from=1), store)]
    with pytest.warns(DeliveryWarning):
        run_id = fedkit.run(FAST, trackers=trackers, progress=False).run_id
    mlflow, sagemaker = Inbox(), Other()
    report = sync(run_id, store=store, backends={"mlflow": mlflow, "sagemaker": sagemaker}, progress=False)
    assert sorted((r["backend"], r["delivered"], r["pending"]) for r in report) == [
        ("mlflow", EVENTS, 0),
        ("sagemaker", EVENTS, 0),
    ]
    assert len(mlflow.received) == len(sagemaker.received) == EVENTS


def test_deliver_pending_tells_the_caller_each_delivered_event(data_dir) -> None:
    store = LocalStore()
    run_id = _run_with_backend_down(store)
    told: list = []
    inbox = Inbox()
    delivered, error = delivery_module.deliver_pending(store, inbox, run_id, on_delivered=told.append)
    assert (delivered, error) == (EVENTS, None)
    assert told == inbox.received and len(told) == EVENTS


def test_a_long_backend_error_is_kept_to_2000_characters(data_dir) -> None:
    class Verbose(Inbox):
        def deliver(self, event) -> None:
            raise ConnectionError("x" * 5000)

    store = LocalStore()
    run_id = _run_with_backend_down(store)
    sync(run_id, store=store, backends={"mlflow": Verbose()}, progress=False)
    assert len(store.pending(run_id)[0]["last_error"]) == 2000


def test_sync_shows_a_progress_bar_of_the_events_it_sends_by_default(data_dir, capsys) -> None:
    store = LocalStore()
    run_id = _run_with_backend_down(store)
    capsys.readouterr()
    sync(run_id, store=store, backends={"mlflow": Inbox()})
    bar = capsys.readouterr().err.strip().splitlines()[-1].split("\r")[-1]
    assert bar.startswith("sync: 100%") and f" {EVENTS}/{EVENTS} " in bar
    assert re.search(r"[\d?](event/s|s/event)\]$", bar), bar  # the rate counts events


def test_a_re_sent_event_is_marked_in_doubt_and_a_first_send_is_not(data_dir) -> None:
    store = LocalStore()
    run_id = _run_with_backend_down(store)  # only the start event was tried (twice: first, and at the end)
    inbox = Inbox()
    sync(run_id, store=store, backends={"mlflow": inbox}, progress=False)
    assert [(e.kind, e.in_doubt) for e in inbox.received] == [("start", True)] + [("round", False)] * (ROUNDS + 1) + [
        ("end", False)
    ]


def test_events_carry_their_rows_and_a_timestamp_from_when_they_were_queued(data_dir) -> None:
    store = LocalStore()
    before = datetime.now().timestamp() * 1000
    run_id = _run_with_backend_down(store)
    after = datetime.now().timestamp() * 1000
    inbox = Inbox()
    sync(run_id, store=store, backends={"mlflow": inbox}, progress=False)
    history = store.history(run_id)
    for event in inbox.received:
        assert before - 1 <= event.timestamp_ms <= after + 1
        assert event.run["run_id"] == run_id
        if event.kind == "round":
            assert event.rows and all(r["round"] == event.round for r in event.rows)
            assert len(event.rows) == sum(r["round"] == event.round for r in history)
        else:
            assert event.rows == [] and event.round is None
    assert sum(len(e.rows) for e in inbox.received) == len(history)


def test_a_recorded_target_rebuilds_its_backend(monkeypatch) -> None:
    pytest.importorskip("mlflow")
    pytest.importorskip("boto3")
    from fedkit.tracking.mlflow import ENV_DEFAULTS

    for key in ENV_DEFAULTS:  # the mlflow backend sets these defaults; undo them after the test
        monkeypatch.delenv(key, raising=False)
    mlflow_target = {"experiment": "heart", "tracking_uri": "http://127.0.0.1:9"}
    sagemaker_target = {"experiment": "heart", "region": "eu-west-1"}
    assert delivery_module.backend_from_target("mlflow", mlflow_target).target() == mlflow_target
    assert delivery_module.backend_from_target("sagemaker", sagemaker_target).target() == sagemaker_target
    with pytest.raises(TrackerError, match=r"Unknown tracker backend 'wandb'; this fedkit knows .*sagemaker.*mlflow"):
        delivery_module.backend_from_target("wandb", {})


def test_a_backend_that_fails_once_warns_once_at_the_users_call_and_catches_up_at_the_end(data_dir) -> None:
    store, backend = LocalStore(), FailsOnce()
    with pytest.warns(DeliveryWarning) as warned:
        result = fedkit.run(FAST, trackers=[store, RemoteTracker(backend, store)], progress=False)
    assert len(warned) == 1
    assert warned[0].filename != delivery_module.__file__  # never the tracker's own warn call (also under mutmut)
    if "MUTANT_UNDER_TEST" not in os.environ:  # mutmut's trampolines (in its own package) stand between run and us
        assert warned[0].filename == __file__  # attributed to the fedkit.run line above, not to fedkit's code
    assert [e.seq for e in backend.received] == [0, *range(1, ROUNDS + 2), delivery_module.END_SEQ]
    assert store.pending(result.run_id) == []


def warning_in_package(depth: int) -> Callable[[], None]:
    """A function that warns as a tracker does, from ``depth`` frames whose code claims a file inside the fedkit
    package (as the facade, the round loop and the recorder stand between a user's call and a tracker)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(delivery_module.__file__)))
    source = "def call0():\n    warnings.warn('down', DeliveryWarning, stacklevel=caller_level(sys._getframe()))\n"
    source += "".join(f"def call{i}():\n    call{i - 1}()\n" for i in range(1, depth))
    scope = {"sys": sys, "warnings": warnings, "DeliveryWarning": DeliveryWarning}
    scope["caller_level"] = delivery_module.caller_level
    exec(compile(source, os.path.join(package, "_test_shim.py"), "exec"), scope)
    return scope[f"call{depth - 1}"]


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_a_warning_raised_deep_in_the_package_points_at_the_users_line(depth: int) -> None:
    call = warning_in_package(depth)
    with pytest.warns(DeliveryWarning) as warned:
        line = sys._getframe().f_lineno + 1
        call()
    assert (warned[0].filename, warned[0].lineno) == (__file__, line)


def test_a_tracker_whose_backend_came_back_delivers_the_next_run_as_it_goes(data_dir) -> None:
    store, backend = LocalStore(), FailsOnce()
    tracker = RemoteTracker(backend, store)
    with pytest.warns(DeliveryWarning):
        fedkit.run(FAST, trackers=[store, tracker], progress=False)
    assert len(backend.received) == EVENTS  # down after the first try, caught up at the end
    seen_during_the_run: list[int] = []
    fedkit.run(
        FAST,
        trackers=[store, tracker],
        progress=False,
        callbacks=[lambda event: seen_during_the_run.append(len(backend.received))],
    )
    assert store.pending() == [] and len(backend.received) == 2 * EVENTS
    # the next run's events are delivered as they happen, not held back until its end as for a tracker down
    assert seen_during_the_run[-1] > EVENTS + 1
