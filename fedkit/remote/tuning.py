"""NVIDIA FLARE 2.9's fixed waits on a job's way to its first round, shortened in the processes fedkit starts.

FLARE sizes some waits for a federation across a WAN and hard-codes them (FLARE 2.9.0, checked by
``tests/test_tuning.py``). On a loopback or LAN federation they are most of the time from a job's
submission to its first round, and one of its three round trips per task:

- **The server's job scheduler** looks for submitted jobs once a second (``time.sleep(1.0)`` in
  ``JobRunner.run``): a job waits up to a second before it is deployed. :func:`wake_scheduler` makes that
  wait end when a job is submitted (FLARE's ``SUBMIT_JOB`` event, which fedkit's server job launcher
  forwards to :func:`job_submitted`), then checks every :data:`SHORT_WAIT` s for :data:`BUSY_WINDOW` s
  (the job is stored after the event), and once a second again after that.
- **A site's job process** tells its site it has started and retries every 0.5 s
  (``ClientAppRunner.notify_job_status``; the first try usually finds its connection not up yet), then
  sleeps 0.5 s before each attempt to sync with the server's job (``ClientRunner.init_run``).
  :func:`shorten_site_waits` makes both :data:`SHORT_WAIT` s.
- **Every job process parses its participant's private key** at least twice (FLARE's
  ``CredentialManager`` loads it for its cell cipher, with cryptography's full RSA key check: ~60 ms each
  on a quiet machine). :func:`preload_keys` parses the kit's keys in the spare, before the job comes, and
  hands FLARE's credential manager the same key objects.
- **Every job process waits 3 s after its run** before its clean-up (``MainProcessMonitor.run``'s
  ``shutdown_grace_time``, "let pending activities finish"; the end-of-run sequence has finished by
  then). The next job's process starts ahead only once this one has exited, so a run submitted right
  after another found no spare ready and started five fresh processes. :func:`shorten_job_exit` makes
  a job process's grace :data:`SHORT_GRACE` s.
- **Before sending each task result**, a site's job asks the server whether the task is still
  waiting (``ClientRunner._check_task_once``: a round trip, "to fight against unstable network
  connections"). :func:`send_results_unchecked_first` sends the first attempt of each result without
  it; if that send fails, every retry checks first as FLARE does.

Only fedkit's job launchers and job processes (:mod:`fedkit.remote.prestart`, :mod:`fedkit.remote.spare`)
apply these; FLARE's own launchers (``start_poc(prestart=False)``) keep FLARE's waits. Each function
checks that FLARE's module still looks as expected and otherwise leaves it alone (returns False, or no keys).
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

SHORT_WAIT = 0.05
"""Seconds of each shortened wait."""
BUSY_WINDOW = 3.0
"""Seconds after a job's submission during which the server's scheduler checks every :data:`SHORT_WAIT` s."""
SCHEDULER_WAIT = 1.0
"""FLARE 2.9's wait between the job scheduler's checks (``JobRunner.run``) and finished-job checks."""
SITE_WAIT = 0.5
"""FLARE 2.9's wait between a site job's start notifications and before each sync with the server's job."""
SHUTDOWN_GRACE = 3
"""FLARE 2.9's wait of every FLARE process between its end and its clean-up (``MainProcessMonitor.run``'s default)."""
SHORT_GRACE = 0.5
"""The shortened grace of a job process (its run's end-of-run sequence has finished by then)."""


class ShortWaits:
    """Stands in for the ``time`` module inside one FLARE module: sleeps of the listed lengths are shortened.

    Every other attribute is the ``time`` module's.

    Parameters
    ----------
    lengths
        Seconds FLARE sleeps -> seconds to sleep instead.
    """

    def __init__(self, lengths: Mapping[float, float]) -> None:
        self.lengths = dict(lengths)

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or its shortened length when it is one of ``lengths``.

        Parameters
        ----------
        seconds
            What FLARE asks for.
        """
        time.sleep(self.lengths.get(seconds, seconds))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class WakeOnSubmit(ShortWaits):
    """Stands in for ``time`` in FLARE's job runner: its one-second waits end when a job is submitted.

    For :data:`BUSY_WINDOW` s after :meth:`submitted` they last :data:`SHORT_WAIT` s (the scheduler looks
    again soon; the job is stored just after the event), then a second again.
    """

    def __init__(self) -> None:
        super().__init__({})
        self._wake = threading.Event()
        self._busy_until = 0.0

    def submitted(self) -> None:
        """A job was submitted: end the current wait and check often for a while."""
        self._busy_until = time.monotonic() + BUSY_WINDOW
        self._wake.set()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (FLARE's one second), or less when a job was just submitted.

        Parameters
        ----------
        seconds
            What FLARE asks for (other lengths than :data:`SCHEDULER_WAIT` are slept as they are).
        """
        if seconds != SCHEDULER_WAIT:
            time.sleep(seconds)
        elif time.monotonic() < self._busy_until:
            time.sleep(SHORT_WAIT)
        elif self._wake.wait(seconds):
            self._wake.clear()


def _stands_in(module: ModuleType, clock: ShortWaits) -> bool:
    """Put ``clock`` in place of ``module``'s ``time`` (once); False when ``module`` does not use ``time`` so."""
    current = getattr(module, "time", None)
    if isinstance(current, ShortWaits):
        return True
    if current is not time:
        return False
    module.time = clock  # type: ignore[attr-defined]
    return True


def _sleeps(function: Callable[..., Any], seconds: float | str) -> bool:
    """Whether ``function``'s source calls ``time.sleep(seconds)`` (FLARE's code as this module expects it;
    ``seconds`` a number, or the name of the variable it sleeps)."""
    try:
        return f"time.sleep({seconds})" in inspect.getsource(function)
    except (OSError, TypeError):
        return False


_SCHEDULER: WakeOnSubmit | None = None


def wake_scheduler() -> bool:
    """Make the server's job scheduler (in this process) start a submitted job without its one-second wait.

    Call in the server's parent process; :func:`job_submitted` then wakes it. False when FLARE's job
    runner is not as expected (left alone).
    """
    global _SCHEDULER
    from nvflare.private.fed.server import job_runner

    if not _sleeps(job_runner.JobRunner.run, SCHEDULER_WAIT):
        return False
    current = getattr(job_runner, "time", None)
    clock = current if isinstance(current, WakeOnSubmit) else WakeOnSubmit()
    if not _stands_in(job_runner, clock):
        return False
    _SCHEDULER = clock
    return True


def job_submitted() -> None:
    """A job was submitted to this server: wake its scheduler (when :func:`wake_scheduler` is in place)."""
    if _SCHEDULER is not None:
        _SCHEDULER.submitted()


def shorten_site_waits() -> bool:
    """Make a site job process's start notifications and syncs with the server's job retry every SHORT_WAIT s.

    Call in a site's job process before FLARE's job module runs. False when FLARE's code is not as expected
    (left alone).
    """
    from nvflare.private.fed.client import client_app_runner, client_runner

    expected = _sleeps(client_app_runner.ClientAppRunner.notify_job_status, SITE_WAIT) and _sleeps(
        client_runner.ClientRunner.init_run, SITE_WAIT
    )
    if not expected:
        return False
    short = ShortWaits({SITE_WAIT: SHORT_WAIT})
    return _stands_in(client_app_runner, short) and _stands_in(client_runner, short)


def send_results_unchecked_first() -> bool:
    """Send each task result's first attempt without FLARE's task-check round trip (retries check as before).

    Call in a site's job process before FLARE's job module runs. False when FLARE's code is not as expected.
    """
    from nvflare.private.fed.client import client_runner

    runner = client_runner.ClientRunner
    check = runner._check_task_once
    if getattr(check, "fedkit_unchecked_first", False):
        return True
    ok = getattr(client_runner, "_TASK_CHECK_RESULT_OK", None)
    try:
        calls_check = "self._check_task_once(task_id, fl_ctx)" in inspect.getsource(runner._try_send_result_once)
    except (OSError, TypeError):
        calls_check = False
    if ok is None or not calls_check:
        return False

    @functools.wraps(check)
    def unchecked_first(self: Any, task_id: str, fl_ctx: Any) -> int:
        sent: set[str] = self.__dict__.setdefault("_fedkit_sent_unchecked", set())
        if task_id not in sent:
            sent.add(task_id)
            return ok
        return check(self, task_id, fl_ctx)

    unchecked_first.fedkit_unchecked_first = True  # type: ignore[attr-defined]
    runner._check_task_once = unchecked_first  # type: ignore[method-assign]
    return True


class KeyCache:
    """Stands in for cryptography's ``serialization`` module inside FLARE's credential manager: each PEM private
    key is parsed once (the same bytes give the same key object; RSA key objects are immutable).

    Every other attribute is the ``serialization`` module's.
    """

    def __init__(self) -> None:
        from cryptography.hazmat.primitives import serialization

        self._serialization = serialization
        self._keys: dict[tuple[bytes, bytes | None], Any] = {}

    def load_pem_private_key(self, data: bytes, password: bytes | None = None, **kwargs: Any) -> Any:
        """The key in ``data``, parsed at its first use (options other than ``password`` are not cached).

        Parameters
        ----------
        data
            The PEM bytes.
        password
            Its password (None: unencrypted).
        **kwargs
            cryptography's other options (parsed each time).
        """
        if kwargs:
            return self._serialization.load_pem_private_key(data, password, **kwargs)
        found = self._keys.get((bytes(data), password))
        if found is None:
            found = self._keys[(bytes(data), password)] = self._serialization.load_pem_private_key(data, password)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._serialization, name)


def preload_keys(startup: str | Path) -> int:
    """Parse the private keys in ``startup`` (``*.key``, unencrypted PEM) now, for FLARE's credential manager.

    Call in a job process before FLARE's job module runs (the spare's folder is its kit's). Returns how many
    keys were parsed; 0 when FLARE's credential manager is not as expected (left alone) or none parse.

    Parameters
    ----------
    startup
        The participant's ``startup`` folder.
    """
    from cryptography.hazmat.primitives import serialization
    from nvflare.fuel.f3.cellnet import credential_manager

    current = getattr(credential_manager, "serialization", None)
    if isinstance(current, KeyCache):
        cache = current
    elif current is serialization:
        cache = KeyCache()
    else:  # not the module this expects: left alone
        return 0
    parsed = 0
    for path in sorted(Path(startup).glob("*.key")):
        try:
            cache.load_pem_private_key(path.read_bytes(), None)
        except (OSError, ValueError, TypeError):
            continue
        parsed += 1
    credential_manager.serialization = cache  # type: ignore[attr-defined]
    return parsed


def shorten_job_exit() -> bool:
    """Make this job process's wait between its run's end and its clean-up :data:`SHORT_GRACE` s (FLARE's: 3 s).

    Call in a job process before FLARE's job module runs. False when FLARE's code is not as expected (left
    alone).
    """
    from nvflare.fuel.f3 import mpm

    monitor = mpm.MainProcessMonitor
    default = inspect.signature(monitor.run).parameters.get("shutdown_grace_time")
    if (
        default is None
        or default.default != SHUTDOWN_GRACE
        or not _sleeps(monitor._start_shutdown, "shutdown_grace_time")
    ):
        return False
    return _stands_in(mpm, ShortWaits({SHUTDOWN_GRACE: SHORT_GRACE}))


def warm_inspect() -> None:
    """Fill ``inspect``'s module-by-file cache now: FLARE's job logger calls ``inspect.stack()`` at job start.

    The first call walks every loaded module (about 50 ms of CPU with FLARE's imports; later calls ~1 ms).
    """
    inspect.stack()


def tune_job_process(module: str) -> list[str]:
    """Apply what fits a job process of FLARE's ``module``; the names of what was applied.

    Parameters
    ----------
    module
        The job module FLARE runs (the site's worker process or the server's runner process).
    """
    warm_inspect()
    applied = ["warm_inspect"]
    if preload_keys(Path.cwd() / "startup"):
        applied.append("preload_keys")
    if shorten_job_exit():
        applied.append("shorten_job_exit")
    if module == "nvflare.private.fed.app.client.worker_process":
        applied += [f.__name__ for f in (shorten_site_waits, send_results_unchecked_first) if f()]
    return applied
