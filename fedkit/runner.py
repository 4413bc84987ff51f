"""The round loop, shared by every engine: select silos, fit, hooks, aggregate, evaluate, record.

It knows the silos only through the :class:`~fedkit.engines.base.Engine` protocol: the simulation
engine trains them in this process, the remote engine (on the FLARE server) asks the sites.
:func:`fedkit.run` chooses and builds the engine, then calls :func:`run`.
"""

from __future__ import annotations

import sys
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from fedkit import seeding
from fedkit.config import CLIENT_LEVEL, RunConfig, silos_per_round
from fedkit.data.silos import Federation
from fedkit.engines.base import Engine, Evaluation, FitReply
from fedkit.errors import FedkitError, ResumeError
from fedkit.evalstats import metrics_from_stats
from fedkit.intervals import intervals_from_stats
from fedkit.metrics import METRICS
from fedkit.privacy import audit, budget, dp
from fedkit.privacy.validation import (
    Verdict,
    check_enough,
    check_global,
    divergence_hint,
    rejection_note,
    validate_updates,
    verdict_from_statement,
)
from fedkit.result import (
    POOLED,
    ClassCounts,
    RoundEvent,
    RunResult,
    class_counts,
    n_test_by_silo,
    thin_class_notes,
    undefined_auc_notes,
)
from fedkit.strategies import BASELINES, Strategy, make_strategy
from fedkit.strategies.base import Controls, LocalTerm
from fedkit.tracking.base import RoundStore, RunStore, Tracker
from fedkit.tracking.checkpoint import Checkpoint, decode, encode, strategy_arrays, strategy_state

UpdateHook = Callable[[int, FitReply], FitReply]
"""Called on every silo reply before validation and aggregation (DP noise, secure aggregation masks...)."""


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus 6 random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def select_silos(names: Sequence[str], fraction: float, seed: int, server_round: int) -> list[str]:
    """The silos of round ``server_round``: ``max(1, round(fraction * K))`` of them, without replacement, seeded.

    Parameters
    ----------
    names
        The federation's silo names.
    fraction
        Fraction of silos sampled each round, in (0, 1].
    seed
        The run's seed.
    server_round
        The round (1-based).
    """
    k = silos_per_round(len(names), fraction)
    if k >= len(names):
        return list(names)
    chosen = seeding.stream(seed, seeding.SELECTION, server_round).choice(len(names), size=k, replace=False)
    return [names[i] for i in sorted(chosen)]


def metric_rows(server_round: int, model: str, split: str, silo: str, values: dict[str, float]) -> list[dict[str, Any]]:
    """Long-format rows for a dict of metric values.

    Parameters
    ----------
    server_round
        The round (0 is the initial model).
    model
        ``"global"``, ``"personal"`` or ``"local"``.
    split
        ``"train"`` or ``"test"``.
    silo
        The silo's name, or ``pooled``.
    values
        Metric values by name.
    """
    return [
        {"round": server_round, "silo": silo, "model": model, "split": split, "metric": m, "value": float(v)}
        for m, v in values.items()
    ]


def score_rows(server_round: int, model: str, evaluation: Evaluation) -> list[dict[str, Any]]:
    """Test metrics of ``model``: each silo's own (computed on the silo) and, if summed, the pooled ones.

    Pooled loss and accuracy are exact from the summed statistics; pooled AUC comes from their
    histograms (within :func:`fedkit.evalstats.auc_error_bound`, under 1e-3 for standardized features).

    Parameters
    ----------
    server_round
        The round (0 is the initial model).
    model
        ``"global"``, ``"personal"`` or ``"local"``.
    evaluation
        Each silo's metrics and, if summed, the silos' summed statistics.
    """
    values = [(e.silo, e.metrics) for e in evaluation.silos]
    if evaluation.pooled is not None:
        values.append((POOLED, metrics_from_stats(evaluation.pooled)))
    return [
        {"round": server_round, "silo": silo, "model": model, "split": "test", "metric": m, "value": float(v[m])}
        for silo, v in values
        for m in METRICS
    ]


class Evaluated(NamedTuple):
    """A round's evaluation: its metric rows, and the 95% intervals of the scored model's AUC and accuracy.

    Parameters
    ----------
    rows
        The metric rows (global model, and each silo's own when the run is scored by it).
    intervals
        Per silo and pooled, the interval bounds (:func:`intervals_of`).
    """

    rows: list[dict[str, Any]]
    intervals: dict[str, dict[str, float]]


def evaluate_rows(
    server_round: int, engine: Engine, params: np.ndarray, config: RunConfig, personal_models: np.ndarray | None = None
) -> Evaluated:
    """The round's evaluation: the global model (not for ``local``) and each silo's own model when scored by it.

    Parameters
    ----------
    server_round
        The round (0 is the initial model).
    engine
        The engine holding the silos.
    params
        The global parameters.
    config
        The run.
    personal_models
        The silos' fine-tuned models, already trained (a sweep stacks the fine-tuning of many runs);
        None: the engine fine-tunes them itself.

    Returns
    -------
    Evaluated
        The metric rows, and the intervals of the model the run is scored with.
    """
    scored = None if config.strategy == "local" else engine.evaluate(params)
    rows = [] if scored is None else score_rows(server_round, "global", scored)
    if config.scored == "personal":
        models = {} if personal_models is None else {"models": personal_models}
        scored = engine.evaluate_personal(params, server_round, **models)
        rows += score_rows(server_round, "personal", scored)
    return Evaluated(rows, intervals_of(scored))


def intervals_of(evaluation: Evaluation | None) -> dict[str, dict[str, float]]:
    """The 95% intervals of an evaluation's AUC and accuracy per silo and pooled (:mod:`fedkit.intervals`).

    Each silo's come from the silo (computed from its own rows, like its metrics); the pooled ones
    from the summed evaluation statistics. A silo whose engine sent none has none.

    Parameters
    ----------
    evaluation
        A model's evaluation (None: nothing evaluated).
    """
    if evaluation is None:
        return {}
    out = {e.silo: dict(e.intervals) for e in evaluation.silos if e.intervals}
    if evaluation.pooled is not None:
        out[POOLED] = intervals_from_stats(evaluation.pooled)
    return out


def fit_rows(server_round: int, replies: list[FitReply]) -> list[dict[str, Any]]:
    """Local-model metrics: train loss of the local update, and test metrics on the silo's own test set.

    Parameters
    ----------
    server_round
        The round.
    replies
        The silos' replies to this round's training.
    """
    rows = [metric_rows(server_round, "local", "train", r.silo, {"loss": r.train_loss})[0] for r in replies]
    evaluation = Evaluation([r.local_test for r in replies if r.local_test is not None])
    return rows + score_rows(server_round, "local", evaluation)


def validate_replies(
    server_round: int, replies: list[FitReply], params: np.ndarray, config: RunConfig, *, check_loss: bool = True
) -> tuple[list[FitReply], list[Verdict]]:
    """The replies whose update passes validation (:mod:`fedkit.privacy.validation`), and a verdict per reply.

    Raises :class:`~fedkit.errors.RoundFailedError` when fewer than ``config.min_silos`` pass. Under
    secure aggregation the server sees no update: the simulation's check stands for each site's own
    (before masking) and the verdicts carry no norm; replies without parameters (remote sites) carry
    the site's own verdict in its signed statement (:func:`~fedkit.privacy.validation.verdict_from_statement`).

    Parameters
    ----------
    server_round
        The round.
    replies
        The silos' replies, after the hooks.
    params
        The global parameters the round started from.
    config
        The run: its bounds (``max_update_norm``, ``max_norm_ratio``), ``min_silos``, ``lr`` and ``optimizer``.
    check_loss
        Check each reply's train loss too (a stacked sweep that does not compute losses passes False).
    """
    if any(r.params is None for r in replies):  # secure aggregation on remote sites: each site checked its own
        verdicts = [verdict_from_statement(r.silo, r.attestation) for r in replies]
    else:
        verdicts = validate_updates(
            [r.silo for r in replies],
            [r.params for r in replies],  # type: ignore[misc]
            [r.train_loss if check_loss else None for r in replies],
            params,
            max_update_norm=config.max_update_norm,
            max_norm_ratio=config.max_norm_ratio,
        )
    need = min(config.min_silos, len(replies))
    check_enough(server_round, verdicts, need, divergence_hint(config.lr, config.optimizer))
    accepted = [r for r, v in zip(replies, verdicts, strict=True) if v.accepted]
    if config.secure_aggregation:  # the check stands for each site's own; the server learns no norm
        verdicts = [replace(v, norm=None) for v in verdicts]
    return accepted, verdicts


def validation_rows(server_round: int, verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """Each reply's update ``norm`` (NaN when it has none) and ``rejected`` (1 or 0), as local/update rows.

    Parameters
    ----------
    server_round
        The round.
    verdicts
        The round's verdicts, one per reply.
    """
    return [
        row
        for v in verdicts
        for row in metric_rows(
            server_round,
            "local",
            "update",
            v.silo,
            {"norm": np.nan if v.norm is None else v.norm, "rejected": float(not v.accepted)},
        )
    ]


class Aggregate(NamedTuple):
    """What :func:`aggregate` gives: the new global parameters and strategy state, and the contributions summed.

    Parameters
    ----------
    params
        The new global parameters.
    state
        The strategy's new state.
    contributions
        How many silos' updates reached the aggregate (under distributed DP, the noise shares in the sum).
    """

    params: np.ndarray
    state: Any
    contributions: int


class RoundOutcome(NamedTuple):
    """What one round produced: the new global parameters and strategy state, its metric rows, who took part.

    Parameters
    ----------
    params
        The new global parameters.
    state
        The strategy's new state.
    rows
        The round's metric rows.
    selected
        The silos asked to train.
    verdicts
        A verdict per silo that replied.
    contributions
        How many silos' updates reached the aggregate.
    intervals
        The 95% intervals of the scored model's AUC and accuracy after the round (:func:`intervals_of`).
    attestations
        The remote sites' signed statements of their own checks (secure aggregation), else empty.
    participants
        The silos whose update is in the aggregate (None: those validation accepted). Under remote secure
        aggregation a site accepted by its own check can still drop out of the sum after it.
    """

    params: np.ndarray
    state: Any
    rows: list[dict[str, Any]]
    selected: list[str]
    verdicts: list[Verdict]
    contributions: int = 0
    intervals: dict[str, dict[str, float]] = {}  # noqa: RUF012 (a NamedTuple default, never mutated)
    attestations: tuple[Mapping[str, Any], ...] = ()
    participants: tuple[str, ...] | None = None


def run_round(
    server_round: int,
    config: RunConfig,
    engine: Engine,
    strategy: Strategy,
    state: Any,
    params: np.ndarray,
    hooks: Sequence[UpdateHook] = (),
    expect_fit: Callable[..., None] | None = None,
) -> RoundOutcome:
    """One round: sample silos, train them, pass the replies through ``hooks``, validate, aggregate, evaluate.

    Rejected updates are left out of the aggregate; too few valid updates, or a non-finite aggregate,
    raise :class:`~fedkit.errors.RoundFailedError`.

    Parameters
    ----------
    server_round
        The round (1-based).
    config
        The run.
    engine
        The engine holding the silos.
    strategy
        The run's strategy.
    state
        The strategy's state before this round.
    params
        The global parameters before this round.
    hooks
        Called on every silo reply before validation and aggregation.
    expect_fit
        Another round follows and the engine can start its training ahead (its ``expect_fit``, e.g.
        :meth:`fedkit.remote.server.RemoteEngine.expect_fit`): called with that round's parameters, number and
        :func:`fit_plan` before this round's evaluation.

    Returns
    -------
    RoundOutcome
        The new global parameters and strategy state, the round's metric rows, who was asked and the verdicts.
    """
    chosen, term = fit_plan(engine, config, strategy, state, params, server_round)
    replies = engine.fit(params, server_round, chosen, term)
    for hook in hooks:
        replies = [hook(server_round, r) for r in replies]
    accepted, verdicts = validate_replies(server_round, replies, params, config)
    inputs = update_inputs(params, accepted, engine, config, server_round)
    new, state = step(strategy, state, params, inputs)
    check_global(server_round, new, config.strategy)
    rows = fit_rows(server_round, replies) + validation_rows(server_round, verdicts)
    attestations = tuple(r.attestation for r in replies if r.attestation is not None)
    if expect_fit is not None:
        expect_fit(new, server_round + 1, *fit_plan(engine, config, strategy, state, new, server_round + 1))
    evaluated = evaluate_rows(server_round, engine, new, config)
    return RoundOutcome(
        new,
        state,
        rows + evaluated.rows,
        chosen,
        verdicts,
        inputs.contributions,
        evaluated.intervals,
        attestations=attestations,
        participants=inputs.silos,
    )


def fit_plan(
    engine: Engine, config: RunConfig, strategy: Strategy, state: Any, params: np.ndarray, server_round: int
) -> tuple[list[str], LocalTerm | None]:
    """Who trains in round ``server_round`` and the strategy's local term, from the state and parameters before it.

    Parameters
    ----------
    engine
        The engine holding the silos.
    config
        The run.
    strategy
        The run's strategy.
    state
        The strategy's state before the round.
    params
        The global parameters before the round.
    server_round
        The round.
    """
    return select_silos(engine.silos, config.fraction, config.seed, server_round), strategy.local_term(state, params)


class UpdateInputs(NamedTuple):
    """What a strategy's step gets from a round's accepted replies, and whose updates they hold.

    Parameters
    ----------
    updates
        The updates (one row per silo; under secure aggregation one row: the weighted mean).
    weights
        Their weights.
    controls
        SCAFFOLD's control deltas, else None.
    silos
        The silos whose update is in them.
    contributions
        How many silos' updates reached the aggregate (under distributed DP, the noise shares in the sum).
    """

    updates: np.ndarray
    weights: np.ndarray
    controls: Controls | None
    silos: tuple[str, ...]
    contributions: int


def update_inputs(
    params: np.ndarray, replies: list[FitReply], engine: Engine, config: RunConfig, server_round: int
) -> UpdateInputs:
    """The strategy's inputs from the replies that passed validation; under secure aggregation only their sums;
    under client-level DP the clipped, noised mean (:func:`private_update`).

    Parameters
    ----------
    params
        The global parameters before the round.
    replies
        The silos' replies that passed validation (after any hooks).
    engine
        The engine holding the silos (how many there are; the secure sum).
    config
        The run (``secure_aggregation``, ``dp``).
    server_round
        The round (it keys the server's DP noise).
    """
    if config.dp in CLIENT_LEVEL:
        mean, count, silos = private_update(config, engine, replies, params, server_round)
        return UpdateInputs(mean[None, :], np.ones(1), None, silos, count)
    if config.secure_aggregation:  # the server sees only the sums
        total = engine.sum_updates(replies, params)
        updates, weights, controls = total.strategy_inputs(len(engine.silos))
        return UpdateInputs(updates, weights, controls, total.silos or tuple(r.silo for r in replies), total.count)
    updates = np.stack([r.params - params for r in replies])  # type: ignore[operator]
    weights = np.array([r.n_train for r in replies], dtype=np.float64)
    deltas = [r.control_delta for r in replies if r.control_delta is not None]
    controls = Controls(np.stack(deltas), len(engine.silos)) if deltas else None
    return UpdateInputs(updates, weights, controls, tuple(r.silo for r in replies), len(replies))


def step(strategy: Strategy, state: Any, params: np.ndarray, inputs: UpdateInputs) -> tuple[np.ndarray, Any]:
    """The strategy's step on ``inputs``: new global parameters and state (a diverging step is left to check_global).

    Parameters
    ----------
    strategy
        The run's strategy.
    state
        Its state before the round.
    params
        The global parameters before the round.
    inputs
        The round's :func:`update_inputs`.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging server step: check_global reports it
        return strategy.aggregate(inputs.updates, inputs.weights, state, params, inputs.controls)


def aggregate(
    strategy: Strategy,
    state: Any,
    params: np.ndarray,
    replies: list[FitReply],
    engine: Engine,
    config: RunConfig,
    server_round: int = 0,
) -> Aggregate:
    """The strategy's step from the silos' ``replies``: new global parameters and state.

    Under secure aggregation the strategy gets only the sums the engine computes (:meth:`Engine.sum_updates`).
    Under client-level DP (``dp`` central or distributed) it gets one update, DP-FedAvg's noisy mean
    (:func:`private_update`), with weight 1: FedAvg and FedProx add it, FedAvgM and FedAdam/Yogi/Adagrad
    take it as their pseudo-gradient (post-processing, so ε is unchanged).

    Parameters
    ----------
    strategy
        The run's strategy.
    state
        Its state before the round.
    params
        The global parameters before the round.
    replies
        The silos' replies that passed validation (after any hooks).
    engine
        The engine holding the silos (how many there are; the secure sum).
    config
        The run (``secure_aggregation``, ``dp``).
    server_round
        The round (it keys the server's DP noise).

    Returns
    -------
    Aggregate
        The new global parameters, the strategy's new state and how many contributions were summed.
    """
    inputs = update_inputs(params, replies, engine, config, server_round)
    new, state = step(strategy, state, params, inputs)
    return Aggregate(new, state, inputs.contributions)


def private_update(
    config: RunConfig, engine: Engine, replies: list[FitReply], params: np.ndarray, server_round: int
) -> tuple[np.ndarray, int, tuple[str, ...]]:
    """Client-level DP-FedAvg's update (McMahan et al. 2018), the number of silo contributions in it and whose.

    ``(sum_k clip(Δ_k) + N(0, (z·C)² I)) / d`` with every silo weighing 1 and ``d`` the silos a round
    selects (:func:`fedkit.privacy.budget.denominator`: fixed, whoever reports). Without secure
    aggregation the server clips each update and adds the noise (:func:`fedkit.privacy.dp.private_sum`).
    Under secure aggregation the server cannot see an update, so each silo clips its own before
    masking (:meth:`fedkit.privacy.budget.SiloPrivacy.update_vector`); with ``central`` the server adds
    the noise to the unmasked sum, with ``distributed`` each silo already added its share. The server's
    noise comes from :func:`fedkit.privacy.dp.central_noise_stream` (its own seeded stream).

    Parameters
    ----------
    config
        The run (``dp`` central or distributed).
    engine
        The engine (the secure sum; the federation's size).
    replies
        The replies that passed validation.
    params
        The global parameters the round started from.
    server_round
        The round.
    """
    clip, z = float(config.dp_clip), budget.client_noise_multiplier(config)  # type: ignore[arg-type]
    rng = dp.central_noise_stream(config.seed, server_round)
    if config.secure_aggregation:
        total = engine.sum_updates(replies, params)
        noisy, count = total.weighted_update, round(total.weight)  # every contribution weighs 1
        silos = total.silos or tuple(r.silo for r in replies)
        if config.dp == "central":
            noisy = noisy + dp.noise_share(len(noisy), clip=clip, noise_multiplier=z, shares=1, rng=rng)
    else:  # central: the server sees each update and clips it
        updates = np.stack([r.params - params for r in replies])  # type: ignore[operator]
        noisy = dp.private_sum(updates, np.ones(len(replies)), clip=clip, noise_multiplier=z, rng=rng)
        count, silos = len(replies), tuple(r.silo for r in replies)
    return dp.private_mean(noisy, budget.denominator(config, len(engine.silos))), count, silos


def spending(rows: Sequence[Mapping[str, Any]], config: RunConfig) -> dict[str, Any] | None:
    """A round's DP spending for its audit record: the run's privacy rows (ε, noise multiplier...) and δ.

    Parameters
    ----------
    rows
        The round's privacy rows (:func:`fedkit.privacy.budget.privacy_rows`); none without DP.
    config
        The run.
    """
    pooled = {r["metric"]: r["value"] for r in rows if r["silo"] == POOLED}
    return {**pooled, "delta": config.dp_delta} if pooled else None


def checkpoint(server_round: int, params: np.ndarray, state: Any, engine: Engine, recorder: Recorder) -> bytes | None:
    """The run's checkpoint after ``server_round`` as bytes (None when no tracker keeps checkpoints).

    Parameters
    ----------
    server_round
        The round just recorded.
    params
        The global parameters after it.
    state
        The strategy's state after it.
    engine
        The engine, for its silos' state.
    recorder
        The run's recorder: its notes and rejected updates so far, and whether any tracker keeps checkpoints.
    """
    if not recorder.stores:
        return None
    saved = Checkpoint(
        server_round,
        params,
        strategy_arrays(state),
        engine.state(),
        tuple(recorder.notes),
        tuple(recorder.rejected),
    )
    return encode(saved)


def os_user() -> str:
    """Who runs this process, for the audit log (the login name; the uid when it has none)."""
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def versions() -> dict[str, str | None]:
    """fedkit's version and NVIDIA FLARE's (None when it is not installed), for the audit log."""
    from importlib.metadata import PackageNotFoundError, version

    from fedkit._version import __version__

    try:
        flare: str | None = version("nvflare")
    except PackageNotFoundError:
        flare = None
    return {"fedkit": __version__, "nvflare": flare}


class Recorder:
    """A run's record as it goes: metric rows, notes and rejected updates, every tracker told of each step.

    Trackers that take rounds whole (:class:`~fedkit.tracking.base.RoundStore`: the local store, the
    remote server's relay) also get each round's checkpoint and the run's audit records
    (:mod:`fedkit.privacy.audit`), with the round's metrics in one transaction; a run is resumed from
    the first :class:`~fedkit.tracking.base.RunStore` among them. The federation's ``options`` may hold
    ``silo_sha256`` (each silo's data checksum as its site reported it) and ``sites`` (what remote sites
    reported of themselves), which the audit log records.

    Parameters
    ----------
    config
        The run.
    federation
        Its silos (recorded with the run; their data checksums go to the audit log).
    trackers
        Where the run is recorded.
    callbacks
        Called with each round's event.
    run_id
        The id of a recorded run to resume (default: a new run id).
    test_counts
        Each silo's test rows and positives (default: from the federation's test labels).
    privacy
        The run's DP parameters for the audit log's start record (:func:`fedkit.privacy.budget.start_fields`),
        None without DP.
    """

    def __init__(
        self,
        config: RunConfig,
        federation: Federation,
        trackers: Sequence[Tracker],
        callbacks: Sequence[Callable[[RoundEvent], None]] = (),
        run_id: str | None = None,
        test_counts: ClassCounts | None = None,
        privacy: Mapping[str, Any] | None = None,
    ) -> None:
        self.privacy = privacy
        self.run_id = run_id or new_run_id()
        self.config = config
        self.trackers = list(trackers)
        self.sinks: list[RoundStore] = [t for t in self.trackers if isinstance(t, RoundStore)]
        self.stores: list[RunStore] = [t for t in self.sinks if isinstance(t, RunStore)]
        self.callbacks = list(callbacks)
        self.data = federation.provenance.as_dict()
        self.checksums = federation.options.get("silo_sha256") or audit.silo_checksums(federation.silos)
        self.sites = federation.options.get("sites")
        self.test_counts = test_counts or class_counts({s.name: s.y_test for s in federation.silos})
        self.records: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.rejected: list[dict[str, Any]] = []
        self.intervals: dict[str, dict[str, float]] = {}
        """The 95% intervals of the scored model's AUC and accuracy at the last evaluation, for the final table."""
        self.chain = audit.Chain(self.run_id)

    def _audit(self, kind: str, fields: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The next audit record (none when no tracker keeps them)."""
        fields = {**fields, "time": datetime.now(UTC).isoformat(timespec="milliseconds")}
        return [self.chain.append(kind, fields)] if self.sinks else []

    def _append_audit(self, kind: str, fields: Mapping[str, Any]) -> None:
        """Append the next audit record to every tracker that keeps them."""
        records = self._audit(kind, fields)
        for sink in self.sinks:
            sink.append_audit(self.run_id, records)

    def start(self, started_by: str | None = None) -> None:
        """Tell every tracker the run begins; the audit log opens with who, versions, config and data checksums.

        Parameters
        ----------
        started_by
            Who started the run, for the audit log (default: the OS user).
        """
        for t in self.trackers:
            t.start_run(self.run_id, self.config.to_dict(), self.data)
        record = audit.start_record(
            self.config.to_dict(),
            self.data,
            self.checksums,
            user=started_by or os_user(),
            versions=versions(),
            sites=self.sites,
            dp=self.privacy,
        )
        self._append_audit("start", record)

    def resume(self, started_by: str | None = None) -> Checkpoint:
        """Continue the recorded run ``run_id`` from its last checkpoint, which is returned.

        Its audit log must verify and its data checksums match this federation's; its rows, notes and
        rejected updates so far are read back, trackers that keep no runs are told the run starts.

        Parameters
        ----------
        started_by
            Who resumes the run, for the audit log (default: the OS user).
        """
        if not self.stores:
            raise ResumeError("Resuming a run needs the local run store among the trackers, which keeps checkpoints.")
        store = self.stores[0]
        log = store.audit_log(self.run_id)
        audit.verify(log, self.run_id)
        if log and log[0].get("silos") != self.checksums:
            raise ResumeError(_changed_silos(self.run_id, log[0].get("silos") or {}, self.checksums))
        store.resume_run(self.run_id)
        blob = store.checkpoint(self.run_id)
        saved = decode(blob) if blob is not None else None
        if saved is None:  # resume_run raised already; kept for type checkers
            raise ResumeError(f"Run {self.run_id} has no checkpoint.")
        self.chain = audit.Chain.after(log, self.run_id)
        self.records = [r for r in store.history(self.run_id) if r["round"] <= saved.server_round]
        self.notes, self.rejected = list(saved.notes), list(saved.rejected)
        for t in self.trackers:
            if not isinstance(t, RoundStore):
                t.start_run(self.run_id, self.config.to_dict(), self.data)
        fields = {"after_round": saved.server_round, "user": started_by or os_user(), "versions": versions()}
        self._append_audit("resume", fields if self.sites is None else {**fields, "sites": self.sites})
        return saved

    def add_notes(self, server_round: int, verdicts: Sequence[Verdict], engine: Engine, seen: int) -> list[str]:
        """Add the round's notes: each rejected update (with the likely fix), then the engine's new notes.

        Parameters
        ----------
        server_round
            The round.
        verdicts
            The round's verdicts.
        engine
            The engine, whose notes after the first ``seen`` are new.
        seen
            How many of the engine's notes the run already has.
        """
        kept = sum(v.accepted for v in verdicts)
        hint = divergence_hint(self.config.lr, self.config.optimizer)
        notes = [rejection_note(server_round, v, kept, len(verdicts), hint) for v in verdicts if not v.accepted]
        notes += engine.notes[seen:]
        self.rejected += [
            {"round": server_round, "silo": v.silo, "kind": v.kind, "reason": v.reason}
            for v in verdicts
            if not v.accepted
        ]
        self.notes += notes
        return notes

    def record(
        self,
        server_round: int,
        rows: list[dict[str, Any]],
        params: np.ndarray,
        *,
        notes: Sequence[str] = (),
        audit_fields: Mapping[str, Any] | None = None,
        saved: bytes | None = None,
    ) -> None:
        """Keep one round's rows; give every tracker the rows (run stores: with the checkpoint and the round's
        audit record, in one transaction); call every callback with the round's event.

        Parameters
        ----------
        server_round
            The round (0 is the initial model).
        rows
            The round's metric rows.
        params
            The global parameters after the round.
        notes
            The notes the round added.
        audit_fields
            The round's audit record fields (:func:`fedkit.privacy.audit.round_record`).
        saved
            The run's checkpoint after the round (:func:`checkpoint`), or None.
        """
        self.records.extend(rows)
        records = self._audit("round", audit_fields) if audit_fields is not None else []
        for t in self.trackers:
            if isinstance(t, RoundStore):
                t.save_round(self.run_id, server_round, rows, checkpoint=saved, audit=records)
            else:
                t.log_round(self.run_id, server_round, rows)
        event = RoundEvent(self.run_id, server_round, self.config.rounds, rows, params, tuple(notes))
        for callback in self.callbacks:
            callback(event)

    def finish(self, status: str, params: np.ndarray) -> RunResult:
        """End the run with ``status`` (finished or stopped) and its final ``params``; returns its result.

        Parameters
        ----------
        status
            ``finished`` or ``stopped``.
        params
            The final global parameters.
        """
        notes = undefined_auc_notes(self.records, self.test_counts) + thin_class_notes(self.test_counts)
        if not self.data["verified"]:
            notes.append(
                "The data files were not verified against the pinned UCI sha256 (own data, or verify=False); "
                "see data.sha256."
            )
        result = RunResult(
            self.run_id,
            status,
            self.config.to_dict(),
            self.records,
            params,
            n_test_by_silo(self.test_counts),
            self.data,
            notes + self.notes,
            self.config.scored,
            list(self.rejected),
            dict(self.intervals),
        )
        summary = result.summary() if self.trackers else None
        last = max((r["round"] for r in self.records), default=0)
        end = {"status": status, "rounds": last, "params_sha256": audit.array_digest(params), "error": None}
        self._append_audit("end", end)
        for t in self.trackers:
            t.end_run(self.run_id, status, summary=summary, params=params)
        return result

    def fail(self, exc: BaseException) -> None:
        """End the run as failed: our own errors with their message, others with the traceback.

        Parameters
        ----------
        exc
            The exception that ended the run.
        """
        error = str(exc) if isinstance(exc, FedkitError) else traceback.format_exc()
        last = max((r["round"] for r in self.records), default=0)
        end = {"status": "failed", "rounds": last, "params_sha256": None, "error": str(exc)}
        self._append_audit("end", end)
        for t in self.trackers:
            t.end_run(self.run_id, "failed", error=error)


def strategy_of(config: RunConfig) -> Strategy:
    """The strategy a run of ``config`` aggregates with: its own, or FedAvg for a baseline.

    ``pooled`` trains one silo and ``local`` shares nothing, so FedAvg's average is a no-op for both.

    Parameters
    ----------
    config
        The run.

    Returns
    -------
    Strategy
        The strategy with the run's hyperparameters.
    """
    baseline = config.strategy in BASELINES
    return make_strategy("fedavg" if baseline else config.strategy, **config.strategy_options)


def run(
    config: RunConfig,
    federation: Federation,
    engine: Engine,
    *,
    trackers: Sequence[Tracker],
    hooks: Sequence[UpdateHook] = (),
    callbacks: Sequence[Callable[[RoundEvent], None]] = (),
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
    resume: str | None = None,
    started_by: str | None = None,
    test_counts: ClassCounts | None = None,
    run_id: str | None = None,
    train_sizes: Mapping[str, int] | None = None,
) -> RunResult:
    """Run ``config`` over ``engine``'s silos (of ``federation``), record it in ``trackers``; returns the result.

    Round 0 records the initial model. Every round's replies are validated before aggregation
    (:func:`validate_replies`) and, with the local store among ``trackers``, the run is checkpointed
    after every round and audited (:func:`checkpoint`, :mod:`fedkit.privacy.audit`). ``resume`` is
    the id of a recorded run to continue from its last checkpoint instead of starting a new one
    (same config; see :func:`fedkit.run`). ``started_by`` names who started the run in the audit
    log (default: the OS user). ``should_stop`` is checked after each round: when it returns True the
    run ends cleanly with status ``stopped``. Ctrl-C also records ``stopped``; an exception records
    ``failed`` (a fedkit error with its message, others with the traceback) and is re-raised. Users
    call :func:`fedkit.run`, which builds the federation, the engine and the trackers.

    Parameters
    ----------
    config
        The run.
    federation
        The silos the engine holds.
    engine
        Trains and evaluates the silos.
    trackers
        Where the run is recorded.
    hooks
        Called on every silo reply before validation and aggregation.
    callbacks
        Called with a :class:`~fedkit.result.RoundEvent` after each round.
    should_stop
        Checked after each round: when it returns True the run ends cleanly with status ``stopped``.
    progress
        Show a progress bar over the rounds.
    resume
        The id of a recorded run to continue from its last checkpoint (same config).
    started_by
        Who started the run, for the audit log (default: the OS user).
    test_counts
        Each silo's test rows and positives (default: from the federation's test labels; the remote server knows
        only those).
    run_id
        The id of the new run (default: a fresh one; the remote engine's submitting machine chooses it). Not with
        ``resume``.
    train_sizes
        Each silo's train rows, for the privacy accounting (default: from the federation; the remote server
        knows only those).

    Raises
    ------
    ConfigError
        With ``dp="dpsgd"``, when ``dp_delta`` is not below 1/n for the smallest silo's n train rows.
    """
    from fedkit.progress import progress_bar

    strategy = strategy_of(config)
    sizes = dict(train_sizes) if train_sizes is not None else {s.name: s.n_train for s in federation.silos}
    budget.check_record_delta(config, sizes)
    privacy = budget.start_fields(config, sizes)
    if resume is not None and run_id is not None:
        raise ResumeError("runner.run takes run_id= for a new run or resume= to continue one, not both.")
    recorder = Recorder(
        config, federation, trackers, callbacks, run_id=resume or run_id, test_counts=test_counts, privacy=privacy
    )
    params = engine.initial_params()
    state = strategy.init(params)
    first = 1
    seen = 0  # notes from before the first round (a remote site silent at the start, or restored) go with it
    ledger = budget.Ledger(config, sizes) if privacy is not None else None
    if resume is not None:
        saved = recorder.resume(started_by)
        params, state, first = saved.params, strategy_state(state, saved.strategy), saved.server_round + 1
        engine.restore(saved.engine)
        if ledger is not None:
            ledger = budget.Ledger.from_rows(config, sizes, recorder.records)
    else:
        recorder.start(started_by)
    status = "finished"
    bar = progress_bar(
        progress, total=config.rounds, initial=first - 1, desc=config.strategy, unit="round", file=sys.stderr
    )
    try:
        expect = getattr(engine, "expect_fit", None)  # remote: a training rides with the evaluation before it
        if resume is None:
            if expect is not None and not (should_stop is not None and should_stop()):
                expect(params, 1, *fit_plan(engine, config, strategy, state, params, 1))
            rows, intervals = evaluate_rows(0, engine, params, config)
            spent = budget.privacy_rows(ledger, 0, [], 0)
            rows = rows + spent
            notes = recorder.add_notes(0, [], engine, seen)
            seen = len(engine.notes)
            saved_now = checkpoint(0, params, state, engine, recorder)
            audit_fields = audit.round_record(0, [], [], params, dp=spending(spent, config))
            recorder.record(0, rows, params, notes=notes, audit_fields=audit_fields, saved=saved_now)
            recorder.intervals = intervals
        for server_round in range(first, config.rounds + 1):
            more = (
                expect is not None and server_round < config.rounds and not (should_stop is not None and should_stop())
            )
            outcome = run_round(
                server_round, config, engine, strategy, state, params, hooks, expect_fit=expect if more else None
            )
            params, state = outcome.params, outcome.state
            spent = budget.privacy_rows(ledger, server_round, outcome.selected, outcome.contributions)
            rows = outcome.rows + spent
            notes = recorder.add_notes(server_round, outcome.verdicts, engine, seen)
            less_noise = ledger.note(server_round) if ledger is not None else None
            if less_noise is not None:
                recorder.notes.append(less_noise)
                notes.append(less_noise)
            seen = len(engine.notes)
            audit_fields = audit.round_record(
                server_round,
                outcome.selected,
                outcome.verdicts,
                params,
                attestations=outcome.attestations,
                participants=outcome.participants,
                dp=spending(spent, config),
            )
            saved_now = checkpoint(server_round, params, state, engine, recorder)
            recorder.record(server_round, rows, params, notes=notes, audit_fields=audit_fields, saved=saved_now)
            recorder.intervals = outcome.intervals
            pooled = {r["metric"]: r["value"] for r in rows if r["silo"] == POOLED and r["model"] == config.scored}
            shown = {"auc": f"{pooled['auc']:.3f}", "acc": f"{pooled['accuracy']:.3f}"}
            epsilon = [r["value"] for r in spent if r["silo"] == POOLED and r["metric"] == "epsilon"]
            if epsilon:
                shown["eps"] = f"{epsilon[0]:.3g}"
            bar.set_postfix(refresh=False, **shown)
            bar.update()
            if should_stop is not None and should_stop() and server_round < config.rounds:
                status = "stopped"
                break
    except KeyboardInterrupt:
        recorder.finish("stopped", params)
        raise
    except BaseException as exc:
        if isinstance(exc, FedkitError) and hasattr(exc, "run_id"):
            exc.run_id = recorder.run_id
        recorder.fail(exc)
        raise
    finally:
        bar.close()
    return recorder.finish(status, params)


def _changed_silos(run_id: str, started: Mapping[str, str], now: Mapping[str, str]) -> str:
    """Why run ``run_id`` cannot resume over silos whose checksums are ``now`` (``started``: its audit log's)."""
    changed = sorted(k for k in now.keys() & started.keys() if now[k] != started[k])
    added, gone = sorted(now.keys() - started.keys()), sorted(started.keys() - now.keys())
    why = [f"the data of silo(s) {', '.join(changed)} differ from the data it started with"] if changed else []
    why += [f"silo(s) {', '.join(added)} were not in it when it started"] if added else []
    why += [f"silo(s) {', '.join(gone)} it started with are not here"] if gone else []
    return (
        f"Run {run_id} cannot be resumed: {'; '.join(why) or 'its silos differ'} (checksums in its audit log). "
        "Resume it with the same silos, data files and split."
    )
