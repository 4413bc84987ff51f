"""SageMaker Experiments tracking: exact requests (botocore Stubber), a moto_server round trip, outage and sync."""

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
from datetime import datetime
from pathlib import Path

import pytest

import fedkit
from fedkit import RunConfig
from fedkit.cli import main
from fedkit.tracking import DeliveryWarning, LocalStore, RemoteTracker, make_trackers, sync
from fedkit.tracking.delivery import END_SEQ
from fedkit.tracking.sagemaker import SageMakerBackend, component_name, parameters, sagemaker_name, trial_name

boto3 = pytest.importorskip("boto3")
from botocore.stub import ANY, Stubber  # noqa: E402

TWO_SILOS = RunConfig(split="iid", silos=2, rounds=2, local_steps=3)
SILOS = ("silo_0", "silo_1")
DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(port: int, log: Path) -> subprocess.Popen:
    """moto_server on 127.0.0.1:port, waited for (bounded)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    stop(proc)
    pytest.fail(f"moto_server did not start on 127.0.0.1:{port}; log: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in DUMMY_AWS.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def moto_url(tmp_path: Path, aws_env, monkeypatch: pytest.MonkeyPatch):
    port = free_port()
    proc = start_moto(port, tmp_path / "moto.log")
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    yield url
    stop(proc)


# -- names and parameters -----------------------------------------------------------------------
def test_names_are_sanitized_to_the_api_pattern_and_long_ones_stay_unique() -> None:
    assert sagemaker_name("my study / 2026") == "my-study-2026"
    assert component_name("20261125-101010-abc123", "silo_03") == "fedkit-20261125-101010-abc123-silo-03"
    a, b = sagemaker_name("x" * 200 + "a"), sagemaker_name("x" * 200 + "b")
    assert len(a) == len(b) == 120 and a != b


def test_zero_parameters_arrive_as_numbers_and_none_is_left_out() -> None:
    got = parameters({"weight_decay": 0.0, "momentum": 0, "lr": 0.001, "mu": None, "verify": True, "split": "iid"})
    assert got == {
        "weight_decay": {"NumberValue": 0.0},
        "momentum": {"NumberValue": 0},
        "lr": {"NumberValue": 0.001},
        "verify": {"StringValue": "true"},
        "split": {"StringValue": "iid"},
    }


# -- exact requests -------------------------------------------------------------------------------
def test_stubber_sees_the_exact_requests_of_a_two_round_two_silo_run(data_dir, aws_env) -> None:
    sm = boto3.client("sagemaker", region_name="us-east-1")
    metrics = boto3.client("sagemaker-metrics", region_name="us-east-1")
    store = LocalStore()
    backend = SageMakerBackend("heart study", clients=(sm, metrics))
    sent: list[tuple[str, dict]] = []
    for client in (sm, metrics):
        client.meta.events.register(
            "provide-client-params.*.*", lambda params, model, **kw: sent.append((model.name, dict(params)))
        )
    with Stubber(sm) as sm_stub, Stubber(metrics) as metrics_stub:
        _expect_run(sm_stub, metrics_stub)  # responses in call order; the requests are checked below
        result = fedkit.run(TWO_SILOS, trackers=[store, RemoteTracker(backend, store)], progress=False)
        sm_stub.assert_no_pending_responses()
        metrics_stub.assert_no_pending_responses()
    run_id, cfg = result.run_id, TWO_SILOS.to_dict()
    names = [n for n, _ in sent]
    trial = trial_name(run_id)
    assert names[:7] == [
        "CreateExperiment",
        "DescribeTrial",
        "CreateTrial",
        "ListTrialComponents",
        "DescribeTrialComponent",
        "CreateTrialComponent",
        "AssociateTrialComponent",
    ]
    assert sent[0][1] == {"ExperimentName": "heart-study", "Description": "fedkit runs: heart study"}
    assert sent[2][1] == {"TrialName": trial, "ExperimentName": "heart-study"}
    assert sent[3][1] == {"TrialName": trial, "MaxResults": 100}
    create = sent[5][1]
    assert create["TrialComponentName"] == component_name(run_id, "aggregated")
    assert create["Status"] == {"PrimaryStatus": "InProgress"} and isinstance(create["StartTime"], datetime)
    params = create["Parameters"]
    for key in ("strategy", "split", "optimizer"):
        assert params[key] == {"StringValue": str(cfg[key])}
    for key in ("rounds", "local_steps", "lr", "batch_size", "weight_decay", "seed", "momentum"):
        assert params[key] == {"NumberValue": cfg[key]}
    assert params["weight_decay"] == {"NumberValue": 0.0}  # a zero arrives as zero
    assert params["fedkit_run_id"] == {"StringValue": run_id} and params["fedkit_silo"] == {"StringValue": "aggregated"}
    assert "mu" not in params  # None is left out
    assert sent[6][1] == {"TrialComponentName": component_name(run_id, "aggregated"), "TrialName": trial}

    puts = [p for n, p in sent if n == "BatchPutMetrics"]
    created = [p["TrialComponentName"] for n, p in sent if n == "CreateTrialComponent"]
    assert created == [component_name(run_id, s) for s in ("aggregated", *SILOS)]
    points: dict[tuple[str, str, int], int] = {}
    for put in puts:
        assert 1 <= len(put["MetricData"]) <= 10
        for d in put["MetricData"]:
            assert set(d) == {"MetricName", "Timestamp", "Step", "Value"} and isinstance(d["Timestamp"], datetime)
            key = (put["TrialComponentName"], d["MetricName"], d["Step"])
            points[key] = points.get(key, 0) + 1
    assert set(points.values()) == {1}
    silo_metrics = {"global_test_loss", "global_test_auc", "global_test_accuracy"}
    silo_metrics |= {"local_train_loss", "local_test_loss", "local_test_auc", "local_test_accuracy"}
    silo_metrics |= {"local_update_norm", "local_update_rejected"}  # validation of each silo's update
    for silo in SILOS:
        got = {(m, s) for c, m, s in points if c == component_name(run_id, silo)}
        assert got == {(m, 0) for m in silo_metrics if m.startswith("global")} | {
            (m, s) for m in silo_metrics for s in (1, 2)
        }
    pooled = {(m, s) for c, m, s in points if c == component_name(run_id, "aggregated")}
    assert pooled == {(f"global_test_{m}", s) for m in ("loss", "auc", "accuracy") for s in (0, 1, 2)}
    ends = [p for n, p in sent if n == "UpdateTrialComponent"]
    assert [e["TrialComponentName"] for e in ends] == sorted(created)
    assert all(e["Status"] == {"PrimaryStatus": "Completed"} and isinstance(e["EndTime"], datetime) for e in ends)
    assert LocalStore().delivery(run_id)["sagemaker"]["pending"] == 0


def _expect_run(sm_stub: Stubber, metrics_stub: Stubber) -> None:
    sm_stub.add_response("create_experiment", {"ExperimentArn": "arn:e"})
    sm_stub.add_client_error("describe_trial", "ResourceNotFound", "Trial does not exist")
    sm_stub.add_response("create_trial", {"TrialArn": "arn:t"})
    sm_stub.add_response("list_trial_components", {"TrialComponentSummaries": []})

    def new_component() -> None:
        sm_stub.add_client_error("describe_trial_component", "ResourceNotFound", "Trial component does not exist")
        sm_stub.add_response("create_trial_component", {"TrialComponentArn": "arn:c"})
        sm_stub.add_response("associate_trial_component", {"TrialComponentArn": "arn:c", "TrialArn": "arn:t"})

    new_component()  # aggregated
    ok: dict = {}
    # round 0: silo_0 (new, 3 global metrics), silo_1 (new), aggregated (3 pooled metrics)
    for _ in SILOS:
        new_component()
        metrics_stub.add_response("batch_put_metrics", ok, {"TrialComponentName": ANY, "MetricData": ANY})
    metrics_stub.add_response("batch_put_metrics", ok, {"TrialComponentName": ANY, "MetricData": ANY})
    for _ in (1, 2):  # rounds 1, 2: 9 metrics per silo (one call each), 3 pooled
        for _ in range(3):
            metrics_stub.add_response("batch_put_metrics", ok, {"TrialComponentName": ANY, "MetricData": ANY})
    for _ in range(3):
        sm_stub.add_response("update_trial_component", {"TrialComponentArn": "arn:c"})


def test_metric_batches_hold_at_most_ten_points() -> None:
    sm = boto3.client("sagemaker", region_name="us-east-1")
    metrics = boto3.client("sagemaker-metrics", region_name="us-east-1")
    backend = SageMakerBackend("x", clients=(sm, metrics))
    rows = [
        {"round": 4, "silo": "a", "model": "global", "split": "test", "metric": f"m{i}", "value": 0.0}
        for i in range(23)
    ]
    event = type("E", (), {"created_at": datetime(2026, 1, 1), "run_id": "r"})()
    sizes: list[int] = []
    metrics.meta.events.register(
        "provide-client-params.sagemaker-metrics.BatchPutMetrics",
        lambda params, **kw: sizes.append(len(params["MetricData"])),
    )
    with Stubber(metrics) as stub:
        for _ in range(3):
            stub.add_response("batch_put_metrics", {}, {"TrialComponentName": "c", "MetricData": ANY})
        backend._put_metrics("c", rows, event)  # type: ignore[arg-type]
        stub.assert_no_pending_responses()
    assert sizes == [10, 10, 3]


def test_compare_from_sagemaker_follows_next_token_through_every_page(aws_env, monkeypatch) -> None:
    import fedkit.tracking.sagemaker as sagemaker_module

    sm = boto3.client("sagemaker", region_name="us-east-1")
    metrics = boto3.client("sagemaker-metrics", region_name="us-east-1")
    monkeypatch.setattr(
        sagemaker_module,
        "SageMakerBackend",
        lambda experiment, region: SageMakerBackend(experiment, clients=(sm, metrics)),
    )

    def component(run_id: str, silo: str) -> dict:
        params = {"fedkit_run_id": {"StringValue": run_id}, "fedkit_silo": {"StringValue": silo}}
        params |= {"lr": {"NumberValue": 0.01}, "rounds": {"NumberValue": 2.0}}
        status = {"PrimaryStatus": "Completed"}
        return {
            "Parameters": params,
            "Metrics": [{"MetricName": "global_test_accuracy", "Last": 0.75}],
            "Status": status,
        }

    with Stubber(sm) as stub:
        trials = "TrialSummaries"
        stub.add_response(
            "list_trials",
            {trials: [{"TrialName": "t1"}], "NextToken": "p2"},
            {"ExperimentName": "x", "MaxResults": 100},
        )
        stub.add_response(
            "list_trials",
            {trials: [{"TrialName": "t2"}]},
            {"ExperimentName": "x", "MaxResults": 100, "NextToken": "p2"},
        )
        for trial, run_id in (("t1", "run-a"), ("t2", "run-b")):
            listed = "TrialComponentSummaries"
            first = {"TrialName": trial, "MaxResults": 100}
            stub.add_response(
                "list_trial_components", {listed: [{"TrialComponentName": f"{trial}-agg"}], "NextToken": "q"}, first
            )
            stub.add_response(
                "describe_trial_component", component(run_id, "aggregated"), {"TrialComponentName": f"{trial}-agg"}
            )
            stub.add_response(
                "list_trial_components", {listed: [{"TrialComponentName": f"{trial}-s"}]}, {**first, "NextToken": "q"}
            )
            stub.add_response(
                "describe_trial_component", component(run_id, "silo_0"), {"TrialComponentName": f"{trial}-s"}
            )
        table = fedkit.compare(source="sagemaker", experiment="x")
        stub.assert_no_pending_responses()
    assert table.index.tolist() == ["run-a", "run-b"]  # the second page of trials is there
    assert table["silo_0_accuracy"].tolist() == [0.75, 0.75]  # and each trial's second page of components


# -- moto_server round trip -----------------------------------------------------------------------
def test_run_with_tracker_sagemaker_leaves_a_trial_five_components_and_their_parameters(
    data_dir, moto_url, capsys
) -> None:
    argv = shlex.split("run --split hospitals --rounds 3 --local-steps 3 --tracker local,sagemaker")
    argv += ["--experiment", "heart study", "--json", "--quiet"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    sm = boto3.client("sagemaker", region_name="us-east-1")
    trials = sm.list_trials(ExperimentName="heart-study")["TrialSummaries"]
    assert [t["TrialName"] for t in trials] == [trial_name(summary["run_id"])]
    components = sm.list_trial_components(TrialName=trials[0]["TrialName"])["TrialComponentSummaries"]
    silos = ["aggregated", "cleveland", "hungarian", "switzerland", "va"]
    assert sorted(c["TrialComponentName"] for c in components) == [component_name(summary["run_id"], s) for s in silos]
    for c in components:
        d = sm.describe_trial_component(TrialComponentName=c["TrialComponentName"])
        p = d["Parameters"]
        assert p["strategy"] == {"StringValue": "fedavg"} and p["rounds"]["NumberValue"] == 3
        assert p["lr"]["NumberValue"] == 0.001 and p["batch_size"]["NumberValue"] == 4
        assert p["optimizer"] == {"StringValue": "sgd"} and p["weight_decay"]["NumberValue"] == 0
        assert p["local_steps"]["NumberValue"] == 3 and p["seed"]["NumberValue"] == 42
        assert d["Status"]["PrimaryStatus"] == "Completed"
        counts = {m["MetricName"]: m["Count"] for m in d["Metrics"]}
        assert counts["global_test_accuracy"] == 4  # rounds 0..3, once each
    assert LocalStore().delivery(summary["run_id"])["sagemaker"] == {
        "delivered": 6,
        "pending": 0,
        "last_error": None,
        "target": {"experiment": "heart study", "region": "us-east-1"},
    }
    table = fedkit.compare(source="sagemaker", experiment="heart study")
    local = fedkit.compare([summary["run_id"]])
    assert table.loc[summary["run_id"], "pooled_accuracy"] == pytest.approx(
        local.loc[summary["run_id"], "pooled_accuracy"]
    )
    assert table.loc[summary["run_id"], "rounds"] == 3


def test_an_unreachable_sagemaker_never_stops_the_run_and_sync_delivers_exactly_once(
    data_dir, aws_env, tmp_path, monkeypatch
) -> None:
    port = free_port()  # nothing listens there yet
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    trackers = make_trackers("local,sagemaker", experiment="outage", max_attempts=2, timeout=2)
    started = time.monotonic()
    with pytest.warns(DeliveryWarning, match="fedkit runs sync") as caught:
        result = fedkit.run(TWO_SILOS, trackers=trackers, progress=False)
    assert time.monotonic() - started < 30
    assert result.status == "finished" and len([w for w in caught if w.category is DeliveryWarning]) == 1
    assert fedkit.load_run(result.run_id)["status"] == "finished"
    pending = LocalStore().pending(result.run_id)
    assert [e["seq"] for e in pending] == [0, 1, 2, 3, END_SEQ]

    proc = start_moto(port, tmp_path / "moto.log")
    try:
        for _ in range(3):  # any number of syncs
            assert main(["runs", "sync", result.run_id[:15], "-q"]) == 0
        assert sync(progress=False) == []
        sm = boto3.client("sagemaker", region_name="us-east-1")
        trial = sm.describe_trial(TrialName=trial_name(result.run_id))
        assert trial["TrialName"] == trial_name(result.run_id)
        assert len(sm.list_trials(ExperimentName="outage")["TrialSummaries"]) == 1
        components = sm.list_trial_components(TrialName=trial_name(result.run_id))["TrialComponentSummaries"]
        assert len(components) == 3
        for c in components:
            d = sm.describe_trial_component(TrialComponentName=c["TrialComponentName"])
            assert all(m["Count"] == (3 if m["MetricName"].startswith("global") else 2) for m in d["Metrics"])
            assert d["Status"]["PrimaryStatus"] == "Completed"
    finally:
        stop(proc)
