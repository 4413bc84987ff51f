"""The FLARE controller of the server: fedkit's own round loop, with a :class:`~fedkit.remote.server.RemoteEngine`
moving the parameters.

The server keeps its own run store in its persistent workspace (``<server workspace>/fedkit/runs.sqlite``,
not the job's folder: a resumed run is a new FLARE job), with every round's checkpoint and the
run's audit log; the audit log names the FLARE job's submitter (authenticated by FLARE from the
admin certificate) as the one who started the run.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from nvflare.apis.client import Client
from nvflare.apis.controller_spec import Task
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.impl.controller import Controller
from nvflare.apis.shareable import Shareable
from nvflare.apis.signal import Signal

from fedkit.errors import FedkitError, RemoteRunError
from fedkit.remote import wire
from fedkit.remote.executor import PAYLOAD
from fedkit.remote.server import RelayTracker, serve

STORE = Path("fedkit") / "runs.sqlite"
"""The server's run store, under its workspace (FLARE's root folder of the server)."""
CONTROL_TOPIC = "fedkit.control"
"""App command the notebook sends to stop the run after the current round (the widget's Stop)."""
END_WAIT = 30.0
"""Seconds the job stays up after its run for the submitting machine to poll the last events (the end)."""
TENSOR_DOWNLOADS = "nvflare.app_opt.pt.tensor_downloader"
"""The module FLARE's server workflow imports at its end to cancel PyTorch tensor downloads (fedkit starts none)."""


class FedkitController(Controller):
    """Runs fedkit's round loop (:func:`fedkit.remote.server.serve`) for ``config`` on the sites of this job.

    Parameters
    ----------
    config
        The run's RunConfig fields.
    expected_sites
        The sites to wait for at the start (default: whoever is connected).
    min_silos
        Fewest sites a round may aggregate.
    straggler_timeout
        Seconds to wait for the other sites once ``min_silos`` replied (a site slower than that is dropped from the
        round).
    task_timeout
        Seconds before a task is given up entirely.
    join_timeout
        Seconds to wait for every expected site at the start.
    start_timeout
        The straggler timeout of the run's first task (reading each site's data): at least
        ``straggler_timeout``. It also covers each site's job process start (a fresh Python process that
        imports NVIDIA FLARE: seconds on a loaded machine), so a site whose job starts late is not left out
        of the whole run.
    task_check_period
        Seconds between FLARE's checks of the tasks.
    schema
        The federation's schema fingerprint (default: UCI's).
    run_id
        The fedkit run's id, chosen by the submitting machine (a new run).
    resume
        The id of a run in the server's store to continue from its last checkpoint.
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        expected_sites: list[str] | None = None,
        min_silos: int = 1,
        straggler_timeout: int = 10,
        task_timeout: int = 600,
        join_timeout: int = 60,
        start_timeout: int = 30,
        task_check_period: float = 0.005,
        schema: str = "",
        run_id: str = "",
        resume: str = "",
    ) -> None:
        super().__init__(task_check_period=task_check_period)
        self.config = config or {}
        self.expected_sites = expected_sites or []
        self.min_silos = min_silos
        self.straggler_timeout = straggler_timeout
        self.task_timeout = task_timeout
        self.join_timeout = join_timeout
        self.start_timeout = max(start_timeout, straggler_timeout)
        self.schema = schema
        self.run_id = run_id
        self.resume = resume
        self.relay = RelayTracker()
        self._stop = threading.Event()
        self._absent: set[str] = set()  # sites that did not answer their last task (waited for only briefly)

    def set_communicator(self, communicator: Any) -> None:
        """Attach FLARE's communicator and make it check tasks every ``task_check_period`` seconds.

        FLARE 2.9's ``Controller.set_communicator`` sets ``communicator.task_check_period`` while the
        server communicator sleeps on ``_task_check_period`` (default 0.2 s), so both are set here.

        Parameters
        ----------
        communicator
            FLARE's server communicator.
        """
        super().set_communicator(communicator)
        if hasattr(communicator, "_task_check_period"):
            communicator._task_check_period = self._task_check_period

    def start_controller(self, fl_ctx: FLContext) -> None:
        """Register the app commands the notebook polls for events and sends to stop the run.

        Also spares this job process FLARE's clean-up of PyTorch tensor downloads at the workflow's end
        (:data:`TENSOR_DOWNLOADS`): fedkit's payloads are numpy arrays and bytes, never FLARE tensor
        downloads, and that clean-up imports torch (seconds of CPU after every run) when torch is installed.
        """
        if "torch" not in sys.modules:
            sys.modules.setdefault(TENSOR_DOWNLOADS, None)  # its import raises ImportError, which FLARE skips
        fl_ctx.get_engine().register_app_command(wire.EVENTS_TOPIC, self._events)
        fl_ctx.get_engine().register_app_command(CONTROL_TOPIC, self._control)

    def _events(self, topic: str, data: Any, fl_ctx: FLContext) -> dict[str, Any]:
        start = int((data or {}).get("since", 0))
        return {"events": self.relay.since(start, deliver=True)}

    def _control(self, topic: str, data: Any, fl_ctx: FLContext) -> dict[str, Any]:
        if (data or {}).get("stop"):
            self._stop.set()
        return {"stopping": self._stop.is_set()}

    def stop_controller(self, fl_ctx: FLContext) -> None:
        """Nothing to release."""

    def process_result_of_unknown_task(
        self, client: Client, task_name: str, client_task_id: str, result: Shareable, fl_ctx: FLContext
    ) -> None:
        """A late reply of a site that was dropped from its round: logged and ignored."""
        self.log_info(fl_ctx, f"ignored late {task_name} reply from {client.name} (dropped from that round)")

    def _connected(self, fl_ctx: FLContext) -> list[str]:
        return [c.name for c in fl_ctx.get_engine().get_clients()]

    def control_flow(self, abort_signal: Signal, fl_ctx: FLContext) -> None:
        """Wait for the sites, run fedkit's round loop over them, write the result into the job workspace."""
        from fedkit.config import RunConfig
        from fedkit.privacy.identity import CertificateAuthority
        from fedkit.tracking.local import LocalStore

        workspace = fl_ctx.get_engine().get_workspace()
        job_dir = workspace.get_run_dir(fl_ctx.get_job_id())
        try:
            config = RunConfig.from_dict(self.config)
            deadline = time.monotonic() + self.join_timeout
            while time.monotonic() < deadline and not abort_signal.triggered:
                if set(self.expected_sites) <= set(self._connected(fl_ctx)):
                    break
                time.sleep(0.1)
            sites = [s for s in self._connected(fl_ctx) if not self.expected_sites or s in self.expected_sites]

            def transport(task: str, payload: dict[str, Any], targets: Any, need: int) -> dict[str, dict[str, Any]]:
                straggler = self.straggler_timeout_of(task)
                return self._broadcast(task, payload, list(targets), need, straggler, fl_ctx, abort_signal)

            root_ca = Path(workspace.get_startup_kit_dir()) / "rootCA.pem"  # checks the sites' signed statements
            verifier = CertificateAuthority.from_pem(root_ca.read_bytes()) if root_ca.is_file() else None
            result, _ = serve(
                transport,
                config,
                sites,
                self.relay,
                min_silos=self.min_silos,
                should_stop=lambda: abort_signal.triggered or self._stop.is_set(),
                schema=self.schema or None,
                run=str(fl_ctx.get_job_id()),
                store=LocalStore(Path(workspace.get_root_dir()) / STORE),
                run_id=self.run_id or None,
                resume=self.resume or None,
                started_by=submitter(job_dir),
                verifier=verifier,
            )
            if result is not None:
                summary = result.summary()  # its notes hold the engine's (the round loop collects them)
                with open(os.path.join(job_dir, wire.RESULT_FILE), "w") as f:
                    json.dump(wire.to_json({"summary": summary, "params": result.params}), f)
        except Exception as exc:
            text = traceback.format_exc()
            self.log_error(fl_ctx, f"fedkit run failed:\n{text}")
            if not any(e["kind"] == "end" for e in self.relay.since(0)):
                self.relay.add(
                    {"kind": "end", "status": "failed", "error": str(exc) if isinstance(exc, FedkitError) else text}
                )
            self._hand_over_the_end(abort_signal)
            self.system_panic(f"fedkit run failed: {exc}", fl_ctx)
            return
        self._hand_over_the_end(abort_signal)

    def _hand_over_the_end(self, abort_signal: Signal) -> None:
        """Keep the job up until the submitting machine has polled the run's last events (at most END_WAIT s)."""
        self.relay.wait_delivered(END_WAIT, should_stop=lambda: abort_signal.triggered)

    def straggler_timeout_of(self, task: str) -> float:
        """Seconds to wait for the other sites once ``min_silos`` answered ``task``: ``start_timeout`` for the first.

        Parameters
        ----------
        task
            The task's name (:mod:`fedkit.remote.wire`).
        """
        return self.start_timeout if task == wire.HELLO else self.straggler_timeout

    def _broadcast(
        self,
        task_name: str,
        payload: dict[str, Any],
        targets: list[str],
        need: int,
        straggler_timeout: float,
        fl_ctx: FLContext,
        abort_signal: Signal,
    ) -> dict[str, dict[str, Any]]:
        from fedkit.engines.faults import wait_over

        data = Shareable()
        data[PAYLOAD] = payload
        task = Task(name=task_name, data=data, timeout=self.task_timeout)
        self.broadcast(task, fl_ctx, targets=targets, min_responses=len(targets))
        start, replied_at = time.monotonic(), {}
        need = min(need, len(targets))
        while not abort_signal.triggered and task.completion_status is None:
            elapsed = time.monotonic() - start
            for client_task in list(task.client_tasks):
                if client_task.result is not None:
                    replied_at.setdefault(client_task.client.name, elapsed)
            if elapsed > self.task_timeout or wait_over(
                elapsed, replied_at, targets, self._absent, need, straggler_timeout
            ):
                break
            time.sleep(self._task_check_period)
        if task.completion_status is None:
            self.cancel_task(task, fl_ctx=fl_ctx)
        replies: dict[str, dict[str, Any]] = {}
        failures = []
        for client_task in list(task.client_tasks):
            result = client_task.result
            if result is None:
                continue
            if result.get_return_code() == ReturnCode.OK and PAYLOAD in result:
                replies[client_task.client.name] = result[PAYLOAD]
            else:
                failures.append(f"{client_task.client.name}: {result.get('error') or result.get_return_code()}")
        self.log_debug(
            fl_ctx,
            f"fedkit task {task_name}: replies from {sorted(replies)} of {targets} after "
            f"{time.monotonic() - start:.2f} s (absent before: {sorted(self._absent)}; replied at {replied_at})",
        )
        self._absent = (self._absent | set(targets)) - set(replies)
        if failures:
            raise RemoteRunError(f"Task {task_name} failed on site(s) " + "; ".join(failures))
        return replies


def submitter(job_dir: str | os.PathLike[str]) -> str | None:
    """The FLARE user who submitted this job (``submitter_name`` of the job's ``meta.json``), else None.

    FLARE authenticates the submitter from the admin certificate of the session that submitted the job.

    Parameters
    ----------
    job_dir
        The job's folder in the server's workspace.
    """
    path = Path(job_dir) / "meta.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    name = meta.get("submitter_name")
    if not name:
        return None
    org, role = meta.get("submitter_org"), meta.get("submitter_role")
    return f"{name} (FLARE submitter" + (f", org {org}" if org else "") + (f", role {role}" if role else "") + ")"
