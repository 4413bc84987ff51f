"""The server's side: the :class:`~fedkit.engines.base.Engine` fedkit's round loop drives over FLARE tasks.

The engine only moves parameters and sums: it sends a task to the chosen sites and turns their replies into
:class:`~fedkit.engines.base.FitReply` / :class:`~fedkit.engines.base.Evaluation` (per-silo metrics and
summed statistics, never a per-patient value; under secure aggregation only sums of updates, with each
site's signed statement of its own check of its update). A site that does not answer in time is dropped
from that round (as long as ``min_silos`` answered), the dropout goes into the run's notes, and the site
is asked again next round — when it answers it has rejoined. The :class:`RelayTracker` keeps every
tracker call (and every audit record) as an event the notebook fetches, so the notebook's own trackers
(its local store) record the run as it goes; the server's own run store keeps the checkpoints and the
audit log (:func:`serve`).
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from fedkit._version import __version__
from fedkit.data.silos import Federation, Provenance, Silo
from fedkit.data.uci import HOSPITALS
from fedkit.engines.base import Evaluation, FitReply, SiloEvaluation
from fedkit.engines.faults import Attendance
from fedkit.errors import RemoteRunError
from fedkit.evalstats import check_stats, sum_stats
from fedkit.metrics import METRICS
from fedkit.remote import wire
from fedkit.strategies.base import LocalTerm

if TYPE_CHECKING:
    from fedkit.config import RunConfig
    from fedkit.privacy.identity import Verifier
    from fedkit.privacy.summation import UpdateSum
    from fedkit.result import RoundEvent, RunResult
    from fedkit.tracking.local import LocalStore

Transport = Callable[[str, dict[str, Any], Sequence[str], int], dict[str, dict[str, Any]]]
"""``(task, payload, sites, min_replies) -> {site: reply payload}``: one broadcast, the replies that came in time."""


@dataclass(frozen=True)
class Site:
    """What the server knows of a site after hello: its name, place in the federation, sizes; never its rows.

    Parameters
    ----------
    site
        The FLARE site's name.
    index
        The silo's index in the federation.
    n_train
        Its train rows.
    n_test
        Its test rows.
    positives
        The positives among its test rows (for pooled metrics and AUC notes).
    """

    site: str
    index: int
    n_train: int
    n_test: int
    positives: int

    @property
    def silo(self) -> str:
        """The silo name (the site's FLARE name)."""
        return self.site


class _Ahead(NamedTuple):
    """A training sent ahead with an evaluation (:meth:`RemoteEngine.expect_fit`), and the replies it got."""

    params: np.ndarray
    server_round: int
    silos: tuple[str, ...]
    term: LocalTerm | None
    replies: dict[str, dict[str, Any]]

    def matches(self, params: np.ndarray, server_round: int, silos: Sequence[str], term: LocalTerm | None) -> bool:
        """Whether a fit of these arguments is this training (same round, silos, parameters and local term)."""
        return (
            self.server_round == server_round
            and self.silos == tuple(silos)
            and np.array_equal(self.params, np.asarray(params, np.float32))
            and _same_term(self.term, term)
        )


def _same_term(a: LocalTerm | None, b: LocalTerm | None) -> bool:
    """Whether two local terms are equal (None is the empty term)."""
    a, b = a or LocalTerm(), b or LocalTerm()
    return a.prox_mu == b.prox_mu and all(
        (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
        for x, y in ((a.anchor, b.anchor), (a.control, b.control))
    )


@dataclass
class _PreparedSum:
    """A secure sum set up ahead: its server side, the silos it was offered to, its share deliveries once shared."""

    server: Any
    silos: tuple[str, ...]
    deliveries: dict[str, Any] | None = None

    def ready_for(self, sites: Sequence[str]) -> bool:
        """Every one of ``sites``, and no other, advertised keys and shared its secrets.

        Parameters
        ----------
        sites
            The FLARE site names of the next task's silos.
        """
        return self.deliveries is not None and set(self.deliveries) == set(sites) == set(self.server.config.roster)


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


def check_schemas(fingerprints: dict[str, str], expected: str) -> None:
    """Refuse sites whose schema fingerprint is not the federation's: their features would mean something else.

    Parameters
    ----------
    fingerprints
        Each site's schema fingerprint, by site name.
    expected
        The federation's schema fingerprint.
    """
    other = sorted(site for site, f in fingerprints.items() if f != expected)
    if other:
        raise RemoteRunError(
            f"Site(s) {', '.join(other)} read their data with another schema (fingerprint "
            f"{', '.join(fingerprints[s][:12] for s in other)}…) than the federation's ({expected[:12]}…). Start "
            "every site with the same schema file (fedkit remote start --schema FILE; none for UCI Heart Disease) "
            "and submit the run with that schema."
        )


def silo_order(sites: Sequence[str]) -> list[str]:
    """The federation's silo order: the UCI hospitals in their usual order first, then the other sites by name.

    Each site's batch streams and ``hospitals`` train/test split follow its place in this order, as
    in a simulation over the same silos (:func:`fedkit.load_silos` keeps the order of its ``data``).

    Parameters
    ----------
    sites
        The sites of the job.
    """
    known = [h for h in HOSPITALS if h in sites]
    return known + sorted(s for s in sites if s not in HOSPITALS)


def hello(
    transport: Transport,
    config: dict[str, Any],
    sites: Sequence[str],
    min_silos: int,
    *,
    run: str,
    schema: str,
    run_id: str | None = None,
    resume: bool = False,
) -> tuple[list[Site], Federation]:
    """Ask every site to read its own file; returns the sites in federation order and a row-free outline.

    The outline has the feature names and the data provenance (each site's file name and sha256)
    and no rows at all: the server holds none. Its ``options`` hold what the audit log records of
    the sites: ``silo_sha256`` (each site's checksum of its own rows) and ``sites`` (each site's
    fedkit and NVIDIA FLARE versions and certificate).

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
    run
        The job's run id (named in every secure-aggregation message).
    schema
        The federation's schema fingerprint.
    run_id
        The fedkit run (the sites key their own state by it; default: ``run``).
    resume
        This job continues the run: the sites reload their state from their own files.

    Raises
    ------
    RemoteRunError
        When fewer than ``min_silos`` sites answer, a site's fedkit differs or a site reads another schema.
    """
    order = silo_order(sites)
    payload = {"config": config, "silos": order, "run": run, "run_id": run_id or run, "resume": resume}
    replies = transport(wire.HELLO, payload, sites, min_silos)
    if len(replies) < min_silos:
        raise RemoteRunError(
            f"Only {len(replies)} of {len(sites)} sites ({', '.join(replies) or 'none'}) answered hello; "
            f"the run needs min_silos={min_silos}. Start the missing sites or lower min_silos."
        )
    check_versions({site: r["fedkit_version"] for site, r in replies.items()})
    check_schemas({site: r["schema"] for site, r in replies.items()}, schema)
    known = sorted(
        (Site(site, order.index(site), r["n_train"], r["n_test"], r["test_positives"]) for site, r in replies.items()),
        key=lambda s: s.index,
    )
    first = replies[known[0].site]
    rows, labels = np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
    silos = tuple(Silo(s.silo, rows, labels, rows, labels) for s in known)
    provenance = Provenance(
        "remote sites: " + ", ".join(f"{s.site}:{replies[s.site]['data']['file']}" for s in known),
        {s.site: replies[s.site]["data"]["sha256"] for s in known},
        all(r["data"]["verified"] for r in replies.values()),
    )
    reported = {
        s.site: {
            "fedkit": replies[s.site]["fedkit_version"],
            "nvflare": replies[s.site]["nvflare_version"],
            "certificate": replies[s.site]["identity"],
        }
        for s in known
    }
    options = {
        "remote": True,
        "silo_sha256": {s.site: replies[s.site]["silo_sha256"] for s in known},
        "sites": reported,
    }
    outline = Federation(silos, tuple(first["features"]), config["split"], provenance, options)
    return known, outline


class RemoteEngine:
    """Fit and evaluate by FLARE tasks to the sites; drops a site that does not answer a round in time.

    With ``secure`` every sum (updates, evaluation statistics, standardization moments) is one run of
    secure aggregation, set up one sum ahead so that a sum costs two task round trips: each task whose
    input is summed carries the sum's share deliveries (its reply is the masked input, step 3) and
    offers the next sum (the reply advertises its keys, step 1); the task ``fedkit_secagg`` that
    follows asks for the unmask shares (step 4) and carries the next sum's key roster (the reply
    shares its secrets, step 2). A sum is used only over the sites it was set up with; when the
    next task is over other sites (a sampled fraction, a site that dropped out or came back), it
    is set up anew first, in two more round trips.

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
    secure
        Sum updates, evaluation statistics and moments by secure aggregation.
    run
        The job's run id (named in every secure-aggregation message).
    run_id
        The fedkit run (in every fit task: the sites key their state by it and name it in their statements).
    verifier
        Checks the sites' signed statements under secure aggregation (the federation's root CA); None accepts
        them unchecked (tests without identities).
    credentials
        Each site's credential (certificate, from its hello) to check its statements with.
    bound
        The run's ``max_update_norm``: the bound each site's statement must name.
    ahead
        Send each round's evaluation with the next round's training when the round loop says what that is
        (:meth:`expect_fit`): one task round trip a round instead of two. Only in the clear; the server
        turns it off under site-level DP (a training the run drops would still have spent privacy).
    """

    def __init__(
        self,
        transport: Transport,
        sites: Sequence[Site],
        init: np.ndarray,
        *,
        finetune_steps: int | None = None,
        min_silos: int = 1,
        secure: bool = False,
        run: str = "",
        run_id: str = "",
        verifier: Verifier | None = None,
        credentials: Mapping[str, bytes] | None = None,
        bound: float | None = None,
        ahead: bool = False,
    ) -> None:
        self.transport = transport
        self.sites = list(sites)
        self._by_silo = {s.silo: s for s in sites}
        self._init = np.asarray(init, dtype=np.float32)
        self.finetune_steps = finetune_steps
        self.min_silos = min_silos
        self.secure = secure
        self.run = run
        self.run_id = run_id or run
        self.verifier = verifier
        self.credentials = dict(credentials or {})
        self.bound = bound
        self.ahead = ahead and not secure
        self._ahead: _Ahead | None = None  # the next round's training, to ride with the next evaluation
        self._done_ahead: _Ahead | None = None  # that training's replies, for the next fit
        self.notes: list[str] = []
        self.on_note: Callable[[str], None] | None = None
        self._attendance = Attendance()
        self._round = 0
        self._sums = 0  # secure-aggregation rounds so far (each sum is one)
        self._next: _PreparedSum | None = None  # the next sum, set up ahead (its keys shared when ``deliveries``)
        self._pending: tuple[_PreparedSum, dict[str, dict[str, Any]]] | None = None  # the sum under way, its replies
        self._trained: set[str] = set()  # silos that have trained in the run (their state is theirs to reload)
        self._summed: set[str] = set()  # the silos whose masked input is in the last secure sum

    @property
    def silos(self) -> tuple[str, ...]:
        """Silo names in federation order."""
        return tuple(s.silo for s in self.sites)

    @property
    def missing(self) -> frozenset[str]:
        """The silos that dropped out and have not answered since."""
        return frozenset(self._attendance.missing)

    def initial_params(self) -> np.ndarray:
        """The seeded initial parameters (built on the server from the seed, as every site builds them)."""
        return self._init.copy()

    def note(self, text: str) -> None:
        """Add ``text`` to the run's notes and pass it to ``on_note`` (relayed to the submitting machine).

        Parameters
        ----------
        text
            The note, a sentence for the user.
        """
        self.notes.append(text)
        if self.on_note is not None:
            self.on_note(text)

    def _ask(
        self,
        task: str,
        payload: dict[str, Any],
        silos: Sequence[str],
        what: str,
        wait_for: int | None = None,
        noted: Sequence[str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Replies by silo name; records dropouts and rejoins; raises when fewer than ``min_silos`` answered.

        ``wait_for`` (default ``min_silos``) is how many replies the transport waits for before its
        straggler timeout starts (a secure sum waits for its threshold t). ``noted``: the silos whose
        dropouts and rejoins this task records (default: all of ``silos``).
        """
        targets = [self._by_silo[name].site for name in silos]
        need = min(self.min_silos, len(targets))
        replies = self.transport(task, payload, targets, min(wait_for or need, len(targets)))
        by_silo = {
            self._by_silo[name].silo: replies[self._by_silo[name].site]
            for name in silos
            if self._by_silo[name].site in replies
        }
        return self._count(silos, by_silo, what, noted)

    def _count(
        self, silos: Sequence[str], by_silo: dict[str, dict[str, Any]], what: str, noted: Sequence[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """``by_silo``, the replies of ``silos`` to ``what``, once the dropouts and rejoins of ``noted`` (default: all)
        are noted and enough answered (``min_silos``), else RemoteRunError."""
        noted = silos if noted is None else noted
        for text in self._attendance.update(self._round, noted, [s for s in by_silo if s in noted], what):
            self.note(text)
        if len(by_silo) < min(self.min_silos, len(silos)):
            raise RemoteRunError(
                f"Round {self._round}: only {len(by_silo)} of {len(silos)} silos answered {what} "
                f"({', '.join(by_silo) or 'none'}); the run needs min_silos={self.min_silos}. "
                "Check that the sites are up and can reach the server, or lower min_silos."
            )
        return by_silo

    def _offer(self, silos: Sequence[str]) -> tuple[_PreparedSum, dict[str, Any]]:
        """A new secure sum over ``silos`` and its offer (step 1: the sites check it and advertise keys)."""
        from fedkit.privacy.secagg import SecAggServer
        from fedkit.privacy.summation import config_to_wire, secagg_config

        self._sums += 1
        config = secagg_config(self.run, [self._by_silo[s].site for s in silos])
        prepared = _PreparedSum(SecAggServer(config, self._sums), tuple(silos))
        return prepared, {"round": self._sums, "config": config_to_wire(config)}

    def _set_up(self, silos: Sequence[str], what: str) -> _PreparedSum:
        """The sum set up ahead when it is over ``silos``, else a new one set up now (steps 1-2, two round trips)."""
        from fedkit.privacy.secagg import KeyAdvert, ShareBundle

        ready, self._next = self._next, None
        if ready is not None and ready.ready_for([self._by_silo[s].site for s in silos]):
            return ready
        prepared, offer = self._offer(silos)
        adverts = self._ask(wire.SECAGG, {"offer": offer}, silos, f"{what}, key advertising")
        roster = prepared.server.key_roster([KeyAdvert.from_wire(r["advert"]) for r in adverts.values()])
        payload = {"roster": {"round": prepared.server.round, "roster": roster.to_wire()}}
        advertised = [self._by_silo_of_site(a.sender) for a in roster.adverts]
        bundles = self._ask(wire.SECAGG, payload, advertised, f"{what}, key sharing", prepared.server.config.t)
        prepared.deliveries = prepared.server.share_deliveries(
            [ShareBundle.from_wire(b["bundle"]) for b in bundles.values()]
        )
        return prepared

    def _by_silo_of_site(self, site: str) -> str:
        """The silo of FLARE site ``site`` (the protocol's messages name sites)."""
        return next(s.silo for s in self.sites if s.site == site)

    def _with_secagg(self, payload: dict[str, Any], silos: Sequence[str], what: str) -> dict[str, Any]:
        """``payload`` plus, when secure, the deliveries of a secure sum over ``silos`` and the offer of the next sum.

        The next sum is offered to every site, as the next task's sum (an evaluation, or training with
        every silo) is over all of them.
        """
        if not self.secure:
            return payload
        prepared = self._set_up(silos, what)
        self._pending = (prepared, {})
        self._next, offer = self._offer(self.silos)
        deliveries = {site: d.to_wire() for site, d in prepared.deliveries.items()}  # type: ignore[union-attr]
        return {**payload, "secagg": {"round": prepared.server.round, "deliveries": deliveries}, "offer": offer}

    def _secure_sum(self, replies: Mapping[str, dict[str, Any]], what: str) -> np.ndarray:
        """Step 4 of the secure sum whose masked inputs came with ``replies`` (with step 2 of the next); the sum."""
        from fedkit.errors import SecAggDropoutError
        from fedkit.privacy.secagg import KeyAdvert, MaskedInput, ShareBundle, UnmaskShares

        if self._pending is None:
            raise RemoteRunError("A secure sum was asked for without its first step; this is a bug in fedkit.")
        prepared, answered = self._pending
        self._pending = None
        server = prepared.server
        for name in (n for n, r in replies.items() if "masked" not in r):
            self.note(
                f"Round {self._round}: silo {name!r} answered {what} without its masked input; the secure sum is of "
                "the others."
            )
        masked = [MaskedInput.from_wire(r["masked"]) for r in replies.values() if "masked" in r]
        request = server.unmask_request(masked)
        self._summed = {self._by_silo_of_site(site) for site in request.survivors}  # the inputs in the sum
        payload: dict[str, Any] = {"unmask": {"round": server.round, "request": request.to_wire()}}
        targets = [self._by_silo_of_site(site) for site in request.survivors]
        following = self._next
        if following is not None:  # step 2 of the next sum rides along, when enough sites advertised its keys
            adverts = [KeyAdvert.from_wire(r["advert"]) for r in answered.values() if "advert" in r]
            try:
                roster = following.server.key_roster(adverts)
            except SecAggDropoutError:
                self._next = following = None
            else:
                payload["roster"] = {"round": following.server.round, "roster": roster.to_wire()}
                targets += [self._by_silo_of_site(a.sender) for a in roster.adverts]
        targets = [s for s in self.silos if s in set(targets)]
        got = self._ask(wire.SECAGG, payload, targets, f"{what}, unmasking", server.config.t)
        result = server.result([UnmaskShares.from_wire(r["shares"]) for r in got.values() if "shares" in r])
        if following is not None:
            try:
                bundles = [ShareBundle.from_wire(r["bundle"]) for r in got.values() if "bundle" in r]
                following.deliveries = following.server.share_deliveries(bundles)
            except SecAggDropoutError:
                self._next = None
        return result.weighted_sum

    def moments(self) -> np.ndarray:
        """Federated standardization: the sum of the sites' train counts, sums and sums of squares."""
        payload = self._with_secagg({}, self.silos, "standardization")
        replies = self._ask(wire.MOMENTS, payload, self.silos, "standardization")
        if self.secure:
            self._pending = (self._pending[0], replies)  # type: ignore[index]  # set by _with_secagg
            return self._secure_sum(replies, "standardization")
        return np.sum([wire.unpack(replies[name]["moments"]) for name in self.silos if name in replies], axis=0)

    def scale(self, moments: np.ndarray) -> None:
        """Send every site the federation's summed moments to standardize with.

        Parameters
        ----------
        moments
            The federation's summed train counts, sums and sums of squares.
        """
        self._ask(wire.SCALING, {"moments": wire.pack(np.asarray(moments, np.float64))}, self.silos, "standardization")

    def fit(
        self, params: np.ndarray, server_round: int, silos: Sequence[str], term: LocalTerm | None = None
    ) -> list[FitReply]:
        """Local training on each chosen site; the replies of the sites that answered in time.

        When this training rode with the evaluation before it (:meth:`expect_fit`), the sites' replies are
        already here and no task is sent.
        """
        self._round = server_round
        done, self._done_ahead = self._done_ahead, None
        if done is not None:
            if not done.matches(params, server_round, silos, term):  # the sites trained already: never twice
                raise RemoteRunError(
                    f"Round {server_round}'s training differs from the one sent ahead with the evaluation before it; "
                    "this is a bug in fedkit."
                )
            replies = self._count(silos, done.replies, "training")
        else:
            payload = self._with_secagg(self._fit_payload(params, server_round, term), silos, "training")
            replies = self._ask(wire.FIT, payload, silos, "training")
        self._trained |= set(replies)
        if self._pending is not None:
            self._pending = (self._pending[0], replies)
        return [
            FitReply(
                name,
                wire.unpack(r.get("params")),
                self._by_silo[name].n_train,
                float(r["train_loss"]),
                int(r["steps"]),
                self._silo_evaluation(name, r["local_metrics"]),
                wire.unpack(r.get("control_delta")),
                self._attestation(name, r, server_round) if self.secure else None,
            )
            for name, r in ((n, replies[n]) for n in silos if n in replies)
        ]

    def _fit_payload(self, params: np.ndarray, server_round: int, term: LocalTerm | None) -> dict[str, Any]:
        """The fit task's payload: the round, the run, the global parameters and the strategy's local term."""
        term = term or LocalTerm()
        return {
            "round": server_round,
            "run_id": self.run_id,
            "params": wire.pack(np.asarray(params, np.float32)),
            "prox_mu": float(term.prox_mu),
            "anchor": wire.pack(term.anchor),
            "control": wire.pack(term.control),
        }

    def expect_fit(
        self, params: np.ndarray, server_round: int, silos: Sequence[str], term: LocalTerm | None = None
    ) -> None:
        """The next round's training, known before this round's evaluation: with ``ahead`` it rides with it.

        The next :meth:`evaluate` of the same ``params`` is then one task (``fedkit_evaluate_fit``): each site
        evaluates the parameters, then trains round ``server_round`` from them when it is among ``silos``,
        and the matching :meth:`fit` takes those replies without a task. A training that the run does not
        take (it stopped after this round) is dropped; each site keeps its state per round
        (:mod:`fedkit.remote.sitestate`), so a resumed run reloads the state of the round it resumes from.

        Parameters
        ----------
        params
            The parameters this round's evaluation and the next round's training start from.
        server_round
            The next round.
        silos
            The silos that train in it.
        term
            The strategy's local term for it.
        """
        if self.ahead:
            self._ahead = _Ahead(np.asarray(params, np.float32).copy(), server_round, tuple(silos), term, {})

    def _attestation(self, name: str, reply: Mapping[str, Any], server_round: int) -> dict[str, Any]:
        """The site's signed statement of its own check, verified; an unverifiable one becomes a rejection."""
        from fedkit.errors import SecAggAuthenticationError
        from fedkit.privacy.audit import canonical

        said, signature = reply.get("statement"), reply.get("signature")
        expected = {"run_id": self.run_id, "round": server_round, "silo": name, "bound": self.bound}
        problem = None
        if not isinstance(said, dict) or not isinstance(signature, str):
            problem = "it sent none"
        elif any(said.get(k) != v for k, v in expected.items()):
            wrong = ", ".join(f"{k} {said.get(k)!r} (expected {v!r})" for k, v in expected.items() if said.get(k) != v)
            problem = f"it names {wrong}"
        elif self.verifier is not None:
            try:
                credential = base64.b64decode(self.credentials.get(name) or b"")
                self.verifier.verify(name, credential, canonical(said), base64.b64decode(signature))
            except (SecAggAuthenticationError, ValueError) as exc:
                problem = f"its signature does not verify ({exc})"
        if problem is None:
            return {"statement": said, "signature": signature}
        reason = f"its signed statement of its own check is not valid: {problem}"
        return {"statement": {**expected, "accepted": False, "kind": "statement", "reason": reason}, "signature": None}

    def state(self) -> dict[str, np.ndarray]:
        """The server's part of the silos' state: the round, who dropped out, who has trained.

        The sites keep their own arrays (SCAFFOLD's control variate, FedPer's personal parameters) per
        round in their own files (:mod:`fedkit.remote.sitestate`); :meth:`restore` asks them to reload
        those of the checkpoint's round.
        """
        return {
            "round": np.array(self._round),
            "missing": np.array(sorted(self._attendance.missing), dtype=np.str_),
            "trained": np.array(sorted(self._trained), dtype=np.str_),
        }

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Take back who had dropped out and ask every site to reload its own state after the checkpoint's round.

        A site that has trained in the run and finds no state of it fails the restore, naming itself and
        the round; a site that does not answer is noted as a dropout and reloads before its next task.

        Parameters
        ----------
        state
            What :meth:`state` returned at the checkpoint.
        """
        self._attendance = Attendance({str(s) for s in state.get("missing", ())})
        self._trained = {str(s) for s in state.get("trained", ())}
        if "round" in state:
            self._round = int(state["round"])
            payload = {"run_id": self.run_id, "round": self._round, "trained": sorted(self._trained)}
            self._ask(wire.RESTORE, payload, self.silos, "restore")

    def sum_updates(self, replies: Sequence[FitReply], params: np.ndarray) -> UpdateSum:
        """The secure sum of the accepted updates of this round's training (their adverts came with the fit replies).

        Parameters
        ----------
        replies
            The replies whose update the round aggregates (validation accepted them).
        params
            The global parameters the round started from.
        """
        from fedkit.privacy.summation import read_update_sum

        if self._pending is None:
            raise RemoteRunError("sum_updates needs a fit under secure aggregation first; this is a bug in fedkit.")
        accepted = {r.silo for r in replies}
        masked = {name: r for name, r in self._pending[1].items() if name in accepted}
        total = self._secure_sum(masked, "training")
        return read_update_sum(total, len(params), [s for s in self.silos if s in self._summed])

    def _silo_evaluation(self, name: str, metrics: dict[str, Any]) -> SiloEvaluation:
        site = self._by_silo[name]
        values = {m: float("nan") if metrics[m] is None else float(metrics[m]) for m in METRICS}
        return SiloEvaluation(name, values, site.n_test, site.positives)

    def _evaluation(self, task: str, payload: dict[str, Any], what: str, ahead: _Ahead | None = None) -> Evaluation:
        # with a training ``ahead`` in the task, a silo that trains in it and misses the task is noted as missing
        # that training (when the next fit takes these replies), as in the simulation; the others here
        noted = [s for s in self.silos if ahead is None or s not in ahead.silos]
        replies = self._ask(task, self._with_secagg(payload, self.silos, what), self.silos, what, noted=noted)
        if ahead is not None:  # the next round's training came with it
            self._done_ahead = ahead._replace(replies={n: r for n, r in replies.items() if "train_loss" in r})
        if self.secure:
            self._pending = (self._pending[0], replies)  # type: ignore[index]  # set by _with_secagg
        silos = [self._silo_evaluation(name, replies[name]["metrics"]) for name in self.silos if name in replies]
        if self.secure:
            pooled = self._secure_sum(replies, what)
        else:
            pooled = sum_stats([check_stats(wire.unpack(replies[e.silo]["stats"]), where=e.silo) for e in silos])
        return Evaluation(silos, check_stats(pooled, where=f"round {self._round}, {what}: summed statistics"))

    def evaluate(self, params: np.ndarray) -> Evaluation:
        """The global model on every site's test set: each site's metrics and the summed statistics.

        With the next round's training expected from these parameters (:meth:`expect_fit`), both go in one task.
        """
        ahead, self._ahead = self._ahead, None
        if ahead is not None and np.array_equal(ahead.params, np.asarray(params, np.float32)):
            payload = self._fit_payload(params, ahead.server_round, ahead.term)
            payload["fit_sites"] = [self._by_silo[s].site for s in ahead.silos]
            return self._evaluation(wire.EVALUATE_FIT, payload, "evaluation", ahead)
        return self._evaluation(wire.EVALUATE, {"params": wire.pack(np.asarray(params, np.float32))}, "evaluation")

    def evaluate_personal(self, params: np.ndarray, server_round: int) -> Evaluation:
        """Each site's own model on its own test set."""
        payload = {
            "params": wire.pack(np.asarray(params, np.float32)),
            "round": server_round,
            "finetune_steps": self.finetune_steps,
        }
        return self._evaluation(wire.EVALUATE_PERSONAL, payload, "personal evaluation")


class RelayTracker:
    """A tracker that keeps each call as a JSON-ready event for the notebook to fetch (and replay into its trackers).

    It takes rounds whole (a :class:`~fedkit.tracking.base.RoundStore`): each round's audit record
    travels with the round's event and the run's other audit records (start, resume, end) as
    ``audit`` events, so the submitting machine keeps a verified copy of the server's audit log;
    checkpoints stay on the server. The summary it relays at the end holds the engine's dropout
    notes: the round loop collects them.
    """

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Condition()
        self._delivered = 0  # events handed out so far (the submitting machine's polls)
        self._round_audit: list[dict[str, Any]] = []

    def add(self, event: dict[str, Any]) -> None:
        """Append one event.

        Parameters
        ----------
        event
            A JSON-ready event.
        """
        with self._lock:
            self._events.append(wire.to_json(event))

    def since(self, start: int, *, deliver: bool = False) -> list[dict[str, Any]]:
        """Events from index ``start`` on.

        Parameters
        ----------
        start
            Index of the first event to return.
        deliver
            These events go to the submitting machine (its poll): counted for :meth:`wait_delivered`.
        """
        with self._lock:
            events = self._events[start:]
            if deliver:
                self._delivered = max(self._delivered, len(self._events))
                self._lock.notify_all()
            return events

    def wait_delivered(self, timeout: float, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Wait until a poll has handed out every event so far (the end event with them); whether one has.

        The job's process ends soon after its run does, and with it the app command the events are fetched
        through: the run's last events must have left before.

        Parameters
        ----------
        timeout
            Seconds to wait at most (a run whose submitting machine stopped polling ends after that).
        should_stop
            Checked every 0.1 s: True ends the wait (the job is being aborted).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._delivered < len(self._events):
                left = deadline - time.monotonic()
                if left <= 0 or should_stop():
                    return False
                self._lock.wait(min(left, 0.1))
            return True

    def start_run(self, run_id: str, config: dict[str, Any], data: dict[str, Any]) -> None:
        """Relay the start of the run."""
        self.add({"kind": "start", "run_id": run_id, "config": config, "data": data})

    def log_round(self, run_id: str, server_round: int, rows: list[dict[str, Any]]) -> None:
        """Nothing: rounds are relayed by :meth:`on_round`, which also carries the round's parameters."""

    def save_round(
        self,
        run_id: str,
        server_round: int,
        rows: list[dict[str, Any]],
        *,
        checkpoint: bytes | None = None,
        audit: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Keep the round's audit records for :meth:`on_round` to relay with it (the checkpoint stays here)."""
        self._round_audit = [dict(r) for r in audit]

    def append_audit(self, run_id: str, records: Sequence[Mapping[str, Any]]) -> None:
        """Relay audit records written outside a round (start, resume, end)."""
        if records:
            self.add({"kind": "audit", "run_id": run_id, "records": [dict(r) for r in records]})

    def on_round(self, event: RoundEvent) -> None:
        """Round-loop callback: relay one round's metric rows and global parameters.

        Parameters
        ----------
        event
            The round's event.
        """
        audit, self._round_audit = self._round_audit, []
        self.add(
            {
                "kind": "round",
                "run_id": event.run_id,
                "round": event.round,
                "rows": event.rows,
                "params": event.params,
                "audit": audit,
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
        """Relay the end (the summary's notes include the engine's dropouts: the round loop collects them)."""
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
    schema: str | None = None,
    run: str | None = None,
    store: LocalStore | None = None,
    run_id: str | None = None,
    resume: str | None = None,
    started_by: str | None = None,
    verifier: Verifier | None = None,
) -> tuple[RunResult | None, RemoteEngine | None]:
    """The server's whole run: hello, standardization, a :class:`RemoteEngine` over the sites, fedkit's round loop.

    Every tracker call goes to ``relay``, after an ``outline`` event that says how many test rows each silo
    has, which AUCs are undefined and which model is scored; each dropout or rejoin is relayed as a ``note``
    event as it happens. ``store`` (the server's run store, in its persistent workspace) keeps every
    round's checkpoint and the audit log, so a run whose server job died resumes (``resume``) from it
    in a new job; a resumed run first relays a ``history`` event (the server's audit log and rows so
    far) for the submitting machine to check its copy against. A run the server store has as
    finished is relayed whole and not run again (the result is returned as None).

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
    schema
        The federation's schema fingerprint (default: the UCI Heart Disease schema's).
    run
        Names the job in every secure-aggregation message (default: a fresh random id).
    store
        The server's own run store (checkpoints and the audit log); None keeps neither (tests).
    run_id
        The id of a new run (default: a fresh one).
    resume
        The id of a run in ``store`` to continue from its last checkpoint.
    started_by
        Who started (or resumes) the run, for the audit log: the FLARE job's submitter.
    verifier
        Checks the sites' signed statements (the federation's root CA); None accepts them unchecked.
    """
    from fedkit import architectures, runner
    from fedkit.config import personalization
    from fedkit.data.schema import UCI_HEART_DISEASE
    from fedkit.result import n_test_by_silo, undefined_auc_notes

    run = run or uuid.uuid4().hex
    if resume is not None and store is None:
        raise RemoteRunError(f"Run {resume} cannot be resumed: this server keeps no run store.")
    if resume is not None and _relay_history(store, resume, relay):  # type: ignore[arg-type]  # checked above
        return None, None  # it had finished: the history holds its end
    run_id = resume or run_id or runner.new_run_id()
    newcomers: list[str] = []
    if resume is not None:  # the run goes on over the silos it started with (a checksum of each is in its log)
        log = store.audit_log(resume)  # type: ignore[union-attr]  # checked above
        began = log[0].get("silos") if log else None
        if began:
            newcomers, sites = [s for s in sites if s not in began], [s for s in sites if s in began]
    fingerprint = schema or UCI_HEART_DISEASE.fingerprint()
    known, outline = hello(
        transport, config.to_dict(), sites, min_silos, run=run, schema=fingerprint, run_id=run_id, resume=bool(resume)
    )
    shape = {"model": config.model, "n_features": len(outline.features), "hidden": config.hidden}
    init = architectures.initial_params(**shape, seed=config.seed)
    head = partial(architectures.personal_mask, **shape)
    setup = personalization(config, [s.n_train for s in known], len(init), head)
    engine = RemoteEngine(
        transport,
        known,
        init,
        finetune_steps=setup.finetune_steps,
        min_silos=min_silos,
        secure=bool(config.secure_aggregation),
        run=run,
        run_id=run_id,
        verifier=verifier,
        credentials={s: v["certificate"] for s, v in outline.options["sites"].items() if v["certificate"]},
        bound=config.max_update_norm,
        ahead=config.dp != "dpsgd" and config.scored != "personal",  # see RemoteEngine's ``ahead``
    )
    if config.standardize == "federated":
        engine.scale(engine.moments())
    counts = {s.silo: (s.n_test, s.positives) for s in known}
    notes = undefined_auc_notes([], counts)
    relay.add({"kind": "outline", "n_test": n_test_by_silo(counts), "notes": notes, "scored": config.scored})
    engine.on_note = lambda text: relay.add({"kind": "note", "text": text, "missing": sorted(engine.missing)})
    for site in newcomers:
        engine.note(
            f"Site {site!r} is connected but was not in run {run_id} when it started, so the resumed run goes on "
            "without it; start a new run to include it."
        )
    for site in (s for s in silo_order(sites) if s not in engine.silos):
        engine.note(
            f"Site {site!r} is connected to the server but did not answer the run's first task (reading its data) "
            "in time, so the run goes on without it. Its site log says why (e.g. its FLARE job did not start); "
            "a site that answers later takes part in the next run."
        )
    result = runner.run(
        config,
        outline,
        engine,
        trackers=[relay] if store is None else [store, relay],  # resumed from the first: the server's store
        callbacks=[relay.on_round, *callbacks],
        should_stop=should_stop,
        progress=False,
        test_counts=counts,
        run_id=None if resume else run_id,
        resume=resume,
        started_by=started_by,
        train_sizes={s.silo: s.n_train for s in known},
    )
    return result, engine


def _relay_history(store: LocalStore, run_id: str, relay: RelayTracker) -> bool:
    """Relay what the server's store holds of run ``run_id`` (audit log, rows); True when the run had finished.

    The submitting machine checks its copy of the audit log against it record by record and fills in
    the rounds it missed (e.g. when it restarted while the server went on).
    """
    from fedkit.errors import ResumeError

    stored = store.get(run_id)
    if stored["status"] == "running":
        raise ResumeError(
            f"Run {run_id} is still running on the server (another FLARE job holds it); follow that job, or abort it "
            "(FLARE API: session.abort_job) and resume again."
        )
    relay.add(
        {
            "kind": "history",
            "run_id": run_id,
            "status": stored["status"],
            "data": stored["data"],
            "audit": store.audit_log(run_id),
            "rows": store.history(run_id),
        }
    )
    if stored["status"] != "finished":
        return False
    relay.add(
        {
            "kind": "end",
            "run_id": run_id,
            "status": "finished",
            "summary": stored["summary"],
            "params": stored["params"],
            "error": None,
        }
    )
    return True
