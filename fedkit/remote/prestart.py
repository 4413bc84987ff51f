"""FLARE job processes started ahead of their job: a site's next job process has its imports done before the job comes.

FLARE starts a fresh Python process for every job on the server and on each site
(``python -m nvflare.private.fed.app.client.worker_process ...``). Before it can say hello, that process
imports NVIDIA FLARE, its transport drivers and serializers: about 0.65 s of CPU each on a quiet 2-core
machine, five processes at once for a 4-site federation on one machine, all on the path from a job's
submission to its first round. :class:`PrestartedClientLauncher` and :class:`PrestartedServerLauncher` are
FLARE job launchers (the ``process_launcher`` component of a kit's ``local/resources.json``, which
:func:`fedkit.remote.kits.provision` points at them) that keep one such process ready, imports done,
waiting on a pipe. A job is handed to it as the exact command and environment FLARE's own
launcher would have started (the spare sets them and runs the job module as ``__main__``), so the
job process is the same program with the same arguments, a child of the same parent in its own session;
the next spare starts once that job process has exited, so it never competes with a starting job.
A job that comes while no spare waits (the job before has not exited yet, e.g. a run submitted right after
another, or the spare died) goes to a spare started for it there and then: the same imports FLARE's own
start would do, plus fedkit's tuning (:mod:`fedkit.remote.tuning`), which FLARE's own start lacks. Only a
command a spare cannot run (another interpreter or module) is started FLARE's way.

The spare itself is :mod:`fedkit.remote.spare` (``python -m fedkit.remote.spare <job module>``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import subprocess
import sys
import threading

from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import FLContextKey, JobConstants
from nvflare.apis.fl_context import FLContext
from nvflare.apis.job_launcher_spec import JobHandleSpec
from nvflare.apis.workspace import Workspace
from nvflare.app_common.job_launcher.client_process_launcher import ClientProcessJobLauncher
from nvflare.app_common.job_launcher.process_launcher import ProcessHandle
from nvflare.app_common.job_launcher.server_process_launcher import ServerProcessJobLauncher
from nvflare.utils.job_launcher_utils import add_custom_dir_to_path, get_credential_env
from nvflare.utils.process_utils import ProcessAdapter

from fedkit.remote import spare, tuning

_log = logging.getLogger(__name__)


class _Prestarted:
    """One ready spare at a time for job ``module``, replaced when the last job launched has exited."""

    def __init__(self, module: str) -> None:
        self.module = module
        self._lock = threading.Lock()
        self._spare: subprocess.Popen | None = None
        self._launched = 0  # jobs launched so far: only the newest job's exit starts the next spare

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(  # noqa: S603 - this interpreter, our module
            [sys.executable, "-m", spare.__name__, self.module],
            stdin=subprocess.PIPE,
            start_new_session=True,  # as FLARE's posix_spawn(setsid=True): the job is its own process group
            env=os.environ.copy(),
        )

    def start_spare(self) -> None:
        """Start a spare for the next job (once: a ready one is kept)."""
        with self._lock:
            if self._spare is not None and self._spare.poll() is None:
                return
            self._spare = self._spawn()

    def take(self, argv: list[str]) -> subprocess.Popen | None:
        """A spare for ``argv`` if a spare can run it (this interpreter, ``-m`` our module), else None.

        The waiting spare when there is one alive; else one started now (its imports are those the job
        would do at its start anyway).
        """
        if argv[:3] != [sys.executable, "-m", self.module]:
            return None
        with self._lock:
            process, self._spare = self._spare, None
            self._launched += 1
        if process is None or process.poll() is not None:
            process = self._spawn()
        return process

    def retire(self) -> None:
        """Close the waiting spare's pipe: it exits without running anything."""
        with self._lock:
            process, self._spare = self._spare, None
        if process is not None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()

    def launch(self, argv: list[str], env: dict[str, str]) -> JobHandleSpec | None:
        """Hand ``argv``/``env`` to a spare (:meth:`take`); None if none can run it (FLARE's launch then)."""
        process = self.take(argv)
        if process is None:
            return None
        request = json.dumps({"argv": argv, "env": env, "cwd": os.getcwd()})
        try:
            assert process.stdin is not None  # Popen(stdin=PIPE)
            process.stdin.write(request.encode() + b"\n")
            process.stdin.close()
        except OSError:  # it died meanwhile
            process.kill()
            process.wait()
            return None
        _log.info("Launched the job in pre-started process ID: %s", process.pid)
        return ProcessHandle(process_adapter=ProcessAdapter(process=process))

    def replace_after(self, pid: int) -> None:
        """Start the next spare once job process ``pid`` has exited (in a thread; it never reaps ``pid``).

        Unless a job was launched after it: that job's own exit starts the next spare, so no spare warms up
        beside a running job.
        """
        with self._lock:
            launched = self._launched
        threading.Thread(target=self._replace_after, args=(pid, launched), daemon=True).start()

    def _replace_after(self, pid: int, launched: int) -> None:
        waitid = getattr(os, "waitid", None)
        if waitid is None:  # no way to wait without reaping: FLARE's poll must see the status; no more spares
            return
        with contextlib.suppress(ChildProcessError):  # reaped already by FLARE's poll: it has exited
            waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        with self._lock:
            newest = launched == self._launched
        if newest:
            self.start_spare()


def job_env(job_meta: dict, fl_ctx: FLContext) -> dict[str, str]:
    """The environment FLARE's ``ProcessJobLauncher`` gives a job process (app custom folder, job credentials).

    Parameters
    ----------
    job_meta
        The job's meta data (its id).
    fl_ctx
        The launch's FLARE context (workspace, job process arguments).
    """
    env = os.environ.copy()
    workspace: Workspace = fl_ctx.get_prop(FLContextKey.WORKSPACE_OBJECT)
    custom = workspace.get_app_custom_dir(job_meta.get(JobConstants.JOB_ID))
    if custom != "":
        add_custom_dir_to_path(custom, env)
    env.update(get_credential_env(fl_ctx.get_prop(FLContextKey.JOB_PROCESS_ARGS) or {}))
    return env


class _PrestartMixin:
    """``launch_job`` through a spare process; FLARE's own launch for a command a spare cannot run.

    The first spare starts with the site (FLARE's ``SYSTEM_START``, fired in the site's parent process only,
    not in job processes, which read the same resources), each next one when the newest job has exited.
    """

    MODULE = ""

    def __init__(self) -> None:
        super().__init__()
        self._prestarted = _Prestarted(self.MODULE)

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        """Register as the job launcher (FLARE's), start the first spare with the site, retire it at its end."""
        super().handle_event(event_type, fl_ctx)  # type: ignore[misc]
        if event_type == EventType.SYSTEM_START:
            self._prestarted.start_spare()
        elif event_type == EventType.SYSTEM_END:
            self._prestarted.retire()

    def launch_job(self, job_meta: dict, fl_ctx: FLContext) -> JobHandleSpec:
        """Start the job process of ``job_meta`` in a spare (:meth:`_Prestarted.take`), else as FLARE's does."""
        argv = shlex.split(self.get_command(job_meta, fl_ctx), True)  # type: ignore[attr-defined]
        handle = self._prestarted.launch(argv, job_env(job_meta, fl_ctx))
        if handle is None:
            handle = super().launch_job(job_meta, fl_ctx)  # type: ignore[misc]
        self._prestarted.replace_after(handle.adapter.pid)
        return handle


class PrestartedClientLauncher(_PrestartMixin, ClientProcessJobLauncher):
    """A site's job launcher: FLARE's ``ClientProcessJobLauncher`` with the job process started ahead."""

    MODULE = "nvflare.private.fed.app.client.worker_process"


class PrestartedServerLauncher(_PrestartMixin, ServerProcessJobLauncher):
    """The server's job launcher: FLARE's ``ServerProcessJobLauncher`` with the job process started ahead.

    It also starts a submitted job without the scheduler's one-second wait
    (:func:`fedkit.remote.tuning.wake_scheduler`).
    """

    MODULE = "nvflare.private.fed.app.server.runner_process"

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        """As the mixin's; also wakes the job scheduler at the start (set up) and when a job is submitted.

        Parameters
        ----------
        event_type
            FLARE's event.
        fl_ctx
            Its context.
        """
        super().handle_event(event_type, fl_ctx)
        if event_type == EventType.SYSTEM_START:
            tuning.wake_scheduler()
        elif event_type == EventType.SUBMIT_JOB:
            tuning.job_submitted()
