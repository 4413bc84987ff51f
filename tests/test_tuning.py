"""FLARE's fixed waits shortened in fedkit's processes (fedkit.remote.tuning): FLARE's code still as expected, the
stand-ins' timing, and a site job process tuned as the spare tunes it (in a subprocess: the patches are global).

tests/test_remote.py runs real federations with these in place (fedkit's launchers are the kits' default).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("nvflare")

from fedkit.remote import tuning

pytestmark = pytest.mark.timeout(120)


def test_flares_code_still_has_the_waits_fedkit_shortens() -> None:
    """FLARE 2.9's job runner, site start-up and result sending are as fedkit.remote.tuning expects (an upgrade
    that changes them must be looked at: the tuning would silently do nothing)."""
    from nvflare.private.fed.client import client_app_runner, client_runner
    from nvflare.private.fed.server import job_runner

    assert tuning._sleeps(job_runner.JobRunner.run, tuning.SCHEDULER_WAIT)
    assert tuning._sleeps(client_app_runner.ClientAppRunner.notify_job_status, tuning.SITE_WAIT)
    assert tuning._sleeps(client_runner.ClientRunner.init_run, tuning.SITE_WAIT)
    assert client_runner._TASK_CHECK_RESULT_OK == 0
    from nvflare.fuel.f3 import mpm

    assert tuning._sleeps(mpm.MainProcessMonitor._start_shutdown, "shutdown_grace_time")
    assert not tuning._sleeps(client_runner.ClientRunner.init_run, 0.25)  # the check can fail


def test_short_waits_shorten_only_the_listed_lengths_and_pass_the_rest_of_time_through() -> None:
    clock = tuning.ShortWaits({0.5: 0.01})
    t0 = time.perf_counter()
    clock.sleep(0.5)
    shortened = time.perf_counter() - t0
    t0 = time.perf_counter()
    clock.sleep(0.12)
    kept = time.perf_counter() - t0
    assert shortened < 0.25
    assert kept >= 0.12
    assert abs(clock.time() - time.time()) < 1.0
    assert clock.monotonic() <= time.monotonic()


def test_the_scheduler_wait_ends_at_a_submission_then_stays_short_for_a_while(monkeypatch) -> None:
    monkeypatch.setattr(tuning, "BUSY_WINDOW", 0.5)
    clock = tuning.WakeOnSubmit()
    t0 = time.perf_counter()
    clock.sleep(tuning.SCHEDULER_WAIT)  # nothing submitted: the whole second
    assert time.perf_counter() - t0 >= 0.95

    woke: list[float] = []
    sleeper = threading.Thread(
        target=lambda: (clock.sleep(tuning.SCHEDULER_WAIT), woke.append(time.perf_counter())), daemon=True
    )
    start = time.perf_counter()
    sleeper.start()
    time.sleep(0.1)
    clock.submitted()
    sleeper.join(5)
    assert woke and woke[0] - start < 0.6  # woken at the submission, not after the second

    t0 = time.perf_counter()
    clock.sleep(tuning.SCHEDULER_WAIT)  # inside the busy window: short
    assert time.perf_counter() - t0 < 0.4
    time.sleep(0.5)
    t0 = time.perf_counter()
    clock.sleep(tuning.SCHEDULER_WAIT)  # window over: a second again
    assert time.perf_counter() - t0 >= 0.95


def test_wake_scheduler_puts_one_stand_in_in_flares_job_runner(monkeypatch) -> None:
    from nvflare.private.fed.server import job_runner

    monkeypatch.setattr(job_runner, "time", time)
    monkeypatch.setattr(tuning, "_SCHEDULER", None)
    assert tuning.wake_scheduler()
    clock = job_runner.time
    assert isinstance(clock, tuning.WakeOnSubmit)
    assert tuning.wake_scheduler() and job_runner.time is clock  # a second call keeps it
    tuning.job_submitted()
    assert clock._wake.is_set()


SITE_JOB = textwrap.dedent(
    """
    import json, sys, time
    from fedkit.remote.tuning import tune_job_process
    from nvflare.private.fed.client import client_app_runner, client_runner

    calls = []
    client_runner.ClientRunner._check_task_once = lambda self, task_id, fl_ctx: calls.append(task_id) or 7
    applied = tune_job_process(sys.argv[1])
    runner = object.__new__(client_runner.ClientRunner)
    first = runner._check_task_once("t1", None)
    again = runner._check_task_once("t1", None)
    other = runner._check_task_once("t2", None)
    t0 = time.perf_counter()
    client_runner.time.sleep(0.5)
    client_app_runner.time.sleep(0.5)
    slept = time.perf_counter() - t0
    from nvflare.fuel.f3 import mpm
    t0 = time.perf_counter()
    mpm.time.sleep(3)  # the job process's grace after its run
    grace = time.perf_counter() - t0
    from nvflare.fuel.f3.cellnet import credential_manager
    pem = open("startup/site.key", "rb").read()
    t0 = time.perf_counter()
    key = credential_manager.serialization.load_pem_private_key(pem, password=None)
    again_key = credential_manager.serialization.load_pem_private_key(pem, password=None)
    print(json.dumps({"applied": applied, "first": first, "again": again, "other": other, "calls": calls,
                      "slept": slept, "key_seconds": time.perf_counter() - t0, "same_key": key is again_key,
                      "key_size": key.key_size, "grace": grace}))
    """
)


def tuned(module: str, kit: Path) -> dict:
    """What ``tune_job_process(module)`` applied in a fresh process in ``kit``, and how what it tuned behaves."""
    out = subprocess.run(
        [sys.executable, "-c", SITE_JOB, module], capture_output=True, text=True, check=True, timeout=90, cwd=kit
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    """A folder with a ``startup/site.key`` (a fresh 2048-bit RSA key, unencrypted PEM) and a file that is no key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    root = tmp_path_factory.mktemp("kit")
    (root / "startup").mkdir()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    (root / "startup" / "site.key").write_bytes(pem)
    (root / "startup" / "broken.key").write_text("not a key")
    return root


def test_a_site_job_process_sends_each_result_first_unchecked_and_waits_short(kit) -> None:
    site = tuned("nvflare.private.fed.app.client.worker_process", kit)
    assert site["applied"] == [
        "warm_inspect",
        "preload_keys",
        "shorten_job_exit",
        "shorten_site_waits",
        "send_results_unchecked_first",
    ]
    assert site["grace"] < 1.5  # FLARE's 3 s
    assert site["same_key"] and site["key_size"] == 2048
    assert site["key_seconds"] < 0.02  # parsed ahead (a 2048-bit RSA key takes ~50 ms to check)
    assert (site["first"], site["other"]) == (0, 0)  # first attempts: sent without a check
    assert site["again"] == 7 and site["calls"] == ["t1"]  # a retry checks, through FLARE's method
    assert site["slept"] < 0.5  # two of FLARE's 0.5 s waits

    server = tuned("nvflare.private.fed.app.server.runner_process", kit)
    assert server["applied"] == ["warm_inspect", "preload_keys", "shorten_job_exit"]
    assert (server["first"], server["again"]) == (7, 7) and server["calls"] == ["t1", "t1", "t2"]
    assert server["slept"] >= 1.0
