"""The remote engine's logic without FLARE: sites answered in-process, through the same wire encoding.

Every strategy family and personalization must give the simulation's run exactly (local updates are
bit-identical; final metrics agree to 1e-6), and a site that stops answering is dropped, noted, and
rejoins when it answers again.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fedkit
from fedkit.errors import RemoteRunError
from fedkit.privacy.identity import ephemeral_identities
from fedkit.remote import wire
from fedkit.remote.server import RelayTracker, serve
from fedkit.remote.silo import SiloWorker
from fedkit.runner import select_silos
from fedkit.tracking.local import LocalStore

TOLERANCE = 1e-6
HOSPITALS = ("cleveland", "hungarian", "switzerland", "va")


def transport_for(workers: dict[str, SiloWorker], down: set[str]):
    def transport(task, payload, sites, need):  # payloads and replies hold wire-packed arrays, as over FLARE
        return {s: workers[s].handle(task, payload) for s in sites if s not in down}

    return transport


SIGNERS, VERIFIER = ephemeral_identities(HOSPITALS)  # the sites' identities; the server checks with VERIFIER


def site_workers(kind=SiloWorker, state=None, **overrides) -> dict[str, SiloWorker]:
    """One worker per hospital with its own identity for secure aggregation (``overrides``: worker class by site).

    ``state``: a folder under which each site keeps its own state file (``state/<site>``).
    """
    return {
        h: overrides.get(h, kind)(h, identity=(SIGNERS[h], VERIFIER), state_dir=None if state is None else state / h)
        for h in HOSPITALS
    }


def remote_run(
    config: fedkit.RunConfig,
    down_by_round=None,
    min_silos=1,
    workers=None,
    relay=None,
    down_at_start=(),
    **serve_options,
):
    """The server's run (:func:`serve`, as the FLARE controller calls it) over in-process sites.

    ``down_at_start``: sites that do not answer until round 0 has been evaluated (they miss hello).
    """
    workers = workers or site_workers()
    down: set[str] = set(down_at_start)
    relay = relay or RelayTracker()

    def chaos(event) -> None:
        down.clear()
        down.update((down_by_round or {}).get(event.round + 1, ()))

    transport = transport_for(workers, down)
    options = {"verifier": VERIFIER, **serve_options}
    result, engine = serve(transport, config, list(HOSPITALS), relay, min_silos=min_silos, callbacks=[chaos], **options)
    return result, engine, relay


@pytest.mark.parametrize(
    "fields",
    [
        {"strategy": "fedavg"},
        {"strategy": "fedprox", "mu": 0.01},
        {"strategy": "scaffold"},
        {"strategy": "fedadam", "lr": 0.01},
        {"strategy": "local"},
        {"personalize": "fedper", "model": "mlp"},
        {"personalize": "finetune", "local_epochs": 1},
        {"split": "hospitals", "optimizer": "adam", "lr": 0.01},
    ],
    ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()),
)
@pytest.mark.parametrize("secure", [True, False], ids=["secure-aggregation", "in-the-clear"])
def test_remote_engine_equals_the_simulation(fields, secure) -> None:
    config = fedkit.RunConfig(**{"rounds": 3, **fields, "secure_aggregation": secure})
    simulation = fedkit.run(config, trackers=[], progress=False)  # the same view: no update norm under secure sums
    remote, _, _ = remote_run(
        fedkit.RunConfig(**{**config.to_dict(), "engine": "remote", "secure_aggregation": secure})
    )
    assert remote.scored == simulation.scored
    np.testing.assert_allclose(remote.params, simulation.params, atol=TOLERANCE, rtol=0)
    assert len(remote.records) == len(simulation.records)
    for a, b in zip(remote.records, simulation.records, strict=True):
        assert {k: a[k] for k in a if k != "value"} == {k: b[k] for k in b if k != "value"}
        assert (np.isnan(a["value"]) and np.isnan(b["value"])) or abs(a["value"] - b["value"]) <= TOLERANCE, (a, b)


def test_a_silent_site_is_dropped_noted_and_rejoins() -> None:
    config = fedkit.RunConfig(engine="remote", rounds=5)
    result, engine, relay = remote_run(config, {2: {"va"}, 3: {"va"}}, min_silos=2)
    trained = {(r["round"], r["silo"]) for r in result.records if r["model"] == "local" and r["split"] == "train"}
    assert (2, "va") not in trained and (3, "va") not in trained and (4, "va") in trained
    assert engine.notes == [
        "Round 2: silo 'va' dropped out (training: no reply in time); the round went on with 3 of 4 silos.",
        "Round 4: silo 'va' rejoined (training, key advertising).",  # its first step: the keys of round 4's sum
    ]
    end = relay.since(0)[-1]
    assert end["kind"] == "end" and end["summary"]["notes"][-2:] == engine.notes


def recording(workers: dict[str, SiloWorker], tasks: list[tuple[str, dict]]):
    """A transport over ``workers`` that appends each task's name and payload to ``tasks``."""
    base = transport_for(workers, set())

    def transport(task, payload, sites, need):
        tasks.append((task, payload))
        return base(task, payload, sites, need)

    return transport


@pytest.mark.parametrize(
    "fields",
    [{"strategy": "fedavg"}, {"strategy": "scaffold", "fraction": 0.5}, {"strategy": "fedprox", "mu": 0.1}],
    ids=["fedavg", "scaffold-half-the-silos", "fedprox"],
)
def test_in_the_clear_each_evaluation_carries_the_next_rounds_training(fields) -> None:
    """One task a round: round r's evaluation and round r + 1's training (of the silos it samples) go together,
    and the run is the simulation's."""
    config = fedkit.RunConfig(**{"rounds": 3, **fields, "secure_aggregation": False})
    simulation = fedkit.run(config, trackers=[], progress=False)
    tasks: list[tuple[str, dict]] = []
    workers = site_workers()
    remote, _ = serve(
        recording(workers, tasks),
        fedkit.RunConfig(**{**config.to_dict(), "engine": "remote"}),
        list(HOSPITALS),
        RelayTracker(),
    )
    assert [t for t, _ in tasks] == [wire.HELLO, wire.EVALUATE_FIT, wire.EVALUATE_FIT, wire.EVALUATE_FIT, wire.EVALUATE]
    for server_round, (_, payload) in enumerate(tasks[1:4], start=1):
        chosen = select_silos(HOSPITALS, config.fraction, config.seed, server_round)
        assert payload["round"] == server_round and payload["fit_sites"] == chosen
    np.testing.assert_allclose(remote.params, simulation.params, atol=TOLERANCE, rtol=0)
    for a, b in zip(remote.records, simulation.records, strict=True):
        assert (np.isnan(a["value"]) and np.isnan(b["value"])) or abs(a["value"] - b["value"]) <= TOLERANCE, (a, b)


@pytest.mark.parametrize(
    "fields",
    [
        {"secure_aggregation": True},
        {"secure_aggregation": False, "dp": "dpsgd", "dp_noise_multiplier": 0.5},
        {"secure_aggregation": False, "personalize": "fedper", "model": "mlp"},
    ],
    ids=["secure-aggregation", "site-level-dp", "personal-model-scored"],
)
def test_training_goes_alone_under_secure_sums_site_level_dp_and_personal_scores(fields) -> None:
    """Secure sums set up per task; site-level DP would spend privacy on a training the run might drop; a personal
    model evaluated after the global one must not have trained the next round yet."""
    tasks: list[tuple[str, dict]] = []
    config = fedkit.RunConfig(**{"rounds": 2, **fields, "engine": "remote"})
    serve(recording(site_workers(), tasks), config, list(HOSPITALS), RelayTracker(), verifier=VERIFIER)
    names = [t for t, _ in tasks]
    assert wire.EVALUATE_FIT not in names and names.count(wire.FIT) == 2


def test_a_stop_drops_the_training_sent_ahead_and_the_resumed_run_is_the_uninterrupted_one(tmp_path) -> None:
    """The Stop comes while round 1's evaluation carries round 2's training: the run stops after round 1, and its
    resume (the sites' state reloaded from their own files, which hold round 2 too) ends as a run never stopped."""
    config = fedkit.RunConfig(engine="remote", rounds=4, strategy="scaffold", secure_aggregation=False)
    whole, _, _ = remote_run(config, store=LocalStore(tmp_path / "whole.sqlite"))
    store, stop = LocalStore(tmp_path / "server.sqlite"), {"asked": False}
    workers = site_workers(state=tmp_path / "sites")
    base = transport_for(workers, set())

    def transport(task, payload, sites, need):
        stop["asked"] |= task == wire.EVALUATE_FIT and payload["round"] == 2
        return base(task, payload, sites, need)

    stopped, _ = serve(
        transport, config, list(HOSPITALS), RelayTracker(), store=store, should_stop=lambda: stop["asked"]
    )
    assert stopped.status == "stopped" and max(r["round"] for r in stopped.records) == 1
    assert workers["va"].state.rounds(stopped.run_id) == [1, 2]  # round 2 trained ahead, then dropped
    resumed, _, _ = remote_run(
        config, workers=site_workers(state=tmp_path / "sites"), store=store, resume=stopped.run_id
    )
    assert resumed.status == "finished"
    np.testing.assert_allclose(resumed.params, whole.params, atol=TOLERANCE, rtol=0)
    assert len(resumed.records) == len(whole.records)


def test_too_few_sites_fail_the_run_with_the_names_of_those_that_answered() -> None:
    config = fedkit.RunConfig(engine="remote", rounds=3)
    with pytest.raises(RemoteRunError, match=r"only 1 of 4 silos answered training \(cleveland\).*min_silos=2"):
        remote_run(config, {2: {"hungarian", "switzerland", "va"}}, min_silos=2)


def test_a_site_without_a_data_file_says_how_to_give_it_one() -> None:
    with pytest.raises(fedkit.ConfigError, match=r"'site-1' has no data file: start it with `fedkit remote start"):
        SiloWorker("site-1").hello(
            {"config": fedkit.RunConfig(engine="remote").to_dict(), "silos": ["site-1"], "run": "r"}
        )


def test_remote_config_refuses_synthetic_splits_and_pooled() -> None:
    for fields in ({"split": "iid"}, {"strategy": "pooled"}):
        with pytest.raises(fedkit.ConfigError, match="engine='remote' runs one site per hospital"):
            fedkit.RunConfig(engine="remote", **fields)


def test_a_site_with_another_fedkit_version_is_refused_by_name() -> None:
    class OldSite(SiloWorker):
        def hello(self, payload):
            return {**super().hello(payload), "fedkit_version": "0.0.1"}

    workers = site_workers(va=OldSite)
    with pytest.raises(RemoteRunError, match=r"server runs fedkit .* but site\(s\) va run fedkit 0\.0\.1\. Install"):
        remote_run(fedkit.RunConfig(engine="remote", rounds=1), workers=workers)


# `fedkit remote start`'s supervisor running a child, in a process of its own (it installs signal handlers).
SUPERVISED = "import sys; from fedkit.remote.kits import supervise; sys.exit(supervise([sys.executable, '-c', {!r}]))"


def test_remote_start_passes_sigterm_on_at_once_and_returns_the_exit_code() -> None:
    import psutil

    done = subprocess.run([sys.executable, "-c", SUPERVISED.format("raise SystemExit(3)")], timeout=60, check=False)
    assert done.returncode == 3
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISED.format("import time; time.sleep(60)")])
    try:
        deadline = time.monotonic() + 30
        while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        (child,) = psutil.Process(proc.pid).children()
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # what a pod's PID 1 gets when the pod stops
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
        assert time.monotonic() - start < 5
        assert not child.is_running()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_relay_holds_the_job_until_a_poll_has_handed_out_every_event() -> None:
    """The job's process ends soon after its run: the end event must have left with a poll before (controller)."""
    import threading

    relay = RelayTracker()
    relay.add({"kind": "round", "round": 1})
    relay.since(0)  # the server's own look, not a poll
    assert relay.wait_delivered(0.05) is False
    assert relay.since(0, deliver=True) == [{"kind": "round", "round": 1}]
    assert relay.wait_delivered(0.05) is True
    relay.add({"kind": "end", "status": "finished"})
    t0 = time.monotonic()
    assert relay.wait_delivered(5.0, should_stop=lambda: True) is False  # an aborted job does not wait
    assert time.monotonic() - t0 < 1.0
    poll = threading.Timer(0.2, lambda: relay.since(1, deliver=True))
    poll.start()
    assert relay.wait_delivered(10.0) is True  # released by the poll, not by the timeout
    assert time.monotonic() - t0 < 5.0
    poll.join()
