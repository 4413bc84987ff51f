"""Tracker selection and the outbox, with an in-memory backend: order, one warning, sync exactly once."""

from __future__ import annotations

import time

import pytest

import fedkit
from fedkit import RunConfig
from fedkit.cli import main
from fedkit.tracking import DeliveryWarning, LocalStore, RemoteTracker, TrackerError, make_trackers, sync
from fedkit.tracking.base import Event
from fedkit.tracking.delivery import END_SEQ

FAST = RunConfig(split="iid", silos=2, rounds=3, local_steps=2)


class Recorder:
    """A backend that keeps what it received, keyed like a remote would (points by (silo, name, step))."""

    name = "mlflow"

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.calls = 0
        self.events: list[tuple[str, int]] = []
        self.points: dict[tuple[str, str, int], list[float]] = {}

    def target(self) -> dict:
        return {"experiment": "x", "tracking_uri": "memory://"}

    def deliver(self, event: Event) -> None:
        self.calls += 1
        if not self.up:
            raise ConnectionError("connection refused")
        self.events.append((event.kind, event.seq))
        for r in event.rows:
            self.points.setdefault((r["silo"], f"{r['model']}_{r['split']}_{r['metric']}", r["round"]), []).append(
                r["value"]
            )


def test_local_is_always_first_and_unknown_backends_are_named_with_the_allowed_ones() -> None:
    assert [type(t).__name__ for t in make_trackers("local")] == ["LocalStore"]
    assert [type(t).__name__ for t in make_trackers(" LOCAL , local ")] == ["LocalStore"]
    with pytest.raises(TrackerError, match=r"unknown backend\(s\) 'wandb'; allowed: local, sagemaker, mlflow"):
        make_trackers("local,wandb")


def test_trackers_by_name_or_list_always_start_with_the_local_store() -> None:
    assert [type(t) for t in make_trackers("local")] == [LocalStore]
    assert [type(t) for t in make_trackers([])] == [LocalStore]
    with pytest.raises(TrackerError, match="unknown backend"):
        make_trackers(["wandb"])


def test_every_registered_backend_can_be_built_by_name_and_rebuilt_by_the_outbox() -> None:
    from fedkit.tracking.registry import BACKENDS, LOCAL

    assert next(iter(BACKENDS)) == LOCAL and BACKENDS[LOCAL].load() is LocalStore
    for name, info in BACKENDS.items():
        if name != LOCAL:
            backend = info.load()
            assert backend.name == name and info.label
            assert all(callable(getattr(backend, m, None)) for m in ("from_settings", "target", "deliver"))


def test_mlflow_without_a_tracking_uri_says_how_to_give_one(monkeypatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrackerError, match="set MLFLOW_TRACKING_URI"):
        make_trackers("mlflow")


def test_sagemaker_without_a_region_says_how_to_set_one(monkeypatch, tmp_path) -> None:
    pytest.importorskip("boto3")
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(TrackerError, match="export AWS_DEFAULT_REGION=eu-west-1"):
        make_trackers("sagemaker")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")  # boto3 ignores it: the hint must not suggest it
    with pytest.raises(TrackerError, match="ignores AWS_REGION"):
        make_trackers("sagemaker")


def test_events_arrive_in_order_and_are_marked_delivered(data_dir) -> None:
    store, backend = LocalStore(), Recorder()
    result = fedkit.run(FAST, trackers=[store, RemoteTracker(backend, store)], progress=False)
    assert backend.events == [("start", 0), ("round", 1), ("round", 2), ("round", 3), ("round", 4), ("end", END_SEQ)]
    assert store.delivery(result.run_id)["mlflow"]["delivered"] == 6 and store.pending() == []
    assert sum(len(v) for v in backend.points.values()) == len(result.records)


def test_a_failing_backend_costs_one_try_warns_once_and_sync_delivers_exactly_once(data_dir, capsys) -> None:
    store, backend = LocalStore(), Recorder(up=False)
    with pytest.warns(DeliveryWarning, match=r"mlflow tracker failed \(ConnectionError: connection refused\)") as w:
        result = fedkit.run(FAST, trackers=[store, RemoteTracker(backend, store)], progress=False)
    assert result.status == "finished" and len(w) == 1
    assert backend.calls == 2  # the first event, then one last try at the end; never once per round
    assert [e["seq"] for e in store.pending(result.run_id)] == [0, 1, 2, 3, 4, END_SEQ]
    assert store.pending()[0]["last_error"] == "ConnectionError: connection refused"
    assert main(["runs", "show", result.run_id]) == 0
    assert "tracker mlflow: 0 event(s) delivered, 6 pending (ConnectionError" in capsys.readouterr().out
    report = sync(result.run_id, backends={"mlflow": backend}, progress=False)
    assert report == [
        {
            "run_id": result.run_id,
            "backend": "mlflow",
            "delivered": 0,
            "pending": 6,
            "error": "ConnectionError: connection refused",
        }
    ]
    backend.up = True
    for _ in range(3):
        sync(backends={"mlflow": backend}, progress=False)
    assert [kind for kind, _ in backend.events] == ["start", "round", "round", "round", "round", "end"]
    assert all(len(v) == 1 for v in backend.points.values())
    assert store.pending() == []


def test_runs_sync_says_when_there_is_nothing_to_do(capsys) -> None:
    assert main(["runs", "sync", "-q"]) == 0
    assert "Nothing to sync" in capsys.readouterr().out


def test_a_slow_dead_backend_does_not_slow_every_round(data_dir) -> None:
    class Slow(Recorder):
        def deliver(self, event: Event) -> None:
            time.sleep(0.3)
            super().deliver(event)

    store, backend = LocalStore(), Slow(up=False)
    config = RunConfig(split="iid", silos=2, rounds=10, local_steps=1)
    with pytest.warns(DeliveryWarning):
        fedkit.run(config, trackers=[store, RemoteTracker(backend, store)], progress=False)
    assert backend.calls == 2  # 0.6 s of waiting in a run of 12 events, not 3.6 s


def test_each_round_event_reads_only_its_own_rows(data_dir, monkeypatch) -> None:
    read: list[int] = []
    history = LocalStore.history

    def counting(self, run_id, *server_round):
        rows = history(self, run_id, *server_round)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(LocalStore, "history", counting)
    store, backend = LocalStore(), Recorder()
    result = fedkit.run(
        RunConfig(split="iid", silos=2, rounds=6, local_steps=2),
        trackers=[store, RemoteTracker(backend, store)],
        progress=False,
    )
    assert sum(read) == len(result.records)  # every metric row read once, not the whole history per round


def test_the_store_runs_its_schema_ddl_once_per_file_not_on_every_connection(monkeypatch) -> None:
    import sqlite3

    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        con = connect(*args, **kwargs)
        con.set_trace_callback(statements.append)
        return con

    monkeypatch.setattr("fedkit.tracking.local.sqlite3.connect", traced)
    store = LocalStore()
    store.start_run("r1", {"split": "iid"}, {})
    assert any("CREATE TABLE" in s for s in statements)  # the new file gets its tables
    statements.clear()
    store.log_round(
        "r1", 1, [{"round": 1, "silo": "a", "model": "global", "split": "test", "metric": "auc", "value": 0.5}]
    )
    store.history("r1")
    LocalStore(store.path).list_runs()  # another store object on the same file
    assert statements and not any("CREATE" in s for s in statements)


def test_an_mlflow_backend_changes_process_wide_state_only_while_it_delivers(monkeypatch) -> None:
    pytest.importorskip("sagemaker_mlflow")
    import logging
    import os
    from datetime import datetime
    from types import SimpleNamespace

    import mlflow

    from fedkit.tracking.mlflow import ENV_DEFAULTS, MlflowBackend

    for key in ENV_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the user's own setting
    logger = logging.getLogger("mlflow.tracking.request_header.registry")

    def state() -> tuple:
        watched = (*ENV_DEFAULTS, "MLFLOW_TRACKING_URI")
        return {k: os.environ.get(k) for k in watched}, mlflow.get_tracking_uri(), list(logger.filters)

    before = state()
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/x"
    backend = MlflowBackend("x", arn)
    MlflowBackend("y", arn)
    assert state() == before  # constructing changes nothing

    seen: list[tuple] = []

    class Client:
        def get_experiment_by_name(self, name):
            seen.append(state())
            return SimpleNamespace(experiment_id="1")

        def search_runs(self, *args, **kwargs):
            return []

        def create_run(self, *args, **kwargs):
            return SimpleNamespace(info=SimpleNamespace(run_id="m1"))

        def log_batch(self, *args, **kwargs):
            pass

    backend.client = Client()
    run = {"fedkit_version": "0", "created_at": "2026-01-01T00:00:00+00:00", "config": {"lr": 0.1}, "data": {}}
    event = Event("r", 0, "start", None, datetime(2026, 1, 1), False, run, [])
    backend.deliver(event)
    (inside,) = seen
    env, uri, filters = inside
    assert all(env[k] == v for k, v in ENV_DEFAULTS.items()) and uri == arn and filters  # in force while delivering
    assert state() == before  # and put back after: the user's MLFLOW_TRACKING_URI too
