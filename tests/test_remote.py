"""The remote engine on a real NVIDIA FLARE federation: server + four hospital sites on 127.0.0.1, mTLS.

One federation (``start_poc``) serves the module; every process it started is stopped by PID at the
end and checked gone. Remote and simulation must agree to 1e-6 on every final metric (logistic
regression is bit-identical: each site trains its silo on the simulation's batch streams).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nvflare")

import fedkit
from fedkit.remote import kits
from fedkit.remote.submit import open_session, run_remote
from fedkit.tracking.local import LocalStore

TOLERANCE = 1e-6
ROUNDS = 3
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_headless_report.ipynb"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def poc(tmp_path_factory):
    import psutil

    started = kits.start_poc(tmp_path_factory.mktemp("poc"), 4)
    try:
        yield started
    finally:
        procs = [p for name in list(started.processes) for p in started.tree(name)]  # with FLARE's job processes
        t0 = time.monotonic()
        started.stop(timeout=15)
        assert time.monotonic() - t0 < 60
        _, alive = psutil.wait_procs(procs, timeout=5)
        assert not alive, alive


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "runs.sqlite")


@pytest.fixture
def every_site(poc):
    """The module's federation with every hospital connected: a site an earlier test killed is started again."""
    for hospital in poc.hospitals:
        process = poc.processes.get(hospital)
        if process is None or process.poll() is not None:  # killed (and forgotten) by a test, or exited
            poc.start(hospital)
    poc.wait_ready()
    return poc


def remote_config(**fields) -> fedkit.RunConfig:
    return fedkit.RunConfig(**{"engine": "remote", "rounds": ROUNDS, **fields})


def assert_same_final(remote: dict, simulation: dict, silos=None) -> None:
    """Per-silo and pooled loss/accuracy to 1e-6, pooled AUC (from the summed histograms) to 1e-3."""
    silos = silos or list(simulation["final"]["silos"])
    assert list(remote["final"]["silos"]) == silos
    blocks = [(remote["final"]["silos"][s], simulation["final"]["silos"][s]) for s in silos]
    for metric in ("loss", "auc", "accuracy"):
        for a, b in [*((x[metric], y[metric]) for x, y in blocks)]:
            assert (a is None and b is None) or abs(a - b) <= TOLERANCE, (metric, a, b)
        a, b = remote["final"]["pooled"][metric], simulation["final"]["pooled"][metric]
        assert abs(a - b) <= (1e-3 if metric == "auc" else TOLERANCE), ("pooled", metric, a, b)


def test_everything_listens_and_connects_on_loopback_only(poc) -> None:
    import psutil

    startup = {p.parent.name: p for p in poc.kits.glob("*/startup")}
    server = json.loads((startup["server"] / "fed_server.json").read_text())["servers"][0]
    assert server["service"]["target"].startswith("127.0.0.1:") and server["admin_server"] == "127.0.0.1"
    for hospital in poc.hospitals:
        conf = json.loads((startup[hospital] / "fed_client.json").read_text())
        assert conf["servers"][0]["service"]["target"].startswith("127.0.0.1:")
        assert conf["client"]["connection_security"] == "mtls"
    assert json.loads((poc.admin_kit / "startup" / "fed_admin.json").read_text())["admin"]["host"] == "127.0.0.1"
    for pid in poc.pids.values():
        parent = psutil.Process(pid)
        for proc in [parent, *parent.children(recursive=True)]:
            for conn in proc.net_connections(kind="inet"):
                assert conn.laddr.ip == "127.0.0.1", (proc.pid, conn)
                assert not conn.raddr or conn.raddr.ip == "127.0.0.1", (proc.pid, conn)


def test_each_site_holds_only_its_own_hospitals_file(poc) -> None:
    for hospital in poc.hospitals:
        files = sorted(p.name for p in (poc.kits / hospital).rglob("processed.*.data"))
        assert files == [f"processed.{hospital}.data"], (hospital, files)


def test_remote_run_matches_simulation_and_is_recorded_here(poc, tmp_path, monkeypatch) -> None:
    """Through notebooks/04_headless_report with papermill (`-p engine remote -p admin_kit DIR`) when it exists.

    The remote run uses secure aggregation (the remote default); the simulation runs in the clear.
    """
    home = tmp_path / "home"
    monkeypatch.setenv("FEDKIT_HOME", str(home))
    if NOTEBOOK.exists():
        papermill = pytest.importorskip("papermill")
        papermill.execute_notebook(
            str(NOTEBOOK),
            str(tmp_path / "out.ipynb"),
            cwd=str(tmp_path),
            progress_bar=False,
            parameters={"engine": "remote", "admin_kit": str(poc.admin_kit), "rounds": ROUNDS, "seeds": [42]},
        )
    else:
        fedkit.run(remote_config(), admin_kit=poc.admin_kit, progress=False)
    store = LocalStore(home / "runs.sqlite")
    runs = store.list_runs()
    assert [r["status"] for r in runs] == ["finished"]
    remote = store.get(runs[0]["run_id"])
    assert remote["config"]["engine"] == "remote"
    simulation = fedkit.run(fedkit.RunConfig(rounds=ROUNDS), trackers=[], progress=False)
    assert_same_final(remote["summary"], simulation.summary())
    np.testing.assert_allclose(remote["params"], simulation.params, atol=TOLERANCE)
    assert len(remote["summary"]["history"]) == len(simulation.records)


def test_site_with_a_certificate_from_another_ca_is_refused(poc, tmp_path) -> None:
    port = int(json.loads((poc.admin_kit / "startup" / "fed_admin.json").read_text())["admin"]["port"])
    project = tmp_path / "rogue.yml"
    rogue = kits.loopback_project(["rogue"], port, name="rogue-project")  # same server address, its own CA
    import yaml

    project.write_text(yaml.safe_dump(rogue))
    rogue_kits = kits.provision(project, tmp_path / "kits")
    other = kits.Poc(rogue_kits, ("rogue",), {"rogue": poc.data["cleveland"]})
    other.start("rogue")
    try:
        time.sleep(8)
        assert other.processes["rogue"].poll() is None  # it kept trying ...
        session = open_session(poc.admin_kit)
        try:
            connected = {c.name for c in session.get_connected_client_list()}
        finally:
            session.close()
    finally:
        other.stop(timeout=10)
    assert set(poc.hospitals) <= connected  # ... while the provisioned sites stay connected
    assert "rogue" not in connected


def test_stop_from_python_aborts_the_job_and_records_stopped(poc, store) -> None:
    seen: list[int] = []
    config = remote_config(rounds=50)
    result = run_remote(
        config,
        admin_kit=poc.admin_kit,
        trackers=[store],
        progress=False,
        should_stop=lambda: len(seen) >= 2,
        callbacks=[lambda event: seen.append(event.round)],
    )
    assert result.status == "stopped"
    assert store.get(result.run_id)["status"] == "stopped"
    session = open_session(poc.admin_kit)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            jobs = session.list_jobs(detailed=True)
            latest = max(jobs, key=lambda j: j.get("submit_time", 0))
            if str(latest["status"]).startswith("FINISHED"):
                break
            time.sleep(1)
        assert str(latest["status"]).startswith("FINISHED"), latest["status"]
    finally:
        session.close()


def test_a_silo_that_drops_out_is_left_out_and_one_that_comes_back_rejoins(poc, store) -> None:
    state = {"paused": False, "resumed": False, "killed": False}

    def resume() -> None:
        time.sleep(5)
        poc.send_signal("hungarian", signal.SIGCONT)
        state["resumed"] = True

    def chaos(event: dict) -> None:
        if event["kind"] != "round" or event["round"] < 2:
            return
        if not state["paused"]:  # a network partition: the site stops answering for 5 s, then comes back
            state["paused"] = True
            poc.send_signal("hungarian", signal.SIGSTOP)
            threading.Thread(target=resume, daemon=True).start()
        elif state["resumed"] and not state["killed"]:  # gone for good
            state["killed"] = True
            poc.kill("va")

    result = run_remote(
        remote_config(rounds=14),
        admin_kit=poc.admin_kit,
        trackers=[store],
        progress=False,
        min_silos=2,
        straggler_timeout=2,
        on_event=chaos,
        result_timeout=5,
    )
    assert result.status == "finished" and state["killed"]
    notes = " ".join(result.notes)
    assert "silo 'hungarian' dropped out" in notes and "silo 'hungarian' rejoined" in notes
    assert "silo 'va' dropped out" in notes and "silo 'va' rejoined" not in notes
    assert list(result.final["silos"]) == ["cleveland", "hungarian", "switzerland"]
    trained = {(r["round"], r["silo"]) for r in result.records if r["model"] == "local" and r["split"] == "train"}
    assert (14, "hungarian") in trained and (14, "va") not in trained
    assert store.get(result.run_id)["summary"]["notes"] == result.notes


def test_distributed_dp_under_secure_aggregation_matches_the_simulation(every_site, store) -> None:
    """Issue 13's acceptance run: the FLamby FedAvg config with distributed DP at ε = 1, δ = 1e-3, on real sites.

    Each site clips its update and adds its share of the noise (from its seeded stream) before masking,
    so the remote run reports the simulation's ε and ends with its final model to ``TOLERANCE``.
    """
    fields = {"strategy": "fedavg", "dp": "distributed", "dp_epsilon": 1.0, "dp_delta": 1e-3}
    fields |= {"secure_aggregation": True, "rounds": 15}
    remote = fedkit.run(remote_config(**fields), admin_kit=every_site.admin_kit, trackers=[store], progress=False)
    simulation = fedkit.run(fedkit.RunConfig(**fields), trackers=[], progress=False)
    assert remote.status == "finished" and list(remote.final["silos"]) == list(every_site.hospitals)
    assert remote.final["privacy"]["epsilon"] <= 1
    assert remote.final["privacy"] == simulation.final["privacy"]
    np.testing.assert_allclose(remote.params, simulation.params, atol=TOLERANCE, rtol=0)
    stored = store.get(remote.run_id)["summary"]["final"]["privacy"]
    assert stored == simulation.final["privacy"]


@pytest.mark.parametrize("secure", [True, False], ids=["secure", "clear"])
def test_central_dp_on_real_sites_matches_the_simulation(every_site, store, secure) -> None:
    """``--dp central``: each site clips before masking (secure) or the server clips each update (clear); the
    server adds the whole noise from its seeded stream, so ε, the per-round ε and the final model equal the
    simulation's."""
    fields = {"strategy": "fedavg", "dp": "central", "dp_epsilon": 1.0, "dp_delta": 1e-3, "secure_aggregation": secure}
    remote = fedkit.run(remote_config(**fields), admin_kit=every_site.admin_kit, trackers=[store], progress=False)
    simulation = fedkit.run(fedkit.RunConfig(**fields, rounds=ROUNDS), trackers=[], progress=False)
    assert remote.status == "finished" and list(remote.final["silos"]) == list(every_site.hospitals)
    assert remote.final["privacy"] == simulation.final["privacy"] and remote.final["privacy"]["epsilon"] <= 1
    epsilons = [
        [r["value"] for r in result.records if r["split"] == "privacy" and r["metric"] == "epsilon"]
        for result in (remote, simulation)
    ]
    assert epsilons[0] == epsilons[1] and len(epsilons[0]) == ROUNDS + 1
    np.testing.assert_allclose(remote.params, simulation.params, atol=TOLERANCE, rtol=0)
