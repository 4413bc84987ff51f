"""Delivery to remote trackers through an outbox in the local store: nothing is lost when a backend fails.

Every event a remote backend is owed (run start, each round, run end) is first written to the
``outbox`` table of the local SQLite store, then sent in order. A backend that fails (down,
throttled past its bounded retries, credentials missing) is not tried again for the rest of the
run, so training is never slowed beyond one bounded retry; its events stay marked not delivered,
one warning says so, and :func:`sync` (``fedkit runs sync``) delivers them later.

Delivery is idempotent by construction, so re-sending an event whose first attempt may have
arrived (the process was killed before the local mark) never duplicates anything: remote names
and ids are deterministic or looked up by a tag, "already exists" means reuse, and metric points
carry the event's fixed timestamp and ``step = round``.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Any

import numpy as np

from fedkit.errors import DeliveryWarning
from fedkit.tracking.base import Backend, Event
from fedkit.tracking.local import LocalStore
from fedkit.tracking.registry import backend_info

END_SEQ = 1_000_000_000
"""The outbox sequence number of a run's end event (start is 0, round r is r + 1)."""


def load_event(store: LocalStore, pending: dict[str, Any]) -> Event:
    """The :class:`Event` of an outbox row, with the run (and the round's metric rows) from the store.

    Parameters
    ----------
    store
        The local run store.
    pending
        The outbox row.
    """
    run = store.get(pending["run_id"])
    rows = []
    if pending["kind"] == "round":
        rows = store.history(pending["run_id"], pending["round"])  # that round's rows only: linear in rounds
    return Event(
        run_id=pending["run_id"],
        seq=pending["seq"],
        kind=pending["kind"],
        round=pending["round"],
        created_at=datetime.fromisoformat(pending["created_at"]),
        in_doubt=pending["attempts"] > 0,
        run=run,
        rows=rows,
    )


def deliver_pending(
    store: LocalStore,
    backend: Backend,
    run_id: str,
    on_delivered: Callable[[Event], None] | None = None,
) -> tuple[int, str | None]:
    """Send ``run_id``'s undelivered events to ``backend`` in order; stop at the first failure.

    Returns the number delivered and the error that stopped delivery (None when all arrived).

    Parameters
    ----------
    store
        The local run store.
    backend
        The backend to send to.
    run_id
        The run's id.
    on_delivered
        Called with each event once it arrived.

    Returns
    -------
    tuple[int, str | None]
        The number delivered and the error that stopped delivery (None when all arrived).
    """
    delivered = 0
    for pending in store.pending(run_id, backend.name):
        event = load_event(store, pending)
        store.attempt(run_id, backend.name, event.seq)
        try:
            backend.deliver(event)
        except Exception as exc:  # any backend failure (network, auth, throttling, API) keeps the event queued
            error = f"{type(exc).__name__}: {exc}".strip()
            store.failed(run_id, backend.name, event.seq, error[:2000])
            return delivered, error
        store.delivered(run_id, backend.name, event.seq)
        delivered += 1
        if on_delivered is not None:
            on_delivered(event)
    return delivered, None


def caller_level(frame: FrameType | None) -> int:
    """The ``stacklevel`` that points a warning at the first frame outside the fedkit package (the user's call).

    The depth between the user's ``fedkit.run`` and the tracker depends on the path a run takes through the
    facade, the round loop and the recorder; counting frames keeps the warning on the user's line whatever it is.

    Parameters
    ----------
    frame
        The frame that calls ``warnings.warn`` (``sys._getframe()`` there): stack level 1.

    Returns
    -------
    int
        The ``stacklevel`` of the first frame, from ``frame`` outwards, whose file is not in the package
        (one past the outermost frame when every frame is in it).
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


class RemoteTracker:
    """A :class:`~fedkit.tracking.base.Tracker` that queues every event for ``backend`` in ``store`` and sends it.

    Put it after the :class:`LocalStore` tracker writing to the same ``store`` (``make_trackers`` does): events
    are read back from the store when they are sent.

    Parameters
    ----------
    backend
        The backend to send to.
    store
        The local run store that queues the events.
    """

    def __init__(self, backend: Backend, store: LocalStore) -> None:
        self.backend = backend
        self.store = store
        self.error: str | None = None

    def _push(self, run_id: str, seq: int, kind: str, server_round: int | None) -> None:
        self.store.enqueue(run_id, self.backend.name, seq, kind, server_round, self.backend.target())
        if self.error is not None and kind != "end":
            return  # down for this run: keep queuing, do not slow training; one more try at the end
        _, error = deliver_pending(self.store, self.backend, run_id)
        if error is not None and self.error is None:
            warnings.warn(
                f"The {self.backend.name} tracker failed ({error}). Training goes on; its events are kept in "
                f"the local store {self.store.path} marked not delivered. Deliver them when it is back with "
                f"`fedkit runs sync {run_id}`.",
                DeliveryWarning,
                stacklevel=caller_level(sys._getframe()),
            )
        self.error = error  # the last try: down until a delivery succeeds (the end tries once more)

    def start_run(self, run_id: str, config: dict[str, Any], data: dict[str, Any]) -> None:
        """Queue and send the run's start."""
        self._push(run_id, 0, "start", None)

    def log_round(self, run_id: str, server_round: int, rows: list[dict[str, Any]]) -> None:
        """Queue and send one round's metrics (read back from the store)."""
        self._push(run_id, server_round + 1, "round", server_round)

    def end_run(
        self,
        run_id: str,
        status: str,
        *,
        summary: dict[str, Any] | None = None,
        params: np.ndarray | None = None,
        error: str | None = None,
    ) -> None:
        """Queue the run's end and try once more to send everything still pending."""
        self._push(run_id, END_SEQ, "end", None)


def backend_from_target(name: str, target: dict[str, Any]) -> Backend:
    """Rebuild a backend from the name and target recorded with its events.

    Parameters
    ----------
    name
        The backend's registry name.
    target
        The JSON settings recorded with its events.
    """
    return backend_info(name).load()(**target)


def sync(
    run_id: str | None = None,
    *,
    store: LocalStore | None = None,
    progress: bool = True,
    backends: dict[str, Backend] | None = None,
) -> list[dict[str, Any]]:
    """Deliver every undelivered event (of ``run_id``, or of all runs) to its backend; safe to repeat.

    Parameters
    ----------
    run_id
        Only this run's events (a unique id prefix is enough); None for all runs.
    store
        The local run store (default: ``$FEDKIT_HOME/runs.sqlite``).
    progress
        Show a progress bar.
    backends
        Backends by name, instead of those rebuilt from the recorded targets (tests).

    Returns
    -------
    list[dict]
        One row per (run, backend): events delivered now, still pending, and the error that stopped delivery.
    """
    from fedkit.progress import progress_bar

    store = store or LocalStore()
    queue = store.pending(run_id)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for event in queue:
        groups.setdefault((event["run_id"], event["backend"]), event["target"])
    report = []
    with progress_bar(progress, total=len(queue), desc="sync", unit="event") as bar:
        for (rid, name), target in groups.items():
            backend = (backends or {}).get(name) or backend_from_target(name, target)
            delivered, error = deliver_pending(store, backend, rid, on_delivered=lambda _event: bar.update())
            left = len(store.pending(rid, name))
            report.append({"run_id": rid, "backend": name, "delivered": delivered, "pending": left, "error": error})
    return report
