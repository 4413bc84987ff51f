"""The tracking contract: the :class:`Tracker` the round loop calls, the :class:`Backend` a remote tracker delivers
to through the outbox, the :class:`Event` it is told, and the metric names every backend shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np

STATUSES: tuple[str, ...] = ("running", "finished", "failed", "stopped")


class Tracker(Protocol):
    """Receives a run's life: start, one batch of metric rows per round, end with a status."""

    def start_run(self, run_id: str, config: dict[str, Any], data: dict[str, Any]) -> None:
        """A run begins with this config and data provenance.

        Parameters
        ----------
        run_id
            The run's id.
        config
            The run's RunConfig fields.
        data
            Its data provenance.
        """
        ...

    def log_round(self, run_id: str, server_round: int, rows: list[dict[str, Any]]) -> None:
        """Metric rows ``{round, silo, model, split, metric, value}`` of one round (step = round).

        Parameters
        ----------
        run_id
            The run's id.
        server_round
            The round (step = round; 0 is the initial model).
        rows
            Metric rows ``{round, silo, model, split, metric, value}``.
        """
        ...

    def end_run(
        self,
        run_id: str,
        status: str,
        *,
        summary: dict[str, Any] | None = None,
        params: np.ndarray | None = None,
        error: str | None = None,
    ) -> None:
        """The run ended with ``status``; ``summary`` and final ``params`` when it got that far.

        Parameters
        ----------
        run_id
            The run's id.
        status
            ``finished``, ``stopped`` or ``failed``.
        summary
            The run's summary, when it got that far.
        params
            The final parameters, when it got that far.
        error
            The traceback of a failed run.
        """
        ...


@runtime_checkable
class RoundStore(Protocol):
    """A tracker that takes each round with its checkpoint and the run's audit records (instead of ``log_round``).

    The round loop gives it each round's metric rows, checkpoint and audit records together
    (:meth:`save_round`, one transaction). The local store is one (:class:`RunStore`); the remote
    server's relay is another, which passes the audit records on to the submitting machine and
    keeps no checkpoint.
    """

    def save_round(
        self,
        run_id: str,
        server_round: int,
        rows: list[dict[str, Any]],
        *,
        checkpoint: bytes | None = None,
        audit: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Keep one round's metric rows, the run's checkpoint after it and its audit records, all or nothing.

        Parameters
        ----------
        run_id
            The run.
        server_round
            The round.
        rows
            The round's metric rows.
        checkpoint
            The run's checkpoint after the round (:func:`fedkit.tracking.checkpoint.encode`), or None.
        audit
            The round's audit records (:mod:`fedkit.privacy.audit`).
        """
        ...

    def append_audit(self, run_id: str, records: Sequence[Mapping[str, Any]]) -> None:
        """Append audit records outside a round (start, resume, end).

        Parameters
        ----------
        run_id
            The run.
        records
            The records, in chain order.
        """
        ...


@runtime_checkable
class RunStore(RoundStore, Protocol):
    """A :class:`RoundStore` that also keeps what resuming and auditing a run need (the local store is one)."""

    def resume_run(self, run_id: str) -> int:
        """Mark the run running again in this process; returns the round of its last checkpoint.

        Parameters
        ----------
        run_id
            The run (a unique prefix is enough).
        """
        ...

    def checkpoint(self, run_id: str) -> bytes | None:
        """The run's last checkpoint, or None.

        Parameters
        ----------
        run_id
            The run (a unique prefix is enough).
        """
        ...

    def audit_log(self, run_id: str) -> list[dict[str, Any]]:
        """The run's audit records in storage order.

        Parameters
        ----------
        run_id
            The run (a unique prefix is enough).
        """
        ...

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """The run's metric rows, ordered by round.

        Parameters
        ----------
        run_id
            The run (a unique prefix is enough).
        """
        ...


@dataclass(frozen=True)
class Event:
    """One outbox event with its payload read back from the local store (the source of truth).

    Parameters
    ----------
    run_id
        The run's id.
    seq
        The event's number within the run (start is 0).
    kind
        ``"start"``, ``"round"`` or ``"end"``.
    round
        The round of a ``round`` event, else None.
    created_at
        When the event was queued: the remote timestamp of every delivery.
    in_doubt
        An earlier delivery was attempted and may have arrived.
    run
        The run as the store holds it.
    rows
        The round's metric rows (``round`` events).
    """

    run_id: str
    seq: int
    kind: str
    round: int | None
    created_at: datetime
    in_doubt: bool
    run: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def timestamp_ms(self) -> int:
        """The event's fixed time in milliseconds since the epoch (the remote metric timestamp)."""
        return int(self.created_at.timestamp() * 1000)


class Backend(Protocol):
    """A remote tracker: built by :meth:`from_settings`, rebuilt from its JSON ``target`` at sync time, told one
    event at a time."""

    name: str

    @classmethod
    def from_settings(
        cls, experiment: str, *, tracking_uri: str | None = None, region: str | None = None, **options: Any
    ) -> Backend:
        """The backend of ``make_trackers``'s settings (each backend takes the ones that concern it).

        Parameters
        ----------
        experiment
            The experiment runs are logged to.
        tracking_uri
            MLflow's tracking URI.
        region
            The AWS region.
        **options
            Backend-specific settings (SageMaker: ``max_attempts``, ``timeout``).
        """
        ...

    def target(self) -> dict[str, Any]:
        """JSON settings that rebuild this backend in another process (``fedkit runs sync``)."""
        ...

    def deliver(self, event: Event) -> None:
        """Send one event; idempotent, raising on any failure so the event stays pending.

        Parameters
        ----------
        event
            The event to send.
        """
        ...


def metric_name(row: dict[str, Any]) -> str:
    """A metric row's name in a remote tracker: ``{model}_{split}_{metric}``, e.g. ``global_test_auc``.

    Parameters
    ----------
    row
        A metric row.
    """
    return f"{row['model']}_{row['split']}_{row['metric']}"
