"""The local run store: one SQLite file under the fedkit home, the default tracker and source of truth.

Every write is one transaction, so a run is never half-written: a round's metrics, its checkpoint
(what resuming the run needs) and its audit records are all there or none are, and a run that raises
is marked ``failed`` with its error. A run whose process died without a word (killed) is shown as
``interrupted`` when read back, and ``fedkit run --resume RUN_ID`` continues it from its last round.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fedkit._version import __version__
from fedkit.errors import ResumeError, RunNotFoundError
from fedkit.paths import home_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    fedkit_version TEXT NOT NULL,
    config TEXT NOT NULL,
    data TEXT NOT NULL,
    summary TEXT,
    params BLOB,
    error TEXT,
    pid INTEGER,
    host TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    round INTEGER NOT NULL,
    silo TEXT NOT NULL,
    model TEXT NOT NULL,
    split TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, round, silo, model, split, metric)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id) ON DELETE CASCADE,
    round INTEGER NOT NULL,
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS outbox (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    backend TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    round INTEGER,
    target TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    delivered_at TEXT,
    PRIMARY KEY (run_id, backend, seq)
);
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    fedkit_version TEXT NOT NULL,
    spec TEXT NOT NULL,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS sweep_runs (
    sweep_id TEXT NOT NULL REFERENCES sweeps(sweep_id) ON DELETE CASCADE,
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    configuration INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    fold INTEGER,
    PRIMARY KEY (sweep_id, run_id)
);
"""
SCHEMA_VERSION = zlib.crc32(SCHEMA.encode()) & 0x7FFFFFFF
"""The store's ``PRAGMA user_version`` once ``SCHEMA`` is in place: a connection runs the DDL only when it
differs (a new file, or a file from a fedkit whose schema text was different)."""
OUTBOX_COLUMNS = ["run_id", "backend", "seq", "kind", "round", "target", "created_at", "attempts", "last_error"]
HISTORY_COLUMNS = ["round", "silo", "model", "split", "metric", "value"]


@dataclass(frozen=True)
class SweepRunRecord:
    """One run of a sweep as the store keeps it: what ``fedkit.run`` records, and its place in the sweep.

    Parameters
    ----------
    run_id
        The run's id.
    status
        ``finished`` or ``stopped``.
    config
        Its RunConfig fields.
    data
        Its data provenance.
    summary
        Its summary (``RunResult.summary()``).
    params
        Its final parameters.
    rows
        The metric rows kept (a sweep keeps each run's final evaluation, or every round).
    configuration
        Its row of the sweep's table.
    seed
        Its seed.
    fold
        Its validation fold (None: scored on the test sets).
    """

    run_id: str
    status: str
    config: dict[str, Any]
    data: dict[str, Any]
    summary: dict[str, Any]
    params: np.ndarray
    rows: list[dict[str, Any]]
    configuration: int
    seed: int
    fold: int | None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _sql_value(value: float | None) -> float | None:
    """A metric value as SQLite keeps it: NaN (an undefined AUC) as NULL."""
    return None if value is None or np.isnan(value) else float(value)


def _insert_audit(con: sqlite3.Connection, run_id: str, records: Sequence[Mapping[str, Any]]) -> None:
    """Append audit records as their canonical JSON (the text their hash is computed over)."""
    from fedkit.privacy.audit import canonical

    con.executemany(
        "INSERT INTO audit (run_id, seq, record) VALUES (?, ?, ?)",
        [(run_id, r["seq"], canonical(r).decode()) for r in records],
    )


def _alive(pid: int | None, host: str | None) -> bool:
    if pid is None or host != socket.gethostname():
        return True  # cannot tell from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalStore:
    """The SQLite run store at ``path`` (default ``$FEDKIT_HOME/runs.sqlite``).

    Parameters
    ----------
    path
        The SQLite file (default ``$FEDKIT_HOME/runs.sqlite``).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else home_dir() / "runs.sqlite"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        try:
            con.execute("PRAGMA foreign_keys = ON")
            if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:  # DDL once per file, not per call
                con.executescript(f"{SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};")
            with con:  # one transaction: commit on success, roll back on error
                yield con
        finally:
            con.close()

    # -- Tracker -------------------------------------------------------------------------------
    def start_run(self, run_id: str, config: dict[str, Any], data: dict[str, Any]) -> None:
        """Insert the run as ``running``."""
        with self._connect() as con:
            con.execute(
                "INSERT INTO runs (run_id, status, created_at, fedkit_version, config, data, pid, host)"
                " VALUES (?, 'running', ?, ?, ?, ?, ?, ?)",
                (run_id, _now(), __version__, json.dumps(config), json.dumps(data), os.getpid(), socket.gethostname()),
            )

    def log_round(self, run_id: str, server_round: int, rows: list[dict[str, Any]]) -> None:
        """Insert one round's metric rows in one transaction (NaN stored as NULL)."""
        with self._connect() as con:
            values = [(run_id, *(r[c] for c in HISTORY_COLUMNS[:-1]), _sql_value(r["value"])) for r in rows]
            con.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)", values)

    def save_round(
        self,
        run_id: str,
        server_round: int,
        rows: list[dict[str, Any]],
        *,
        checkpoint: bytes | None = None,
        audit: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """One round in one transaction: its metric rows, the run's checkpoint after it, its audit records."""
        with self._connect() as con:
            values = [(run_id, *(r[c] for c in HISTORY_COLUMNS[:-1]), _sql_value(r["value"])) for r in rows]
            con.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)", values)
            if checkpoint is not None:
                con.execute(
                    "INSERT OR REPLACE INTO checkpoints (run_id, round, state) VALUES (?, ?, ?)",
                    (run_id, server_round, checkpoint),
                )
            _insert_audit(con, run_id, audit)

    def append_audit(self, run_id: str, records: Sequence[Mapping[str, Any]]) -> None:
        """Append audit records (a run's start, resume or end) in one transaction."""
        with self._connect() as con:
            _insert_audit(con, run_id, records)

    def end_run(
        self,
        run_id: str,
        status: str,
        *,
        summary: dict[str, Any] | None = None,
        params: np.ndarray | None = None,
        error: str | None = None,
    ) -> None:
        """Set the final status, summary, model weights (float32 bytes) and error."""
        blob = None if params is None else np.asarray(params, dtype=np.float32).tobytes()
        with self._connect() as con:
            con.execute(
                "UPDATE runs SET status = ?, finished_at = ?, summary = ?, params = ?, error = ? WHERE run_id = ?",
                (status, _now(), None if summary is None else json.dumps(summary), blob, error, run_id),
            )

    def resume_run(self, run_id: str) -> int:
        """Mark a stopped, interrupted or failed run ``running`` again in this process; returns its checkpoint round.

        Metric rows after the checkpoint (none, as both are written together) are dropped, and so is
        the run's end event for remote trackers, so the end of the resumed run is delivered anew.
        """
        with self._connect() as con:
            full_id = self._row(con, run_id)["run_id"]
            found = con.execute("SELECT round FROM checkpoints WHERE run_id = ?", (full_id,)).fetchone()
            if found is None:
                raise ResumeError(
                    f"Run {full_id} has no checkpoint to resume from (recorded before fedkit kept checkpoints, or "
                    "killed before its first round was stored); start it again with `fedkit run`."
                )
            con.execute("DELETE FROM metrics WHERE run_id = ? AND round > ?", (full_id, found[0]))
            con.execute("DELETE FROM outbox WHERE run_id = ? AND kind = 'end'", (full_id,))
            con.execute(
                "UPDATE runs SET status = 'running', finished_at = NULL, summary = NULL, params = NULL, error = NULL,"
                " pid = ?, host = ? WHERE run_id = ?",
                (os.getpid(), socket.gethostname(), full_id),
            )
        return int(found[0])

    def checkpoint(self, run_id: str) -> bytes | None:
        """The run's last checkpoint (see :mod:`fedkit.tracking.checkpoint`), or None when it has none."""
        with self._connect() as con:
            full_id = self._row(con, run_id)["run_id"]
            found = con.execute("SELECT state FROM checkpoints WHERE run_id = ?", (full_id,)).fetchone()
        return None if found is None else bytes(found[0])

    def audit_log(self, run_id: str) -> list[dict[str, Any]]:
        """The run's audit records in storage order (by sequence number), as written."""
        with self._connect() as con:
            full_id = self._row(con, run_id)["run_id"]
            rows = con.execute("SELECT record FROM audit WHERE run_id = ? ORDER BY seq", (full_id,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def verify_audit(self, run_id: str) -> tuple[str, int]:
        """Check the run's audit log (:func:`fedkit.privacy.audit.verify`); returns its head hash and length.

        Raises :class:`~fedkit.errors.AuditError` naming the first edited, removed or reordered record.

        Parameters
        ----------
        run_id
            The run (a unique prefix is enough).
        """
        from fedkit.privacy.audit import verify

        run = self.get(run_id)
        records = self.audit_log(run["run_id"])
        ended = run["status"] in ("finished", "failed", "stopped")
        return verify(records, run["run_id"], ended=ended), len(records)

    # -- sweeps: many runs written in one transaction -----------------------------------------
    def start_sweep(self, sweep_id: str, spec: dict[str, Any]) -> None:
        """Insert a sweep as ``running``.

        Parameters
        ----------
        sweep_id
            The sweep's id.
        spec
            What it runs: base config, grid, seeds, folds, metric.
        """
        with self._connect() as con:
            con.execute(
                "INSERT INTO sweeps (sweep_id, status, created_at, fedkit_version, spec)"
                " VALUES (?, 'running', ?, ?, ?)",
                (sweep_id, _now(), __version__, json.dumps(spec)),
            )

    def add_sweep_runs(self, sweep_id: str, runs: Sequence[SweepRunRecord]) -> None:
        """Record finished runs of a sweep in one transaction: each run as ``fedkit.run`` records one, and its place.

        One transaction for many runs (instead of one per round of each run) is what keeps recording
        a sweep cheap beside its training.

        Parameters
        ----------
        sweep_id
            The sweep they belong to (started with :meth:`start_sweep`).
        runs
            The finished (or stopped) runs.
        """
        now, pid, host = _now(), os.getpid(), socket.gethostname()
        with self._connect() as con:
            con.executemany(
                "INSERT INTO runs (run_id, status, created_at, finished_at, fedkit_version, config, data, summary,"
                " params, pid, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.run_id,
                        r.status,
                        now,
                        now,
                        __version__,
                        json.dumps(r.config),
                        json.dumps(r.data),
                        json.dumps(r.summary),
                        np.asarray(r.params, dtype=np.float32).tobytes(),
                        pid,
                        host,
                    )
                    for r in runs
                ],
            )
            con.executemany(
                "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.run_id, *(row[c] for c in HISTORY_COLUMNS[:-1]), _sql_value(row["value"]))
                    for r in runs
                    for row in r.rows
                ],
            )
            con.executemany(
                "INSERT INTO sweep_runs VALUES (?, ?, ?, ?, ?)",
                [(sweep_id, r.run_id, r.configuration, r.seed, r.fold) for r in runs],
            )

    def end_sweep(self, sweep_id: str, status: str, summary: dict[str, Any] | None = None) -> None:
        """Set a sweep's final status and its summary.

        Parameters
        ----------
        sweep_id
            The sweep's id.
        status
            ``finished``, ``stopped`` or ``failed``.
        summary
            The table, the best configuration and the notes (``SweepResult.summary()``).
        """
        with self._connect() as con:
            con.execute(
                "UPDATE sweeps SET status = ?, finished_at = ?, summary = ? WHERE sweep_id = ?",
                (status, _now(), None if summary is None else json.dumps(summary), sweep_id),
            )

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        """One sweep: status, times, spec, summary and its runs' places (configuration, seed, fold).

        Parameters
        ----------
        sweep_id
            The sweep's id, or a unique prefix of it.

        Returns
        -------
        dict
            The sweep, its runs in the order they were recorded.

        Raises
        ------
        RunNotFoundError
            No sweep, or several, match ``sweep_id``.
        """
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            rows = con.execute(
                "SELECT * FROM sweeps WHERE sweep_id = ? OR sweep_id LIKE ?", (sweep_id, sweep_id + "%")
            ).fetchall()
            if len(rows) != 1:
                found = "no sweep" if not rows else f"{len(rows)} sweeps"
                raise RunNotFoundError(
                    f"Sweep id {sweep_id!r} matches {found} in the run store {self.path}; `fedkit.sweeps()` lists them."
                )
            row = rows[0]
            members = con.execute(
                "SELECT run_id, configuration, seed, fold FROM sweep_runs WHERE sweep_id = ? ORDER BY rowid",
                (row["sweep_id"],),
            ).fetchall()
        return {
            "sweep_id": row["sweep_id"],
            "status": row["status"],
            "created_at": row["created_at"],
            "finished_at": row["finished_at"],
            "fedkit_version": row["fedkit_version"],
            "spec": json.loads(row["spec"]),
            "summary": None if row["summary"] is None else json.loads(row["summary"]),
            "runs": [dict(m) for m in members],
        }

    def list_sweeps(self) -> list[dict[str, Any]]:
        """Every sweep, newest first: id, status, time, number of runs and the grid's fields."""
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            rows = con.execute(
                "SELECT s.*, COUNT(r.run_id) AS n_runs FROM sweeps s LEFT JOIN sweep_runs r USING (sweep_id)"
                " GROUP BY s.sweep_id ORDER BY s.created_at DESC"
            ).fetchall()
        return [
            {
                "sweep_id": row["sweep_id"],
                "status": row["status"],
                "created_at": row["created_at"],
                "runs": row["n_runs"],
                "grid": ", ".join(sorted({k for g in json.loads(row["spec"])["grid"] for k in g})),
            }
            for row in rows
        ]

    # -- outbox: events for remote trackers, kept until delivered ------------------------------
    def enqueue(
        self, run_id: str, backend: str, seq: int, kind: str, server_round: int | None, target: dict[str, Any]
    ) -> None:
        """Record that event ``seq`` (start, round or end) of ``run_id`` is owed to ``backend`` at ``target``.

        The event's payload is not copied: delivery reads it from the run and metric tables, the source of truth.
        ``created_at`` is fixed here and becomes the remote timestamp, so every re-delivery sends identical points.

        Parameters
        ----------
        run_id
            The run's id.
        backend
            The backend's registry name.
        seq
            The event's number within the run (start is 0).
        kind
            ``"start"``, ``"round"`` or ``"end"``.
        server_round
            The round of a ``round`` event, else None.
        target
            The JSON settings that rebuild the backend.
        """
        with self._connect() as con:
            con.execute(
                "INSERT OR IGNORE INTO outbox (run_id, backend, seq, kind, round, target, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, backend, seq, kind, server_round, json.dumps(target, sort_keys=True), _now()),
            )

    def pending(self, run_id: str | None = None, backend: str | None = None) -> list[dict[str, Any]]:
        """Undelivered events, oldest run first and in order within a run (a unique id prefix is enough).

        Parameters
        ----------
        run_id
            Only this run's events (a unique id prefix is enough); None for all runs.
        backend
            Only this backend's events; None for all.
        """
        with self._connect() as con:
            full_id = None if run_id is None else self._row(con, run_id)["run_id"]
            rows = con.execute(
                f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM outbox WHERE delivered_at IS NULL"  # noqa: S608 (constant columns)
                " AND (? IS NULL OR run_id = ?) AND (? IS NULL OR backend = ?) ORDER BY run_id, backend, seq",
                (full_id, full_id, backend, backend),
            ).fetchall()
        out = [dict(zip(OUTBOX_COLUMNS, r, strict=True)) for r in rows]
        for event in out:
            event["target"] = json.loads(event["target"])
        return out

    def attempt(self, run_id: str, backend: str, seq: int) -> None:
        """Count a delivery attempt, before sending: an undelivered event with attempts may have arrived.

        Parameters
        ----------
        run_id
            The run's id.
        backend
            The backend's registry name.
        seq
            The event's number within the run (start is 0).
        """
        with self._connect() as con:
            con.execute(
                "UPDATE outbox SET attempts = attempts + 1 WHERE run_id = ? AND backend = ? AND seq = ?",
                (run_id, backend, seq),
            )

    def failed(self, run_id: str, backend: str, seq: int, error: str) -> None:
        """Record why delivering an event failed; it stays pending.

        Parameters
        ----------
        run_id
            The run's id.
        backend
            The backend's registry name.
        seq
            The event's number within the run (start is 0).
        error
            Why it failed.
        """
        with self._connect() as con:
            con.execute(
                "UPDATE outbox SET last_error = ? WHERE run_id = ? AND backend = ? AND seq = ?",
                (error, run_id, backend, seq),
            )

    def delivered(self, run_id: str, backend: str, seq: int) -> None:
        """Mark an event delivered (after the backend acknowledged it).

        Parameters
        ----------
        run_id
            The run's id.
        backend
            The backend's registry name.
        seq
            The event's number within the run (start is 0).
        """
        with self._connect() as con:
            con.execute(
                "UPDATE outbox SET delivered_at = ?, last_error = NULL WHERE run_id = ? AND backend = ? AND seq = ?",
                (_now(), run_id, backend, seq),
            )

    def delivery(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Per backend: events delivered, events pending, the last error and the target.

        Parameters
        ----------
        run_id
            The run's id.
        """
        with self._connect() as con:
            full_id = self._row(con, run_id)["run_id"]
            rows = con.execute(
                "SELECT backend, COUNT(delivered_at), COUNT(*) - COUNT(delivered_at), MAX(last_error), MAX(target)"
                " FROM outbox WHERE run_id = ? GROUP BY backend ORDER BY backend",
                (full_id,),
            ).fetchall()
        return {b: {"delivered": d, "pending": p, "last_error": e, "target": json.loads(t)} for b, d, p, e, t in rows}

    # -- reading -------------------------------------------------------------------------------
    def _row(self, con: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        con.row_factory = sqlite3.Row
        rows = con.execute("SELECT * FROM runs WHERE run_id = ? OR run_id LIKE ?", (run_id, run_id + "%")).fetchall()
        exact = [r for r in rows if r["run_id"] == run_id]
        if exact:
            return exact[0]
        if len(rows) == 1:
            return rows[0]
        if not rows:
            raise RunNotFoundError(
                f"No run {run_id!r} in the run store {self.path}; `fedkit runs list` shows the recorded runs."
            )
        raise RunNotFoundError(f"Run id prefix {run_id!r} matches {len(rows)} runs; give more characters.")

    @staticmethod
    def _status(row: sqlite3.Row) -> str:
        if row["status"] == "running" and not _alive(row["pid"], row["host"]):
            return "interrupted"
        return str(row["status"])

    def get(self, run_id: str) -> dict[str, Any]:
        """One run: status, times, version, config, data provenance, summary, error and final params.

        Parameters
        ----------
        run_id
            The run's id, or a prefix of it that matches one run only.

        Raises
        ------
        RunNotFoundError
            When no run, or more than one, matches ``run_id``.
        """
        with self._connect() as con:
            row = self._row(con, run_id)
        return {
            "run_id": row["run_id"],
            "status": self._status(row),
            "created_at": row["created_at"],
            "finished_at": row["finished_at"],
            "fedkit_version": row["fedkit_version"],
            "config": json.loads(row["config"]),
            "data": json.loads(row["data"]),
            "summary": None if row["summary"] is None else json.loads(row["summary"]),
            "error": row["error"],
            "params": None if row["params"] is None else np.frombuffer(row["params"], dtype=np.float32).copy(),
        }

    def history(self, run_id: str, server_round: int | None = None) -> list[dict[str, Any]]:
        """The run's metric rows ordered by round (NULL back to NaN).

        Parameters
        ----------
        run_id
            The run's id (a unique prefix is enough).
        server_round
            Only this round's rows (what an outbox round event needs); None: every round's.
        """
        with self._connect() as con:
            full_id = self._row(con, run_id)["run_id"]
            rows = con.execute(
                f"SELECT {', '.join(HISTORY_COLUMNS)} FROM metrics WHERE run_id = ?"  # noqa: S608 (constant column list)
                " AND (? IS NULL OR round = ?) ORDER BY round, rowid",
                (full_id, server_round, server_round),
            ).fetchall()
        return [dict(zip(HISTORY_COLUMNS, (*r[:5], float("nan") if r[5] is None else r[5]), strict=True)) for r in rows]

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run, newest first: id, status, times, the main config fields and the final scores."""
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            rows = con.execute("SELECT * FROM runs ORDER BY created_at DESC").fetchall()
        out = []
        for row in rows:
            config = json.loads(row["config"])
            final = (json.loads(row["summary"]) or {}).get("final", {}) if row["summary"] else {}
            out.append(
                {
                    "run_id": row["run_id"],
                    "status": self._status(row),
                    "created_at": row["created_at"],
                    "split": config.get("split"),
                    "strategy": config.get("strategy"),
                    "rounds": config.get("rounds"),
                    "seed": config.get("seed"),
                    "avg_accuracy": final.get("avg_accuracy"),
                    "pooled_auc": final.get("pooled", {}).get("auc"),
                }
            )
        return out
