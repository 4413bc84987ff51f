"""The notebook/CLI side of a remote run: submit the FLARE job, follow it round by round, stop it, record it.

The server relays every tracker call of its round loop as an event (see :class:`~fedkit.remote.server.RelayTracker`);
this side polls them through the FLARE API app command and replays them into *this* machine's trackers
(the local store by default), its callbacks (live curves) and a progress bar — so the run is recorded
here as it goes. The final summary and parameters are read from the downloaded job result. Stop
(``should_stop``) and Ctrl-C abort the job and record the run as ``stopped``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkit.errors import ConfigError, RemoteRunError
from fedkit.remote import wire

if TYPE_CHECKING:
    from fedkit.config import RunConfig
    from fedkit.result import RoundEvent, RunResult
    from fedkit.tracking.base import Tracker

TASK_REQUEST_INTERVAL = 0.05
"""Seconds a site waits before asking again when the server had no task (FLARE's default is 2 s)."""
FINISHED = ("FINISHED", "ABORTED", "FAILED")


def admin_user(admin_kit: str | Path) -> str:
    """The admin user name of a startup kit (from ``startup/fed_admin.json``), with a clear error if it is not one.

    Parameters
    ----------
    admin_kit
        The admin startup kit folder.

    Raises
    ------
    ConfigError
        When the folder is not an admin startup kit.
    """
    path = Path(admin_kit) / "startup" / "fed_admin.json"
    if not path.is_file():
        raise ConfigError(
            f"{admin_kit} is not a FLARE admin startup kit (no startup/fed_admin.json); pass the admin user's kit "
            "made by `fedkit remote provision` (e.g. workspace/<project>/prod_00/admin@...)."
        )
    return json.loads(path.read_text())["admin"]["username"]


def open_session(admin_kit: str | Path, timeout: float = 30.0) -> Any:
    """A FLARE API session (mTLS, as the admin of ``admin_kit``).

    Parameters
    ----------
    admin_kit
        The admin startup kit folder.
    timeout
        Seconds to wait for the login.
    """
    try:
        from nvflare.fuel.flare_api.flare_api import new_secure_session
    except ImportError as exc:
        raise ConfigError("engine='remote' needs NVIDIA FLARE: pip install 'fedkit[remote]'.") from exc
    try:
        return new_secure_session(admin_user(admin_kit), str(Path(admin_kit).resolve()), timeout=timeout)
    except Exception as exc:
        if isinstance(exc, ConfigError):
            raise
        raise RemoteRunError(
            f"Could not log in to the FLARE server with the admin kit {admin_kit}: {exc}. Check that the server is "
            "running and reachable at the host/port in startup/fed_admin.json and that the kit comes from the "
            "same provisioning as the server."
        ) from exc


def build_job(
    config: RunConfig,
    job_root: str | Path,
    *,
    sites: Sequence[str] | None = None,
    min_silos: int = 1,
    straggler_timeout: int = 10,
    task_timeout: int = 600,
) -> Path:
    """Export the FLARE job of ``config`` (server: fedkit's round loop; every site: its hospital's training).

    Parameters
    ----------
    config
        The run.
    job_root
        The folder the job is exported to.
    sites
        The sites the server waits for before the first round (default: every hospital).
    min_silos
        Fewest sites a round may aggregate.
    straggler_timeout
        Seconds to wait for the other sites once ``min_silos`` replied (a site slower than that is dropped from the
        round).
    task_timeout
        Seconds before a task is given up entirely.
    """
    from nvflare.job_config.api import FedJob

    from fedkit.data.silos import resolve_schema
    from fedkit.data.uci import HOSPITALS
    from fedkit.remote.controller import FedkitController
    from fedkit.remote.executor import FedkitExecutor

    name = f"fedkit-{config.strategy}"
    job = FedJob(name=name, min_clients=min_silos)
    job.set_app_packages(["fedkit"])  # fedkit is installed on every site; its code is not shipped in the job
    job.to_server(
        FedkitController(
            config=config.to_dict(),
            expected_sites=list(sites or HOSPITALS),
            min_silos=min_silos,
            straggler_timeout=straggler_timeout,
            task_timeout=task_timeout,
            schema=resolve_schema(config.schema).fingerprint(),
        )
    )
    job.to_server({"server": {"task_request_interval": TASK_REQUEST_INTERVAL}})
    job.to_clients(FedkitExecutor(), tasks=list(wire.TASKS))
    job.to_clients({"default_task_fetch_interval": TASK_REQUEST_INTERVAL})  # idle re-ask (FLARE's default: 0.5 s)
    job.export_job(str(job_root))
    return Path(job_root) / name


def run_remote(
    config: RunConfig,
    *,
    admin_kit: str | Path,
    trackers: Sequence[Tracker],
    callbacks: Sequence[Callable[[RoundEvent], None]] = (),
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
    min_silos: int = 1,
    straggler_timeout: int = 10,
    poll: float = 0.1,
    session: Any = None,
    on_event: Callable[[dict[str, Any]], Any] | None = None,
    result_timeout: float = 30.0,
) -> RunResult:
    """Run ``config`` on the FLARE federation of ``admin_kit``; record it in this machine's ``trackers``.

    The final result is read from the downloaded job result when the job ends within ``result_timeout`` seconds
    of the run, else from the run's last relayed event.

    Parameters
    ----------
    config
        The run.
    admin_kit
        The admin startup kit of the FLARE federation.
    trackers
        Where this machine records the run.
    callbacks
        Called with a :class:`~fedkit.result.RoundEvent` after each round.
    should_stop
        Checked while the run goes on: True aborts the job and records ``stopped``.
    progress
        Show a progress bar over the rounds.
    min_silos
        Fewest sites a round may aggregate.
    straggler_timeout
        Seconds to wait for the other sites once ``min_silos`` replied; a site that has not replied is dropped from
        that round (recorded in the notes) and asked again next round.
    poll
        Seconds between polls of the server's events.
    session
        An open FLARE API session (default: one opened with ``admin_kit``).
    on_event
        Sees every raw event the server relays (round events carry the server's clock in ``time``).
    result_timeout
        Seconds to wait for the job's result after the run.

    Returns
    -------
    RunResult
        The same result as a simulation run's.

    Raises
    ------
    RemoteRunError
        When fewer than ``min_silos`` sites are connected, or the job fails.
    """
    from fedkit.progress import progress_bar

    own_session = session is None
    session = session or open_session(admin_kit)
    follower = _Follower(config, trackers, callbacks)
    if on_event is not None:
        follower.on_event = on_event
    bar = progress_bar(progress, total=config.rounds, desc=f"{config.strategy} (remote)", unit="round", file=sys.stderr)
    follower.on_round = lambda pooled: (
        bar.set_postfix(auc=_f(pooled.get("auc")), acc=_f(pooled.get("accuracy")), refresh=False),
        bar.update(),
    )
    follower.on_note = lambda text: bar.write(f"fedkit: {text}")
    job_id = None
    try:
        with tempfile.TemporaryDirectory(prefix="fedkit-job-") as tmp:
            connected = [c.name for c in session.get_connected_client_list()]
            if len(connected) < min_silos:
                raise RemoteRunError(
                    f"Only {len(connected)} site(s) are connected to the FLARE server "
                    f"({', '.join(connected) or 'none'}); the run needs min_silos={min_silos}. "
                    "Start the hospitals' sites, or lower min_silos."
                )
            job_dir = build_job(config, tmp, sites=connected, min_silos=min_silos, straggler_timeout=straggler_timeout)
            job_id = session.submit_job(str(job_dir))
        while follower.status is None:
            if should_stop is not None and should_stop():
                session.abort_job(job_id)
                return follower.stop()
            events = _poll(session, job_id, follower.cursor)
            if events is None:  # not running (yet, or any more)
                meta = session.get_job_meta(job_id)
                status = str(meta.get("status", ""))
                if any(status.startswith(s) for s in FINISHED):
                    follower.fail(
                        f"The FLARE job {job_id} ended ({status}) before the run did; read the server log in the "
                        f"job result (FLARE API: session.download_job_result({job_id!r}))."
                    )
                time.sleep(poll)
                continue
            follower.feed(events)
            if follower.status is None:
                time.sleep(poll)
        if follower.status == "failed":
            raise RemoteRunError(f"The remote run failed on the server: {follower.error}")
        _read_downloaded(session, job_id, follower, result_timeout)
        return follower.finish()
    except KeyboardInterrupt:
        if job_id is not None:
            session.abort_job(job_id)
        if follower.started:
            follower.stop()
        raise
    finally:
        bar.close()
        if own_session:
            session.close()


def _f(value: float | None) -> str:
    return "nan" if value is None else f"{value:.3f}"


def _poll(session: Any, job_id: str, cursor: int) -> list[dict[str, Any]] | None:
    """New events of a running job, or None when the job is not running."""
    try:
        reply = session.do_app_command(job_id, wire.EVENTS_TOPIC, {"since": cursor})
    except Exception:
        return None
    return reply.get("events") if isinstance(reply, dict) and "events" in reply else None


def _read_downloaded(session: Any, job_id: str, follower: _Follower, timeout: float) -> None:
    """Replace the relayed summary/params with the ones the server wrote into the job result, when it has them.

    A job whose site died can take minutes to wind down; after ``timeout`` seconds the relayed result
    (the same summary and parameters, sent with the run's last event) stands.
    """
    try:
        session.wait_for_job(job_id, timeout=timeout, poll_interval=0.2)
        with tempfile.TemporaryDirectory(prefix="fedkit-result-") as tmp:
            where = Path(session.download_job_result(job_id, tmp))
            found = sorted(where.rglob(wire.RESULT_FILE))
            if found:
                saved = json.loads(found[0].read_text())
                follower.summary = saved["summary"]
                follower.params = np.asarray(saved["params"], dtype=np.float32)
    except Exception:  # noqa: S110 - the relayed end event already holds the same result
        pass


class _Follower:
    """Replays the server's events into this machine's trackers and callbacks."""

    def __init__(
        self, config: RunConfig, trackers: Sequence[Tracker], callbacks: Sequence[Callable[[RoundEvent], None]]
    ) -> None:
        self.config = config
        self.trackers = trackers
        self.callbacks = callbacks
        self.cursor = 0
        self.run_id = ""
        self.data: dict[str, Any] = {}
        self.n_test: dict[str, int] = {}
        self.auc_notes: list[str] = []
        self.notes_extra: list[str] = []
        self.scored = "global"
        self.records: list[dict[str, Any]] = []
        self.params = np.zeros(0, np.float32)
        self.status: str | None = None
        self.error: str | None = None
        self.summary: dict[str, Any] | None = None
        self.started = False
        self.on_round: Callable[[dict[str, Any]], Any] = lambda pooled: None
        self.on_note: Callable[[str], Any] = lambda text: None
        self.on_event: Callable[[dict[str, Any]], Any] = lambda event: None

    def feed(self, events: list[dict[str, Any]]) -> None:
        """Handle new events in order."""
        from fedkit.result import POOLED, RoundEvent

        for event in events:
            self.cursor += 1
            self.on_event(event)
            kind = event["kind"]
            if kind == "outline":
                self.n_test = dict(event["n_test"])
                self.auc_notes = list(event["notes"])
                self.scored = event["scored"]
            elif kind == "note":
                self.notes_extra.append(event["text"])
                self.on_note(event["text"])
            elif kind == "start":
                self.run_id, self.data = event["run_id"], event["data"]
                for t in self.trackers:
                    t.start_run(self.run_id, self.config.to_dict(), self.data)
                self.started = True
            elif kind == "round":
                rows = wire.rows_from_json(event["rows"])
                self.records.extend(rows)
                self.params = np.asarray(event["params"], dtype=np.float32)
                for t in self.trackers:
                    t.log_round(self.run_id, event["round"], rows)
                round_event = RoundEvent(self.run_id, event["round"], self.config.rounds, rows, self.params)
                for callback in self.callbacks:
                    callback(round_event)
                if event["round"] > 0:
                    pooled = {
                        r["metric"]: r["value"] for r in rows if r["silo"] == POOLED and r["model"] == self.scored
                    }
                    self.on_round(pooled)
            elif kind == "end":
                self.status, self.error, self.summary = event["status"], event.get("error"), event.get("summary")
                if event.get("params") is not None:
                    self.params = np.asarray(event["params"], dtype=np.float32)
                if self.status == "failed" and self.started:
                    for t in self.trackers:
                        t.end_run(self.run_id, "failed", error=self.error)

    def _result(self, status: str) -> RunResult:
        from fedkit.result import RunResult

        notes = list(self.summary["notes"]) if self.summary else [*self.auc_notes, *self.notes_extra]
        return RunResult(
            self.run_id,
            status,
            self.config.to_dict(),
            self.records,
            self.params,
            self.n_test,
            self.data,
            notes,
            self.scored,
        )

    def finish(self) -> RunResult:
        """The run finished on the server: record its result here."""
        result = self._result(self.status or "finished")
        for t in self.trackers:
            t.end_run(self.run_id, result.status, summary=result.summary(), params=result.params)
        return result

    def stop(self) -> RunResult:
        """The job was aborted from here: record what arrived so far as ``stopped``."""
        self.status = "stopped"
        result = self._result("stopped")
        if self.started:
            for t in self.trackers:
                t.end_run(self.run_id, "stopped", summary=result.summary(), params=result.params)
        return result

    def fail(self, error: str) -> None:
        """The job ended without a result: record the run as failed."""
        self.status, self.error = "failed", error
        if self.started:
            for t in self.trackers:
                t.end_run(self.run_id, "failed", error=error)
