"""The server's side: the :class:`~fedkit.engines.base.Engine` fedkit's round loop drives over FLARE tasks.

The engine only moves parameters: it sends a task to the chosen sites and turns their replies into
:class:`~fedkit.engines.base.FitReply` / :class:`~fedkit.engines.base.Scores`. A site that does not
answer in time is dropped from that round (as long as ``min_silos`` answered), the dropout goes into
the run's notes, and the site is asked again next round — when it answers it has rejoined. The
:class:`RelayTracker` keeps every tracker call as an event the notebook fetches, so the notebook's own
trackers (its local store) record the run as it goes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkit._version import __version__
from fedkit.data.silos import Federation, Provenance, Silo
from fedkit.engines.base import FitReply, Scores
from fedkit.errors import RemoteRunError
from fedkit.remote import wire
from fedkit.strategies.base import LocalTerm

if TYPE_CHECKING:
    from fedkit.config import RunConfig
    from fedkit.result import RoundEvent, RunResult

Transport = Callable[[str, dict[str, Any], Sequence[str], int], dict[str, dict[str, Any]]]
"""``(task, payload, sites, min_replies) -> {site: reply payload}``: one broadcast, the replies that came in time."""


@dataclass(frozen=True)
class Site:
    """What the server knows of a hospital's site after hello: never its rows.

    Parameters
    ----------
    site
        The FLARE site's name.
    silo
        Its hospital's silo name.
    index
        The silo's index in the federation.
    n_train
        Its train rows.
    y_test
        Its test labels (for pooled metrics and AUC notes).
    """

    site: str
    silo: str
    index: int
    n_train: int
    y_test: np.ndarray


def check_versions(versions: dict[str, str]) -> None:
    """Refuse sites whose fedkit is not the server's: they would train and encode differently.

    Parameters
    ----------
    versions
        Each site's fedkit version, by site name.

    Raises
    ------
    RemoteRunError
        When a site's version differs from the server's.
    """
    other = {site: v for site, v in sorted(versions.items()) if v != __version__}
    if other:
        raise RemoteRunError(
            f"The server runs fedkit {__version__} but site(s) "
            + ", ".join(f"{site} run fedkit {version}" for site, version in other.items())
            + f". Install the same fedkit on every site and the server (pip install fedkit=={__version__}), "
            "then restart those sites."
        )


def hello(
    transport: Transport, config: dict[str, Any], sites: Sequence[str], min_silos: int
) -> tuple[list[Site], Federation]:
    """Ask every site to load its silo; returns the sites in federation order and a row-free outline of the federation.

    The outline has the right train/test sizes and test labels (the round loop pools test metrics and explains
    undefined AUCs from them) and zero feature columns: the server holds no rows.

    Parameters
    ----------
    transport
        Sends tasks to the sites and gathers their replies (FLARE, or in-process in tests).
    config
        The run's RunConfig fields.
    sites
        The sites to ask.
    min_silos
        Fewest sites a round may aggregate.

    Raises
    ------
    RemoteRunError
        When fewer than ``min_silos`` sites answer, or a site's fedkit differs.
    """
    replies = transport(wire.HELLO, {"config": config}, sites, min_silos)
    if len(replies) < min_silos:
        raise RemoteRunError(
            f"Only {len(replies)} of {len(sites)} sites ({', '.join(replies) or 'none'}) answered hello; "
            f"the run needs min_silos={min_silos}. Start the missing sites or lower min_silos."
        )
    check_versions({site: r["fedkit_version"] for site, r in replies.items()})
    known = sorted(
        (Site(site, r["silo"], r["index"], r["n_train"], wire.unpack(r["y_test"])) for site, r in replies.items()),
        key=lambda s: s.index,
    )
    first = next(iter(replies.values()))
    silos = tuple(
        Silo(
            s.silo,
            np.zeros((s.n_train, 0), np.float32),
            np.zeros(s.n_train, np.float32),
            np.zeros((len(s.y_test), 0), np.float32),
            s.y_test,
        )
        for s in known
    )
    sha256: dict[str, str] = {}
    for r in replies.values():
        sha256.update(r["data"]["sha256"])
    provenance = Provenance(
        "remote sites: " + ", ".join(f"{site}:{r['data']['directory']}" for site, r in sorted(replies.items())),
        sha256,
        all(r["data"]["verified"] for r in replies.values()),
    )
    outline = Federation(silos, tuple(first["features"]), config["split"], provenance, {"remote": True})
    return known, outline


class RemoteEngine:
    """Fit and evaluate by FLARE tasks to the sites; drops a site that does not answer a round in time.

    Parameters
    ----------
    transport
        Sends tasks to the sites and gathers their replies (FLARE, or in-process in tests).
    sites
        The sites that answered hello, in federation order.
    init
        The initial global parameters.
    finetune_steps
        Fine-tuning steps of each site's personal model (``personalize="finetune"``), else None.
    min_silos
        Fewest sites a round may aggregate.
    """

    def __init__(
        self,
        transport: Transport,
        sites: Sequence[Site],
        init: np.ndarray,
        *,
        finetune_steps: int | None = None,
        min_silos: int = 1,
    ) -> None:
        self.transport = transport
        self.sites = list(sites)
        self._by_silo = {s.silo: s for s in sites}
        self._init = np.asarray(init, dtype=np.float32)
        self.finetune_steps = finetune_steps
        self.min_silos = min_silos
        self.notes: list[str] = []
        self.on_note: Callable[[str], None] | None = None
        self._missing: set[str] = set()
        self._round = 0

    @property
    def silos(self) -> tuple[str, ...]:
        """Silo names in federation order."""
        return tuple(s.silo for s in self.sites)

    def initial_params(self) -> np.ndarray:
        """The seeded initial parameters (built on the server from the seed, as every site builds them)."""
        return self._init.copy()

    def _note(self, text: str) -> None:
        self.notes.append(text)
        if self.on_note is not None:
            self.on_note(text)

    def _ask(self, task: str, payload: dict[str, Any], silos: Sequence[str], what: str) -> dict[str, dict[str, Any]]:
        """Replies by silo name; records dropouts and rejoins; raises when fewer than ``min_silos`` answered."""
        targets = [self._by_silo[name].site for name in silos]
        need = min(self.min_silos, len(targets))
        replies = self.transport(task, payload, targets, need)
        by_silo = {
            self._by_silo[name].silo: replies[self._by_silo[name].site]
            for name in silos
            if self._by_silo[name].site in replies
        }
        for name in silos:
            if name not in by_silo and name not in self._missing:
                self._missing.add(name)
                self._note(
                    f"Round {self._round}: silo {name!r} dropped out ({what}: no reply in time); "
                    f"the round went on with {len(by_silo)} of {len(silos)} silos."
                )
            elif name in by_silo and name in self._missing:
                self._missing.discard(name)
                self._note(f"Round {self._round}: silo {name!r} rejoined ({what}).")
        if len(by_silo) < need:
            raise RemoteRunError(
                f"Round {self._round}: only {len(by_silo)} of {len(silos)} silos answered {what} "
                f"({', '.join(by_silo) or 'none'}); the run needs min_silos={self.min_silos}. "
                "Check that the sites are up and can reach the server, or lower min_silos."
            )
        return by_silo

    def fit(
        self, params: np.ndarray, server_round: int, silos: Sequence[str], term: LocalTerm | None = None
    ) -> list[FitReply]:
        """Local training on each chosen site; the replies of the sites that answered in time."""
        self._round = server_round
        term = term or LocalTerm()
        payload = {
            "round": server_round,
            "params": wire.pack(np.asarray(params, np.float32)),
            "prox_mu": float(term.prox_mu),
            "anchor": wire.pack(term.anchor),
            "control": wire.pack(term.control),
        }
        replies = self._ask(wire.FIT, payload, silos, "training")
        return [
            FitReply(
                name,
                wire.unpack(r["params"]),
                int(r["n_train"]),
                float(r["train_loss"]),
                int(r["steps"]),
                Scores(name, self._by_silo[name].y_test, wire.unpack(r["logits"])),
                wire.unpack(r["control_delta"]),
            )
            for name, r in ((n, replies[n]) for n in silos if n in replies)
        ]

    def _scores(self, task: str, payload: dict[str, Any], what: str) -> list[Scores]:
        replies = self._ask(task, payload, self.silos, what)
        return [
            Scores(name, self._by_silo[name].y_test, wire.unpack(replies[name]["logits"]))
            for name in self.silos
            if name in replies
        ]

    def evaluate(self, params: np.ndarray) -> list[Scores]:
        """Global-model logits on every site's test set (sites that answered in time)."""
        return self._scores(wire.EVALUATE, {"params": wire.pack(np.asarray(params, np.float32))}, "evaluation")

    def evaluate_personal(self, params: np.ndarray, server_round: int) -> list[Scores]:
        """Each site's own model on its own test set."""
        payload = {
            "params": wire.pack(np.asarray(params, np.float32)),
            "round": server_round,
            "finetune_steps": self.finetune_steps,
        }
        return self._scores(wire.EVALUATE_PERSONAL, payload, "personal evaluation")


class RelayTracker:
    """A tracker that keeps each call as a JSON-ready event for the notebook to fetch (and replay into its trackers).

    Parameters
    ----------
    notes
        Gives extra notes for the summary (the engine's dropouts), read when the run ends.
    """

    def __init__(self, notes: Callable[[], list[str]] = list) -> None:
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.notes = notes
        """Extra notes for the summary (the engine's dropouts), read when the run ends."""

    def add(self, event: dict[str, Any]) -> None:
        """Append one event.

        Parameters
        ----------
        event
            A JSON-ready event.
        """
        with self._lock:
            self._events.append(wire.to_json(event))

    def since(self, start: int) -> list[dict[str, Any]]:
        """Events from index ``start`` on.

        Parameters
        ----------
        start
            Index of the first event to return.
        """
        with self._lock:
            return self._events[start:]

    def start_run(self, run_id: str, config: dict[str, Any], data: dict[str, Any]) -> None:
        """Relay the start of the run."""
        self.add({"kind": "start", "run_id": run_id, "config": config, "data": data})

    def log_round(self, run_id: str, server_round: int, rows: list[dict[str, Any]]) -> None:
        """Nothing: rounds are relayed by :meth:`on_round`, which also carries the round's parameters."""

    def on_round(self, event: RoundEvent) -> None:
        """Round-loop callback: relay one round's metric rows and global parameters.

        Parameters
        ----------
        event
            The round's event.
        """
        self.add(
            {
                "kind": "round",
                "run_id": event.run_id,
                "round": event.round,
                "rows": event.rows,
                "params": event.params,
                "time": time.time(),
            }
        )

    def end_run(
        self,
        run_id: str,
        status: str,
        *,
        summary: dict[str, Any] | None = None,
        params: np.ndarray | None = None,
        error: str | None = None,
    ) -> None:
        """Relay the end, with the dropout notes added to the summary."""
        if summary is not None:
            summary = {**summary, "notes": [*summary.get("notes", []), *self.notes()]}
        self.add(
            {"kind": "end", "run_id": run_id, "status": status, "summary": summary, "params": params, "error": error}
        )


def serve(
    transport: Transport,
    config: RunConfig,
    sites: Sequence[str],
    relay: RelayTracker,
    *,
    min_silos: int = 1,
    callbacks: Sequence[Callable[[RoundEvent], None]] = (),
    should_stop: Callable[[], bool] | None = None,
) -> tuple[RunResult, RemoteEngine]:
    """The server's whole run: hello, a :class:`RemoteEngine` over the sites that answered, fedkit's round loop.

    Every tracker call goes to ``relay``, after an ``outline`` event that says how many test rows each silo has,
    which AUCs are undefined and which model is scored; each dropout or rejoin is relayed as a ``note`` event as
    it happens.

    Parameters
    ----------
    transport
        Sends tasks to the sites and gathers their replies (FLARE, or in-process in tests).
    config
        The run.
    sites
        The sites of the job.
    relay
        Keeps the events for the notebook to fetch.
    min_silos
        Fewest sites a round may aggregate.
    callbacks
        Called with each round's event.
    should_stop
        Checked after each round: True ends the run as ``stopped``.
    """
    from fedkit import architectures, runner
    from fedkit.config import personalization
    from fedkit.result import n_test_by_silo, undefined_auc_notes

    known, outline = hello(transport, config.to_dict(), sites, min_silos)
    shape = {"model": config.model, "n_features": len(outline.features), "hidden": config.hidden}
    init = architectures.initial_params(**shape, seed=config.seed)
    head = partial(architectures.personal_mask, **shape)
    setup = personalization(config, [s.n_train for s in known], len(init), head)
    engine = RemoteEngine(transport, known, init, finetune_steps=setup.finetune_steps, min_silos=min_silos)
    relay.notes = lambda: list(engine.notes)
    labels = {s.silo: s.y_test for s in known}
    notes = undefined_auc_notes([], labels)
    relay.add({"kind": "outline", "n_test": n_test_by_silo(labels), "notes": notes, "scored": config.scored})
    engine.on_note = lambda text: relay.add({"kind": "note", "text": text})
    result = runner.run(
        config,
        outline,
        engine,
        trackers=[relay],
        callbacks=[relay.on_round, *callbacks],
        should_stop=should_stop,
        progress=False,
    )
    return result, engine
