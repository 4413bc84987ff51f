"""The remote engine on a real NVIDIA FLARE federation: server + four hospital sites on 127.0.0.1, mTLS.

One federation (``start_poc``) serves the module; every process it started is stopped by PID at the
end and checked gone. Remote and simulation must agree to 1e-6 on every final metric (logistic
regression is bit-identical: each site trains its silo on the simulation's batch streams).
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nvflare")

import fedkit
from fedkit.cli import main
from fedkit.errors import RemoteRunError
from fedkit.privacy import audit
from fedkit.remote import kits
from fedkit.remote.controller import STORE
from fedkit.remote.spare import SPARE_NAME, WARMING_NAME
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
def chaos(poc):
    """The federation, made whole again after a test that stops, kills or restarts its processes."""
    yield poc
    for name in (kits.SERVER, *poc.hospitals):
        poc.send_signal(name, signal.SIGCONT)
        if name not in poc.processes or poc.processes[name].poll() is not None:
            poc.start(name)
    poc.wait_ready()


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


def test_jobs_run_in_the_processes_started_ahead_and_the_next_ones_follow(poc, store) -> None:
    """Each participant's job process is the spare that was ready before the run (fedkit.remote.prestart)."""
    import psutil

    poc.wait_idle()
    spares = {name: [c.pid for c in psutil.Process(pid).children()] for name, pid in poc.pids.items()}
    ran: dict[str, int] = {}

    def look(event: dict) -> None:
        if event["kind"] == "round" and event["round"] == 1 and not ran:
            ran.update({name: job_process(poc, name).pid for name in poc.pids})

    run_remote(
        remote_config(rounds=2, secure_aggregation=False),
        admin_kit=poc.admin_kit,
        trackers=[store],
        progress=False,
        on_event=look,
    )
    assert ran == {name: pids[0] for name, pids in spares.items()}
    poc.wait_idle()  # new spares, once the job processes have exited
    for name, pid in poc.pids.items():
        assert [c.pid for c in psutil.Process(pid).children()] != spares[name]


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


def test_sites_check_and_sign_their_own_updates_under_secure_aggregation(poc, store) -> None:
    """A norm bound below the largest round-1 norm: that site refuses its own update and leaves the sum.

    (One of four: the other three still reach the secure sum's threshold t=3, fixed when the round's sum
    was set up over the four; two refusals would leave it below t and fail the round.)

    The run equals the simulation under secure aggregation with the same bound (which checks every update
    before the sum, standing for the sites), and the round's audit record holds each site's statement,
    signed with its FLARE certificate: anyone with the federation's root CA can check them later.
    """
    import base64

    from fedkit.privacy.audit import canonical
    from fedkit.privacy.identity import CertificateAuthority

    probe = fedkit.run(fedkit.RunConfig(rounds=1), trackers=[], progress=False)
    norms = sorted(r["value"] for r in probe.records if r["split"] == "update" and r["metric"] == "norm")
    bound = (norms[2] + norms[3]) / 2
    result = run_remote(
        remote_config(rounds=1, max_update_norm=bound), admin_kit=poc.admin_kit, trackers=[store], progress=False
    )
    simulation = fedkit.run(
        fedkit.RunConfig(rounds=1, max_update_norm=bound, secure_aggregation=True), trackers=[], progress=False
    )
    refused = sorted((r["round"], r["silo"], r["kind"]) for r in result.rejected)
    assert refused == sorted((r["round"], r["silo"], r["kind"]) for r in simulation.rejected)
    assert [(r, k) for r, _, k in refused] == [(1, "norm")]
    assert_same_final(result.summary(), simulation.summary())
    np.testing.assert_allclose(result.params, simulation.params, atol=TOLERANCE, rtol=0)
    log = store.audit_log(result.run_id)
    certificates = {site: base64.b64decode(v["certificate"]) for site, v in log[0]["sites"].items()}
    (first,) = [r for r in log if r["kind"] == "round" and r["round"] == 1]
    ca = CertificateAuthority.from_pem((poc.kits / kits.SERVER / "startup" / "rootCA.pem").read_bytes())
    said = {a["statement"]["silo"]: a for a in first["attestations"]}
    assert sorted(said) == sorted(poc.hospitals)
    for site, attestation in said.items():
        statement = attestation["statement"]
        assert statement["bound"] == bound and statement["round"] == 1 and "norm" not in statement
        assert statement["accepted"] is ((1, site, "norm") not in refused)
        ca.verify(site, certificates[site], canonical(statement), base64.b64decode(attestation["signature"]))
    assert sorted(first["participants"]) == sorted(s for s in poc.hospitals if (1, s, "norm") not in refused)
    assert all(u["norm"] is None for u in first["updates"])  # the server learned no norm


def test_the_admin_login_retries_its_challenge_quickly_and_leaves_flare_as_it_was() -> None:
    import inspect

    from nvflare.fuel.hci.client import api

    from fedkit.remote import submit

    original = api.Authenticator
    assert "retry_interval" in inspect.signature(original).parameters  # what the override relies on (FLARE 2.9)
    with submit._quick_login_retry():
        quick = api.Authenticator(*[None] * 10, retry_interval=1.0)  # AdminAPI.connect's hard-coded 1 s
        assert isinstance(quick, original) and quick.retry_interval == submit.LOGIN_RETRY
        assert api.Authenticator(*[None] * 10, retry_interval=0.001).retry_interval == 0.001  # never slower
    assert api.Authenticator is original


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


PANEL_ROUNDS = 6


def test_the_panels_stop_button_ends_a_remote_run_and_resume_finishes_it(poc, tmp_path, monkeypatch) -> None:
    """The widget panel on the remote engine: Stop ends the run after a round on the server, Resume continues it.

    The stopped-then-resumed run equals the uninterrupted simulation (secure aggregation, the remote default).
    """
    pytest.importorskip("ipywidgets")
    from fedkit.widgets import ControlPanel

    monkeypatch.setenv("FEDKIT_HOME", str(tmp_path / "home"))
    panel = ControlPanel(engine="remote", admin_kit=poc.admin_kit, rounds=PANEL_ROUNDS)

    def stop_at_round_two(event) -> None:
        if event.round == 2 and not panel.stop_button.disabled:
            panel.stop_button.click()

    panel.callbacks.append(stop_at_round_two)
    panel.run_button.click()
    stopped = panel.wait(240)
    assert stopped is not None and stopped.status == "stopped", panel.message.value
    assert 2 <= stopped.final["round"] < PANEL_ROUNDS  # the server ended it after the round it was in
    assert fedkit.load_run(stopped.run_id)["status"] == "stopped" and "stopped" in panel.message.value
    assert panel.resume_from.value == stopped.run_id and not panel.resume_button.disabled
    panel.callbacks.clear()
    panel.resume_button.click()
    resumed = panel.wait(240)
    assert resumed is not None and resumed.status == "finished", panel.message.value
    assert resumed.run_id == stopped.run_id and panel.counter.value == f"round {PANEL_ROUNDS}/{PANEL_ROUNDS}"
    simulation = fedkit.run(fedkit.RunConfig(rounds=PANEL_ROUNDS), trackers=[], progress=False)
    assert_same_final(resumed.summary(), simulation.summary())
    np.testing.assert_allclose(resumed.params, simulation.params, atol=TOLERANCE, rtol=0)
    assert fedkit.load_run(resumed.run_id)["status"] == "finished"


STRAGGLER = 8
"""Seconds the server waits for a late site: far above a loaded 2-core machine's round (~0.2 s quiet, ~2 s at load
14), so only the sites the tests silence drop out; the tests wait for events, never for a time."""


def test_a_silo_that_drops_out_is_left_out_and_one_that_comes_back_rejoins(chaos, store) -> None:
    poc = chaos
    state = {"paused": False, "resumed": False, "killed": False}

    def on_event(event: dict) -> None:
        if event["kind"] == "note" and "silo 'hungarian' dropped out" in event["text"] and not state["resumed"]:
            state["resumed"] = True  # the partition ends once the server has left it out of a round
            poc.send_signal("hungarian", signal.SIGCONT)
        if event["kind"] != "round" or event["round"] < 2:
            return
        if not state["paused"]:  # a network partition: the site stops answering
            state["paused"] = True
            poc.send_signal("hungarian", signal.SIGSTOP)
        elif state["resumed"] and not state["killed"]:  # gone for good (a site's job process that dies alone
            state["killed"] = True  # makes FLARE 2.9 fail the whole job: see the resume tests)
            poc.kill("va")

    result = run_remote(
        remote_config(rounds=10),
        admin_kit=poc.admin_kit,
        trackers=[store],
        progress=False,
        min_silos=2,
        straggler_timeout=STRAGGLER,
        on_event=on_event,
    )
    assert result.status == "finished" and state["killed"]
    notes = " ".join(result.notes)
    assert "silo 'hungarian' dropped out" in notes and "silo 'hungarian' rejoined" in notes
    assert "silo 'va' dropped out" in notes and "silo 'va' rejoined" not in notes
    assert list(result.final["silos"]) == ["cleveland", "hungarian", "switzerland"]
    trained = {(r["round"], r["silo"]) for r in result.records if r["model"] == "local" and r["split"] == "train"}
    assert (10, "hungarian") in trained and (10, "va") not in trained
    assert store.get(result.run_id)["summary"]["notes"] == result.notes


REJOIN_ROUNDS = 40  # ~0.3 s a round under secure aggregation: time for the kill, the dropout and the restart


def test_a_site_killed_and_restarted_mid_run_rejoins_with_its_own_state(chaos, store) -> None:
    poc = chaos
    state: dict[str, bool] = {}

    def on_event(event: dict) -> None:
        if event["kind"] == "round" and event["round"] >= 1 and "killed" not in state:
            state["killed"] = True
            poc.kill("va")  # the whole site: FLARE's site process and its job process
        if event["kind"] == "note" and "silo 'va' dropped out" in event["text"] and "restarted" not in state:
            state["restarted"] = True
            poc.start("va")  # the site comes back; its state file stayed in its workspace

    result = run_remote(  # enough rounds for a site to restart on a loaded machine: each round scales with the load
        remote_config(rounds=REJOIN_ROUNDS, strategy="scaffold"),
        admin_kit=poc.admin_kit,
        trackers=[store],
        progress=False,
        min_silos=2,
        straggler_timeout=STRAGGLER,
        on_event=on_event,
    )
    poc.wait_ready()
    assert result.status == "finished" and state.get("restarted") is True, (state, result.notes)
    notes = " ".join(result.notes)
    assert "silo 'va' dropped out" in notes and "silo 'va' rejoined" in notes
    trained = {(r["round"], r["silo"]) for r in result.records if r["model"] == "local" and r["split"] == "train"}
    assert (REJOIN_ROUNDS, "va") in trained and list(result.final["silos"]) == list(poc.hospitals)
    kinds = [r["kind"] for r in store.audit_log(result.run_id)]
    assert "resume" in kinds  # continued in a new job that includes the site again
    store.verify_audit(result.run_id)
    assert sorted({r["round"] for r in store.history(result.run_id)}) == list(range(REJOIN_ROUNDS + 1))


def job_process(poc, name: str):
    """The newest FLARE job process of participant ``name`` (the server's runner process, a site's worker process).

    The newest: a run returns once its last round's result has arrived, so the job process of the test before
    may still be finishing beside the current one. Not a spare (:mod:`fedkit.remote.spare`: the next job's process,
    started ahead, named so until it becomes one).
    """
    import psutil

    marker = "runner_process" if name == kits.SERVER else "worker_process"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = []
        for proc in poc.tree(name)[1:]:
            with contextlib.suppress(psutil.NoSuchProcess):  # a job process that ended meanwhile
                if any(marker in part for part in proc.cmdline()) and proc.name() not in SPARE_NAMES:
                    found.append(proc)
        if found:
            return max(found, key=lambda proc: proc.create_time())
        time.sleep(0.1)
    raise AssertionError(f"no job process of {name}")


SPARE_NAMES = (SPARE_NAME, WARMING_NAME)
RESUME_ROUNDS = 20


def test_a_run_whose_server_job_was_killed_resumes_after_a_server_restart(chaos, store, monkeypatch, capsys) -> None:
    """Killed with SIGKILL in round 2 or later; `fedkit run --resume ID` after a server restart equals the simulation.

    The events reach this machine by polling, so the kill lands a round or more after the event that triggers it:
    the run has enough rounds left for it to land mid-run however loaded the machine is.
    """
    poc = chaos
    monkeypatch.setenv("FEDKIT_HOME", str(store.path.parent))  # the CLI's local store is ``store``
    config = remote_config(rounds=RESUME_ROUNDS, strategy="scaffold")  # secure aggregation: the remote default
    killed: list[int] = []

    def kill_server_job(event: dict) -> None:
        if event["kind"] == "round" and event["round"] >= 2 and not killed:
            proc = job_process(poc, kits.SERVER)
            killed.append(proc.pid)
            proc.kill()  # SIGKILL: no clean-up, no last word

    with pytest.raises(RemoteRunError, match=r"ended .* before the run did.*fedkit run --resume"):
        run_remote(config, admin_kit=poc.admin_kit, trackers=[store], progress=False, on_event=kill_server_job)
    (stored,) = store.list_runs()
    assert stored["status"] == "failed" and killed
    poc.kill(kits.SERVER, signal.SIGTERM)
    poc.start(kits.SERVER)
    poc.wait_ready()
    run_id = stored["run_id"]
    assert not capsys.readouterr().out  # run_remote prints nothing on stdout (its notes go to stderr)
    assert main(["run", "--resume", run_id, "--admin-kit", str(poc.admin_kit), "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "finished" and summary["run_id"] == run_id
    stored = store.get(run_id)
    simulation = fedkit.run(
        fedkit.RunConfig(rounds=RESUME_ROUNDS, strategy="scaffold", secure_aggregation=True),
        trackers=[],
        progress=False,
    )
    assert_same_final(stored["summary"], simulation.summary())
    np.testing.assert_allclose(stored["params"], simulation.params, atol=TOLERANCE, rtol=0)
    assert sorted({r["round"] for r in store.history(run_id)}) == list(range(RESUME_ROUNDS + 1))
    server_store = poc.kits / kits.SERVER / STORE
    server = LocalStore(server_store)
    assert store.audit_log(run_id) == server.audit_log(run_id)  # the copy here is the server's log
    kinds = [r["kind"] for r in store.audit_log(run_id)]
    assert kinds[0] == "start" and "resume" in kinds and kinds[-1] == "end"
    assert "FLARE submitter" in store.audit_log(run_id)[0]["user"]
    capsys.readouterr()
    assert main(["audit", "verify", run_id]) == 0  # this machine's verified copy
    assert main(["audit", "verify", run_id, "--store", str(server_store)]) == 0  # the server's own log
    here, there = capsys.readouterr().out.splitlines()
    assert here == there and f"{len(kinds)} record(s)" in here  # the same chain, to its head hash
    assert audit.verify(server.audit_log(run_id), run_id, ended=True) == store.verify_audit(run_id)[0]


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
