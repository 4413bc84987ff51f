"""MLflow tracking against a real `mlflow server` on 127.0.0.1 (SQLite backend): round trip, the SageMaker
managed MLflow plugin path, an outage then sync exactly once, and a sync killed midway then repeated."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import fedkit
from fedkit import RunConfig
from fedkit.cli import main
from fedkit.tracking import DeliveryWarning, LocalStore, make_trackers, sync
from fedkit.tracking.delivery import END_SEQ

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient

TWO_SILOS = RunConfig(split="iid", silos=2, rounds=2, local_steps=3)
ARN = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/fedkit-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers, by the server's PID (its group)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` on a free 127.0.0.1 port with a SQLite store; artifacts written by the client to a folder
    (as SageMaker managed MLflow has clients write to S3)."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = folder / "server.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--no-serve-artifacts",
            "--default-artifact-root",
            str(folder / "artifacts"),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                pytest.fail(f"mlflow server did not answer on {url} in 120 s; log: {log.read_text()[-3000:]}")
            time.sleep(0.25)
    yield url
    stop(proc)


def runs_of(url: str, experiment: str, run_id: str) -> dict[str, object]:
    client = MlflowClient(url)
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], filter_string=f"tags.`fedkit.run_id` = '{run_id}'")
    return {r.data.tags.get("fedkit.silo", "parent"): r for r in found}


def assert_delivered_once(url: str, experiment: str, result: fedkit.RunResult, silos: tuple[str, ...]) -> None:
    """One parent, one nested run per silo, every metric point once per round, params, model artifact."""
    client = MlflowClient(url)
    exp = client.get_experiment_by_name(experiment)
    assert len(client.search_runs([exp.experiment_id])) == 1 + len(silos)
    runs = runs_of(url, experiment, result.run_id)
    assert set(runs) == {"parent", *silos}
    parent = runs["parent"]
    assert parent.info.status == "FINISHED" and parent.info.run_name == f"fedkit-{result.run_id}"
    assert parent.data.params["weight_decay"] == "0.0" and parent.data.params["strategy"] == "fedavg"
    rounds = result.config["rounds"]
    history = client.get_metric_history(parent.info.run_id, "global_test_auc")
    assert sorted(m.step for m in history) == list(range(rounds + 1))
    expected = result.history.query("silo == 'pooled' and metric == 'auc'").sort_values("round")["value"]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(expected.tolist())
    for silo in silos:
        child = runs[silo]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
        assert child.data.params["silo"] == silo and child.data.params["lr"] == str(result.config["lr"])
        for name, steps in (("global_test_accuracy", range(rounds + 1)), ("local_train_loss", range(1, rounds + 1))):
            assert sorted(m.step for m in client.get_metric_history(child.info.run_id, name)) == list(steps)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "model")} == {
        "model/params.npy",
        "model/config.json",
        "model/summary.json",
    }
    local = client.download_artifacts(parent.info.run_id, "model/params.npy")
    assert np.array_equal(np.load(local), result.params.astype(np.float32))


def test_run_with_tracker_mlflow_has_params_stepped_metrics_nested_silo_runs_and_the_model(
    data_dir, mlflow_url, capsys
) -> None:
    argv = shlex.split("run --split iid --silos 2 --rounds 2 --local-steps 3 --weight-decay 0 --tracker local,mlflow")
    argv += ["--experiment", "round-trip", "--tracking-uri", mlflow_url, "--json", "-q"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout is only the JSON (no MLflow links)
    result = fedkit.RunResult(
        summary["run_id"],
        summary["status"],
        summary["config"],
        [{**r, "value": np.nan if r["value"] is None else r["value"]} for r in summary["history"]],
        fedkit.load_run(summary["run_id"])["params"],
        {},
        summary["data"],
    )
    assert_delivered_once(mlflow_url, "round-trip", result, ("silo_0", "silo_1"))
    table = fedkit.compare(source="mlflow", experiment="round-trip", tracking_uri=mlflow_url)
    assert table.loc[summary["run_id"], "pooled_auc"] == pytest.approx(summary["final"]["pooled"]["auc"])
    assert table.loc[summary["run_id"], "silo_0_accuracy"] == pytest.approx(
        summary["final"]["silos"]["silo_0"]["accuracy"]
    )


def test_sagemaker_managed_mlflow_path_through_the_plugin(data_dir, mlflow_url, monkeypatch) -> None:
    monkeypatch.setenv("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT", mlflow_url)
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    trackers = make_trackers("mlflow", experiment="managed", tracking_uri=ARN)
    result = fedkit.run(TWO_SILOS, trackers=trackers, progress=False)
    assert LocalStore().delivery(result.run_id)["mlflow"]["pending"] == 0
    assert LocalStore().delivery(result.run_id)["mlflow"]["target"]["tracking_uri"] == ARN
    assert_delivered_once(mlflow_url, "managed", result, ("silo_0", "silo_1"))


def test_an_unreachable_mlflow_never_stops_the_run_and_sync_delivers_exactly_once(
    data_dir, mlflow_url, monkeypatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.warns(DeliveryWarning, match="fedkit runs sync") as caught:
        result = fedkit.run(
            TWO_SILOS, trackers=make_trackers("local,mlflow", experiment="outage", tracking_uri=dead), progress=False
        )
    assert time.monotonic() - started < 60 and result.status == "finished"
    assert len([w for w in caught if w.category is DeliveryWarning]) == 1
    assert [e["seq"] for e in LocalStore().pending(result.run_id)] == [0, 1, 2, 3, END_SEQ]
    # the server "comes back": the recorded target is rewritten to where it now answers
    import sqlite3

    with sqlite3.connect(LocalStore().path) as con:
        con.execute("UPDATE outbox SET target = replace(target, ?, ?)", (dead, mlflow_url))
    for _ in range(3):
        assert main(["runs", "sync", "-q"]) == 0
    assert LocalStore().pending() == []
    assert_delivered_once(mlflow_url, "outage", result, ("silo_0", "silo_1"))


def test_a_sync_killed_midway_then_repeated_leaves_no_duplicates(data_dir, mlflow_url, fedkit_home) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = RunConfig(split="iid", silos=2, rounds=8, local_steps=1)
    with pytest.warns(DeliveryWarning):
        result = fedkit.run(
            config, trackers=make_trackers("local,mlflow", experiment="killed", tracking_uri=dead), progress=False
        )
    import sqlite3

    store = LocalStore()
    with sqlite3.connect(store.path) as con:
        con.execute("UPDATE outbox SET target = replace(target, ?, ?)", (dead, mlflow_url))
    total = len(store.pending())
    env = {**os.environ, "FEDKIT_HOME": str(fedkit_home)}
    proc = subprocess.Popen([sys.executable, "-m", "fedkit", "runs", "sync", "-q"], env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while len(store.pending()) == total and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    left = len(store.pending())
    assert 0 < left < total, f"the sync was not caught midway ({left} of {total} pending)"
    # the worst moment: an event sent but not yet marked delivered (killed right after the backend's answer)
    from fedkit.tracking import delivery

    real = store.delivered
    with pytest.raises(KeyboardInterrupt):
        store.delivered = lambda *a: (_ for _ in ()).throw(KeyboardInterrupt())  # type: ignore[method-assign]
        delivery.sync(store=store, progress=False)
    store.delivered = real  # type: ignore[method-assign]
    assert store.pending()[0]["attempts"] >= 1  # in doubt: sent, not marked
    report = sync(progress=False)
    assert [r["pending"] for r in report] == [0] and [r["error"] for r in report] == [None]
    assert_delivered_once(mlflow_url, "killed", result, ("silo_0", "silo_1"))
