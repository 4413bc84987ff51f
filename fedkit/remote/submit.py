"""The notebook/CLI side of a remote run: submit the FLARE job, follow it round by round, stop it, record it.

The server relays every tracker call of its round loop as an event (see :class:`~fedkit.remote.server.RelayTracker`);
this side polls them through the FLARE API app command and replays them into *this* machine's trackers
(the local store by default), its callbacks (live curves) and a progress bar — so the run is recorded
here as it goes, with a verified copy of the server's audit log. The command returns as soon as the
run's end event (which carries the final summary and parameters) has arrived; FLARE's clean-up of the
job goes on without it. Stop (``should_stop``, the widget's button) asks the server to end the run
after the current round (status ``stopped``); Ctrl-C aborts the job at once. A run whose server job
died, or whose submitting machine restarted, continues with ``resume``: re-attached to its job when
that still runs, else in a new job from the server's last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkit.errors import ConfigError, RemoteRunError
from fedkit.remote import wire

if TYPE_CHECKING:
    from fedkit.config import RunConfig
    from fedkit.result import RoundEvent, RunResult
    from fedkit.tracking.base import Tracker
    from fedkit.tracking.local import LocalStore

TASK_REQUEST_INTERVAL = 0.01
"""Seconds a site waits before asking again when the server had no task (FLARE's default is 2 s)."""
FINISHED = ("FINISHED", "ABORTED", "FAILED")
STOP_GRACE = 60.0
"""Seconds the server gets to end the run after the current round once Stop was asked, before the job is aborted."""
REJOIN_CHECK = 1.0
"""Seconds between checks whether a site that dropped out is back without the run's job (it restarted)."""


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
    _config_search_in(Path(admin_kit))
    try:
        with contextlib.redirect_stdout(sys.stderr), _quick_login_retry():  # "Connecting to FLARE ..." to stderr
            return new_secure_session(admin_user(admin_kit), str(Path(admin_kit).resolve()), timeout=timeout)
    except Exception as exc:
        if isinstance(exc, ConfigError):
            raise
        raise RemoteRunError(
            f"Could not log in to the FLARE server with the admin kit {admin_kit}: {exc}. Check that the server is "
            "running and reachable at the host/port in startup/fed_admin.json and that the kit comes from the "
            "same provisioning as the server."
        ) from exc


LOGIN_RETRY = 0.02
"""Seconds between the admin login's challenges of the server while its connection comes up (FLARE 2.9: 1 s)."""


@contextlib.contextmanager
def _quick_login_retry() -> Iterator[None]:
    """Make the admin login retry its challenge after ``LOGIN_RETRY`` seconds instead of FLARE's fixed 1 s.

    FLARE 2.9's admin API starts its connection and challenges the server at once; the first
    challenge finds the connection not up yet (target unreachable) and its ``Authenticator`` sleeps
    ``retry_interval=1.0`` (hard-coded in ``AdminAPI.connect``) before the second: a second of every
    login. Inside this block the admin API builds its ``Authenticator`` with a short retry interval;
    the overall login timeout is unchanged.
    """
    from nvflare.fuel.hci.client import api

    original = api.Authenticator

    class QuickRetry(original):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.retry_interval = min(self.retry_interval, LOGIN_RETRY)

    api.Authenticator = QuickRetry
    try:
        yield
    finally:
        api.Authenticator = original


def _config_search_in(admin_kit: Path) -> None:
    """Make FLARE look for its communication settings in the admin kit, not under the current folder.

    Without configured folders, FLARE 2.9's ``ConfigService`` walks the whole current folder tree for
    ``comm_config.json`` (five times) when a session opens: seconds in a project with a virtualenv,
    minutes in a home folder. The kit's ``local`` and ``startup`` folders are where that file belongs.
    """
    from nvflare.fuel.utils.config_service import ConfigService

    folders = [str(admin_kit.resolve() / part) for part in ("local", "startup") if (admin_kit / part).is_dir()]
    if folders and not ConfigService._config_path:  # the search list, set once per process
        ConfigService.initialize(section_files={}, config_path=folders)


def job_name(run_id: str) -> str:
    """The FLARE job name of run ``run_id`` (its jobs are found by it when the run is resumed).

    Parameters
    ----------
    run_id
        The fedkit run's id.
    """
    return f"fedkit-{run_id}"


def build_job(
    config: RunConfig,
    job_root: str | Path,
    *,
    sites: Sequence[str] | None = None,
    min_silos: int = 1,
    straggler_timeout: int = 10,
    task_timeout: int = 600,
    run_id: str = "",
    resume: str = "",
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
    run_id
        The id of the new run (named in the job's name).
    resume
        The id of the run the job continues (from the server's last checkpoint), else empty.
    """
    from nvflare.job_config.api import FedJob

    from fedkit.data.silos import resolve_schema
    from fedkit.data.uci import HOSPITALS
    from fedkit.remote.controller import FedkitController
    from fedkit.remote.executor import FedkitExecutor

    name = job_name(resume or run_id) if resume or run_id else f"fedkit-{config.strategy}"
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
            run_id=run_id,
            resume=resume,
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
    poll: float = 0.05,
    session: Any = None,
    on_event: Callable[[dict[str, Any]], Any] | None = None,
    resume: str | None = None,
    stop_grace: float = STOP_GRACE,
) -> RunResult:
    """Run ``config`` on the FLARE federation of ``admin_kit``; record it in this machine's ``trackers``.

    Returns when the run's end event has arrived (it carries the final summary and parameters); the
    FLARE job's clean-up is not waited for. A site that dropped out and is back without the run's job
    (it restarted: FLARE does not hand a running job to a restarted site) makes the run stop after the
    current round and continue in a new job from the server's checkpoint, so the site rejoins with its
    own state reloaded from its file.

    Parameters
    ----------
    config
        The run.
    admin_kit
        The admin startup kit of the FLARE federation.
    trackers
        Where this machine records the run (the first local store keeps a verified copy of its audit log).
    callbacks
        Called with a :class:`~fedkit.result.RoundEvent` after each round.
    should_stop
        Checked while the run goes on: True asks the server to end the run after the current round (``stopped``);
        a server that has not ended it ``stop_grace`` seconds later has its job aborted.
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
    resume
        The id of a recorded remote run to continue: followed in its FLARE job when that still runs, else
        continued in a new job from the server's last checkpoint with the sites that are connected.
    stop_grace
        Seconds the server gets to end the run once Stop was asked, before the job is aborted.

    Returns
    -------
    RunResult
        The same result as a simulation run's.

    Raises
    ------
    RemoteRunError
        When fewer than ``min_silos`` sites are connected, the job fails, or the server's audit log does not
        match this machine's copy.
    """
    from fedkit.progress import progress_bar
    from fedkit.runner import new_run_id

    own_session = session is None
    session = session or open_session(admin_kit)
    run_id = resume or new_run_id()
    follower = _Follower(config, trackers, callbacks, run_id=run_id, resumed=resume is not None)
    if on_event is not None:
        follower.on_event = on_event
    bar = progress_bar(progress, total=config.rounds, desc=f"{config.strategy} (remote)", unit="round", file=sys.stderr)
    follower.on_round = lambda server_round, pooled: (
        bar.set_postfix(auc=_f(pooled.get("auc")), acc=_f(pooled.get("accuracy")), refresh=False),
        bar.update(server_round - bar.n),
    )
    follower.on_note = lambda text: bar.write(f"fedkit: {text}", file=sys.stderr)  # beside the bar, off stdout
    job_id = None
    try:
        job_id = _running_job(session, run_id) if resume else None  # re-attach: the job still runs the run
        if job_id is None:
            job_id = _submit(session, config, min_silos, straggler_timeout, run_id=run_id, resume=resume)
        stopping: float | None = None
        returns = _Returns()
        rejoin: list[str] = []  # sites back after a restart: the run continues in a new job that includes them
        while follower.status is None:
            if stopping is None and should_stop is not None and should_stop():
                stopping = time.monotonic()
                _ask_to_stop(session, job_id)
            if stopping is None and follower.missing:
                rejoin = returns.check(session, job_id, follower.missing)
                if rejoin:
                    stopping = time.monotonic()
                    _ask_to_stop(session, job_id)
            if stopping is not None and time.monotonic() - stopping > stop_grace:
                session.abort_job(job_id)
                return follower.stop()
            events = _poll(session, job_id, follower.cursor)
            if events is None:  # not running (yet, or any more)
                meta = session.get_job_meta(job_id)
                status = str(meta.get("status", ""))
                if any(status.startswith(s) for s in FINISHED):
                    events = _poll(session, job_id, follower.cursor)  # the last events may have come meanwhile
                    if events is None:
                        follower.fail(
                            f"The FLARE job {job_id} ended ({status}) before the run did; read the server log in the "
                            f"job result (FLARE API: session.download_job_result({job_id!r})), then continue the "
                            f"run with `fedkit run --resume {run_id}`."
                        )
                        break
                else:
                    time.sleep(poll)
                    continue
            follower.feed(events)
            if rejoin and follower.status == "stopped":  # continue in a new job with the sites that came back
                follower.on_note(f"site(s) {', '.join(rejoin)} restarted: the run continues in a new job with them")
                job_id = _submit(session, config, min_silos, straggler_timeout, run_id=run_id, resume=run_id)
                follower.next_job()
                stopping, rejoin = None, []
            if follower.status is None:
                time.sleep(poll)
        if follower.status == "failed":
            raise RemoteRunError(f"The remote run {run_id} failed on the server: {follower.error}")
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


def _submit(
    session: Any, config: RunConfig, min_silos: int, straggler_timeout: int, *, run_id: str, resume: str | None
) -> str:
    """Build and submit the run's FLARE job over the connected sites; its job id."""
    connected = [c.name for c in session.get_connected_client_list()]
    if len(connected) < min_silos:
        raise RemoteRunError(
            f"Only {len(connected)} site(s) are connected to the FLARE server "
            f"({', '.join(connected) or 'none'}); the run needs min_silos={min_silos}. "
            "Start the hospitals' sites, or lower min_silos."
        )
    with tempfile.TemporaryDirectory(prefix="fedkit-job-") as tmp:
        job_dir = build_job(
            config,
            tmp,
            sites=connected,
            min_silos=min_silos,
            straggler_timeout=straggler_timeout,
            run_id="" if resume else run_id,
            resume=resume or "",
        )
        return str(session.submit_job(str(job_dir)))


def _running_job(session: Any, run_id: str) -> str | None:
    """The id of a FLARE job that still runs run ``run_id`` (found by its name), else None.

    A job whose run has ended (its end event relayed: stopped, say) but that FLARE is still cleaning
    up does not count: the run continues in a new job.
    """
    for job in session.list_jobs(name_prefix=job_name(run_id)):
        if str(job.get("status", "")).startswith("RUNNING"):
            events = _poll(session, str(job["job_id"]), 0)
            if events is not None and not any(e.get("kind") == "end" for e in events):
                return str(job["job_id"])
    return None


class _Returns:
    """Finds the sites that dropped out of the run's job and are back without it (their site restarted).

    A dropped site counts as back when FLARE's record of its last contact moved since the previous
    check (its site process heartbeats again; a site that is stopped or dead does not) and the site
    answers that it does not run the job.
    """

    def __init__(self) -> None:
        self.contact: dict[str, Any] = {}
        self.checked = 0.0

    def check(self, session: Any, job_id: str, missing: set[str]) -> list[str]:
        """The missing sites back without job ``job_id`` (checked at most every :data:`REJOIN_CHECK` seconds)."""
        if time.monotonic() - self.checked < REJOIN_CHECK:
            return []
        self.checked = time.monotonic()
        try:
            contact = {c.name: c.last_connect_time for c in session.get_connected_client_list()}
            alive = sorted(s for s in missing if s in contact and s in self.contact and contact[s] != self.contact[s])
            self.contact = {s: contact[s] for s in missing if s in contact}
            status = (session.get_client_job_status(alive) or []) if alive else []
        except Exception:  # FLARE's admin errors (e.g. a site still starting up): not back yet, asked again later
            return []
        answered = {e.get("client_name") for e in status if e.get("status") != "no_reply"}
        running = {e.get("client_name") for e in status if e.get("job_id") == job_id}
        return sorted(answered - running)


def _ask_to_stop(session: Any, job_id: str) -> None:
    """Ask the server to end the run after the current round; abort the job if it cannot be asked."""
    from fedkit.remote.controller import CONTROL_TOPIC

    try:
        session.do_app_command(job_id, CONTROL_TOPIC, {"stop": True})
    except Exception:  # the job is not running (yet): nothing to end gracefully
        session.abort_job(job_id)


def _f(value: float | None) -> str:
    return "nan" if value is None else f"{value:.3f}"


def _poll(session: Any, job_id: str, cursor: int) -> list[dict[str, Any]] | None:
    """New events of a running job, or None when the job is not running."""
    try:
        reply = session.do_app_command(job_id, wire.EVENTS_TOPIC, {"since": cursor})
    except Exception:
        return None
    return reply.get("events") if isinstance(reply, dict) and "events" in reply else None


def _intervals(final: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The 95% interval bounds in a relayed summary's ``final`` block, by silo and pooled (null read back as NaN)."""
    from fedkit.intervals import INTERVAL_KEYS
    from fedkit.result import POOLED

    blocks = {**final.get("silos", {}), POOLED: final.get(POOLED) or {}}
    return {
        silo: {k: float("nan") if block[k] is None else float(block[k]) for k in INTERVAL_KEYS if k in block}
        for silo, block in blocks.items()
        if any(k in block for k in INTERVAL_KEYS)
    }


class _Follower:
    """Replays the server's events into this machine's trackers and callbacks, and keeps the verified audit copy."""

    def __init__(
        self,
        config: RunConfig,
        trackers: Sequence[Tracker],
        callbacks: Sequence[Callable[[RoundEvent], None]],
        *,
        run_id: str = "",
        resumed: bool = False,
    ) -> None:
        from fedkit.tracking.local import LocalStore

        self.config = config
        self.trackers = trackers
        self.callbacks = callbacks
        self.copy: LocalStore | None = next((t for t in trackers if isinstance(t, LocalStore)), None)
        self.cursor = 0
        self.run_id = run_id
        self.resumed = resumed
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
        self.missing: set[str] = set()  # sites that dropped out and have not answered since
        self._audit: tuple[str, int, dict[str, Any] | None] | None = None  # run, records of the copy here, its last
        self.last_round = -1  # the last round the trackers here have
        self.on_round: Callable[[int, dict[str, Any]], Any] = lambda server_round, pooled: None
        self.on_note: Callable[[str], Any] = lambda text: None
        self.on_event: Callable[[dict[str, Any]], Any] = lambda event: None

    def feed(self, events: list[dict[str, Any]]) -> None:
        """Handle new events in order.

        Parameters
        ----------
        events
            The events since the last call.
        """
        for event in events:
            self.cursor += 1
            self.on_event(event)
            handler = getattr(self, f"_on_{event['kind']}", None)
            if handler is not None:
                handler(event)

    def next_job(self) -> None:
        """Follow the run's next FLARE job (it resumes the run from the server's checkpoint)."""
        self.cursor, self.status, self.error, self.summary, self.missing = 0, None, None, None, set()
        self.resumed = True

    def _on_outline(self, event: Mapping[str, Any]) -> None:
        self.n_test = dict(event["n_test"])
        self.auc_notes = list(event["notes"])
        self.scored = event["scored"]

    def _on_note(self, event: Mapping[str, Any]) -> None:
        self.notes_extra.append(event["text"])
        self.missing = set(event.get("missing", ()))
        self.on_note(event["text"])

    def _on_start(self, event: Mapping[str, Any]) -> None:
        """The run started (or, when re-attached to its running job, the job's events are replayed from it)."""
        from fedkit.tracking.local import LocalStore

        self.run_id, self.data = event["run_id"], event["data"]
        here = self._recorded() if self.resumed else None
        for t in self.trackers:
            if isinstance(t, LocalStore) and here is not None:
                t.reopen_run(self.run_id)
            else:
                t.start_run(self.run_id, self.config.to_dict(), self.data)
        if here is not None:
            self.last_round = max((r["round"] for r in self._history_here()), default=-1)
        self.started = True

    def _on_history(self, event: Mapping[str, Any]) -> None:
        """A resumed run: what the server's store holds of it; this machine's record is continued or made."""
        from fedkit.tracking.local import LocalStore

        self.run_id, self.data = event["run_id"], event["data"]
        here = self._recorded()
        rows = wire.rows_from_json(event["rows"])
        for t in self.trackers:
            if isinstance(t, LocalStore) and here is not None:
                t.reopen_run(self.run_id)
            else:
                t.start_run(self.run_id, self.config.to_dict(), self.data)
        self.started = True
        done = {r["round"] for r in self._history_here()} if here is not None else set()
        for server_round in sorted({r["round"] for r in rows} - done):
            for t in self.trackers:
                t.log_round(self.run_id, server_round, [r for r in rows if r["round"] == server_round])
        self.records = rows
        self.last_round = max((r["round"] for r in rows), default=-1)
        self._check_audit(event["audit"])

    def _recorded(self) -> dict[str, Any] | None:
        """This machine's record of the run (its local store's), or None."""
        from fedkit.errors import RunNotFoundError

        if self.copy is None:
            return None
        try:
            return self.copy.get(self.run_id)
        except RunNotFoundError:
            return None

    def _history_here(self) -> list[dict[str, Any]]:
        return [] if self.copy is None else self.copy.history(self.run_id)

    def _audit_here(self) -> tuple[int, dict[str, Any] | None]:
        """How many audit records of the run the copy here holds, and its last: read and verified once a run.

        The copy then grows by records checked as its continuation (:meth:`_new_audit`), so each round
        costs its own records, not the whole log again.
        """
        from fedkit.errors import AuditError
        from fedkit.privacy.audit import verify

        if self._audit is None or self._audit[0] != self.run_id:
            here = self.copy.audit_log(self.run_id) if self.copy is not None else []
            try:
                verify(here, self.run_id)
            except AuditError as exc:
                raise RemoteRunError(f"This machine's copy of the audit log does not verify: {exc}") from exc
            self._audit = (self.run_id, len(here), here[-1] if here else None)
        return self._audit[1], self._audit[2]

    def _new_audit(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The server's audit records the copy here lacks, checked as its continuation; a rewritten or removed
        record fails the run. The caller stores them (with the round's rows, in one transaction).

        The copy is the anchor of the server's chain: a server log rewritten after the fact (even with
        every hash recomputed) no longer matches the records this machine already holds.
        """
        from fedkit.errors import AuditError
        from fedkit.privacy.audit import verify

        if self.copy is None or not records:
            return []
        count, last = self._audit_here()
        here: list[dict[str, Any]] | None = None  # read only to compare records sent again (a resumed run's history)
        new: list[dict[str, Any]] = []
        for record in records:
            seq = int(record["seq"])
            if seq < count:
                here = here if here is not None else self.copy.audit_log(self.run_id)
                if here[seq] != record:
                    raise RemoteRunError(
                        f"The server's audit log of run {self.run_id} was rewritten: its record {seq} "
                        f"({record.get('kind')}) differs from the copy this machine received earlier "
                        f"(hash {str(here[seq].get('hash'))[:12]} here, {str(record.get('hash'))[:12]} on the server). "
                        "Do not trust the server's log; keep this machine's copy (`fedkit audit show`)."
                    )
            elif seq == count + len(new):
                new.append(record)
            else:
                raise RemoteRunError(
                    f"The server sent audit record {seq} of run {self.run_id} but this machine holds records up to "
                    f"{count + len(new) - 1}: records were removed from the server's log."
                )
        if new:
            try:
                verify(new, self.run_id, after=last)
            except AuditError as exc:
                raise RemoteRunError(f"The audit log the server relayed does not verify: {exc}") from exc
            self._audit = (self.run_id, count + len(new), new[-1])
        return new

    def _check_audit(self, records: list[dict[str, Any]]) -> None:
        """Append the server's new audit records to the copy here, checked (:meth:`_new_audit`)."""
        new = self._new_audit(records)
        if new:
            self.copy.append_audit(self.run_id, new)  # type: ignore[union-attr]  # records only with a copy

    def _on_audit(self, event: Mapping[str, Any]) -> None:
        self._check_audit(event["records"])

    def _on_round(self, event: Mapping[str, Any]) -> None:
        from fedkit.result import POOLED, RoundEvent

        rows = wire.rows_from_json(event["rows"])
        server_round = int(event["round"])
        self.records = [r for r in self.records if r["round"] != server_round] + rows
        self.params = np.asarray(event["params"], dtype=np.float32)
        audit = self._new_audit(event.get("audit", []))
        if server_round > self.last_round:
            for t in self.trackers:
                if t is self.copy:  # the round's rows and audit records in one transaction
                    t.save_round(self.run_id, server_round, rows, audit=audit)
                else:
                    t.log_round(self.run_id, server_round, rows)
            self.last_round = server_round
        elif audit:
            self.copy.append_audit(self.run_id, audit)  # type: ignore[union-attr]  # records only with a copy
        round_event = RoundEvent(self.run_id, server_round, self.config.rounds, rows, self.params)
        for callback in self.callbacks:
            callback(round_event)
        if server_round > 0:
            pooled = {r["metric"]: r["value"] for r in rows if r["silo"] == POOLED and r["model"] == self.scored}
            self.on_round(server_round, pooled)

    def _on_end(self, event: Mapping[str, Any]) -> None:
        self.status, self.error, self.summary = event["status"], event.get("error"), event.get("summary")
        if event.get("params") is not None:
            self.params = np.asarray(event["params"], dtype=np.float32)
        if self.status == "failed" and self.started:
            for t in self.trackers:
                t.end_run(self.run_id, "failed", error=self.error)

    def _result(self, status: str) -> RunResult:
        from fedkit.result import RunResult

        notes = list(self.summary["notes"]) if self.summary else [*self.auc_notes, *self.notes_extra]
        rejected = list(self.summary.get("rejected", [])) if self.summary else []
        intervals = _intervals(self.summary["final"]) if self.summary else {}
        return RunResult(
            self.run_id,
            status,
            self.config.to_dict(),
            sorted(self.records, key=lambda r: r["round"]),
            self.params,
            self.n_test,
            self.data,
            notes,
            self.scored,
            rejected,
            intervals,
        )

    def finish(self) -> RunResult:
        """The run ended on the server (finished, or stopped there): record its result here."""
        result = self._result(self.status or "finished")
        for t in self.trackers:
            t.end_run(self.run_id, result.status, summary=self.summary or result.summary(), params=result.params)
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
        """The job ended without a result: record the run as failed.

        Parameters
        ----------
        error
            Why, for the run's record.
        """
        self.status, self.error = "failed", error
        if self.started:
            for t in self.trackers:
                t.end_run(self.run_id, "failed", error=error)
