"""Many runs as one job: each round, the selected silos of every run train as rows of one stacked trainer call.

:func:`run_stacked` is the round loop of :func:`fedkit.runner.run` for many configurations at once.
Each run keeps what a run keeps — its simulation engine (with the silo-side state: SCAFFOLD control
variates, FedPer heads), its strategy and state, its parameters, its record — and goes through the
same pieces in the same order: :func:`~fedkit.runner.select_silos`, the engine's
:meth:`~fedkit.engines.simulation.SimulationEngine.fit_job` and
:meth:`~fedkit.engines.simulation.SimulationEngine.fit_replies`, :func:`~fedkit.runner.aggregate`,
:func:`~fedkit.runner.evaluate_rows`. Only the local training is shared: the round's jobs of all
runs go to :func:`~fedkit.engines.vectorized.train_many`, which trains them as rows of one array,
each row with its own learning rate, optimizer, momentum, weight decay, proximal term and SCAFFOLD
correction, and its own data (runs may differ in split, folds and standardization). A run's
parameters and metrics come out as :func:`fedkit.run` gives them (tests/test_sweep.py).

Runs that do not fit this loop (:func:`stack_blocker` says why) run one by one through :func:`fedkit.run`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

import numpy as np

from fedkit.config import RunConfig
from fedkit.data.silos import Federation
from fedkit.engines.simulation import SimulationEngine, make_engine, pooled_federation
from fedkit.engines.vectorized import VectorizedTrainer, train_many
from fedkit.errors import ConfigError, RoundFailedError
from fedkit.privacy.validation import check_global
from fedkit.result import RunResult
from fedkit.runner import (
    Evaluated,
    Recorder,
    aggregate,
    evaluate_rows,
    fit_rows,
    select_silos,
    strategy_of,
    validate_replies,
    validation_rows,
)
from fedkit.strategies import Strategy
from fedkit.strategies.base import LocalTerm
from fedkit.training import batch_plans

HISTORIES: tuple[str, ...] = ("final", "full")
"""What a stacked run records: its last round's evaluation only, or every round as :func:`fedkit.run` does."""

STACKED_FIELDS: frozenset[str] = frozenset(
    {"split", "silos", "alpha", "missing", "standardize", "verify", "seed", "model", "hidden", "strategy"}
    | {"server_lr", "server_momentum", "mu", "beta1", "beta2", "tau", "trim_beta", "byzantine", "krum_m"}
    | {"personalize", "finetune_steps", "rounds", "fraction", "local_steps", "local_epochs", "batch_size", "lr"}
    | {"optimizer", "momentum", "weight_decay", "data", "schema", "not_measured", "secure_aggregation"}
    | {"min_silos", "max_update_norm", "max_norm_ratio"}  # update validation: the round loop's own, per run
)
"""The RunConfig fields the stacked loop knows (besides ``engine`` and ``backend``, which decide whether a run
stacks at all). A field added to RunConfig later (a new hook in the round loop) is not among them until the
loop handles it: a config that sets it away from its default runs alone, through :func:`fedkit.run`."""


@cache
def _defaults() -> RunConfig:
    """``RunConfig()``, built once: the defaults as ``__post_init__`` settles them (not the fields' raw ``None``)."""
    return RunConfig()


def stack_blocker(config: RunConfig) -> str | None:
    """Why a run of ``config`` cannot train stacked with others, as a sentence; None when it can.

    Parameters
    ----------
    config
        The run.

    Returns
    -------
    str or None
        The reason, or None.
    """
    if config.engine != "simulation":
        return f"engine={config.engine!r} trains on the sites, not in this process"
    if config.backend != "vectorized":
        return f"backend={config.backend!r} trains silo by silo with torch (stacking needs the vectorized trainer)"
    unknown = [f for f in fields(RunConfig) if f.name not in STACKED_FIELDS | {"engine", "backend"}]
    changed = [f.name for f in unknown if getattr(config, f.name) != getattr(_defaults(), f.name)]
    if changed:
        return f"the stacked round loop does not handle {', '.join(changed)} yet"
    return None


class PlanCache:
    """:func:`fedkit.training.batch_plans`, memoized within a round: the runs of one seed and data draw one plan.

    A plan is a function of the seed, round, silo sizes and step counts only, so every configuration
    of a sweep with the same seed (and fold) trains on the same batches; drawing them once per round
    instead of once per run saves most of a small run's bookkeeping. Plans of past rounds are dropped.
    """

    def __init__(self) -> None:
        self._round = -1
        self._plans: dict[tuple[Any, ...], list[np.ndarray]] = {}

    def __call__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        steps: Sequence[int],
        *,
        seed: int,
        kind: int,
        server_round: int,
        silos: Sequence[int],
    ) -> list[np.ndarray]:
        """The plans :func:`~fedkit.training.batch_plans` draws for these arguments (shared, read-only).

        Parameters
        ----------
        sizes
            Train rows of each silo.
        batch_size
            The batch size.
        steps
            Steps of each silo.
        seed
            The run's seed.
        kind
            The stream (local training or fine-tuning, :mod:`fedkit.seeding`).
        server_round
            The round; a new round drops the plans of the last one.
        silos
            Each silo's stream id.

        Returns
        -------
        list of numpy.ndarray
            One read-only plan per silo.
        """
        if server_round != self._round:
            self._round, self._plans = server_round, {}
        key = (tuple(sizes), batch_size, tuple(steps), seed, kind, tuple(silos))
        if key not in self._plans:
            plans = batch_plans(sizes, batch_size, steps, seed=seed, kind=kind, server_round=server_round, silos=silos)
            for plan in plans:
                plan.flags.writeable = False
            self._plans[key] = plans
        return self._plans[key]


@dataclass
class _StackedRun:
    """One run of a stacked job: its config, engine, strategy and state, global parameters and record."""

    config: RunConfig
    engine: SimulationEngine
    strategy: Strategy
    state: Any
    params: np.ndarray
    recorder: Recorder
    status: str = "running"
    error: str | None = None


def _start_runs(configs: Sequence[RunConfig], federations: Sequence[Federation]) -> list[_StackedRun]:
    """The runs of ``configs`` on ``federations`` (one each), their engines sharing trainers and batch plans.

    Runs on one federation (the same object) with one model shape share a vectorized trainer: its
    rows are stored once, however many configurations train on them.
    """
    plans = PlanCache()
    trainers: dict[tuple[int, bool, str, int], VectorizedTrainer] = {}
    runs = []
    for config, federation in zip(configs, federations, strict=True):
        blocker = stack_blocker(config)
        if blocker is not None:
            raise ConfigError(f"This run cannot be stacked: {blocker}. Run it with fedkit.run.")
        pooled = config.strategy == "pooled"
        key = (id(federation), pooled, config.model, config.hidden)
        if key not in trainers:
            train_fed = pooled_federation(federation) if pooled else federation
            trainers[key] = VectorizedTrainer(train_fed, config.model, config.hidden)
        engine = make_engine(federation, config, trainer=trainers[key], plans=plans)
        strategy = strategy_of(config)
        params = engine.initial_params()
        recorder = Recorder(config, federation, trackers=[])
        runs.append(_StackedRun(config, engine, strategy, strategy.init(params), params, recorder))
    return runs


def _fit_round(server_round: int, runs: Sequence[_StackedRun], *, full: bool) -> list[list[dict[str, Any]]]:
    """Round ``server_round`` of every run in ``runs``: select, train all stacked, validate, aggregate.

    Returns each run's training rows (what :func:`~fedkit.runner.fit_rows` and
    :func:`~fedkit.runner.validation_rows` record) with ``full``, else empty lists. Validation and the
    check of the new global model are the round loop's own, so a stacked run rejects (or fails on) exactly
    what :func:`fedkit.run` does.
    """
    jobs, terms = [], []
    for run in runs:
        chosen = select_silos(run.engine.silos, run.config.fraction, run.config.seed, server_round)
        term = run.strategy.local_term(run.state, run.params) or LocalTerm()
        jobs.append(run.engine.fit_job(run.params, server_round, chosen, term))
        terms.append(term)
    trained = train_many([(run.engine.trainer, job) for run, job in zip(runs, jobs, strict=True)], with_loss=full)
    out = []
    for run, job, term, result in zip(runs, jobs, terms, trained, strict=True):
        replies = run.engine.fit_replies(job, run.params, term, result, score_local=full)
        try:
            accepted, verdicts = validate_replies(server_round, replies, run.params, run.config, check_loss=full)
            new, run.state, _ = aggregate(
                run.strategy, run.state, run.params, accepted, run.engine, run.config, server_round
            )
            check_global(server_round, new, run.config.strategy)
        except RoundFailedError as exc:  # this run diverged (or lost too many silos): it ends, the others go on
            run.status, run.error = "failed", str(exc)
            out.append([])
            continue
        run.params = new
        rows = fit_rows(server_round, replies) + validation_rows(server_round, verdicts) if full else []
        out.append(rows)
    return out


def _evaluate_round(server_round: int, runs: Sequence[_StackedRun]) -> list[Evaluated]:
    """Each run's :func:`~fedkit.runner.evaluate_rows` of round ``server_round``, the fine-tuning of all stacked."""
    jobs = {id(run): job for run in runs if (job := run.engine.finetune_job(run.params, server_round)) is not None}
    tuned = [run for run in runs if id(run) in jobs]
    trained = train_many([(run.engine.trainer, jobs[id(run)]) for run in tuned], with_loss=False)
    models = {id(run): result[0] for run, result in zip(tuned, trained, strict=True)}
    return [evaluate_rows(server_round, run.engine, run.params, run.config, models.get(id(run))) for run in runs]


def run_stacked(
    configs: Sequence[RunConfig],
    federations: Sequence[Federation],
    *,
    history: str = "final",
    on_round: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[RunResult]:
    """Run every config on its federation as one stacked job; one :class:`~fedkit.result.RunResult` per config.

    Parameters
    ----------
    configs
        The runs (simulation, vectorized backend: see :func:`stack_blocker`); they may differ in any
        other field, including the number of rounds.
    federations
        The federation of each run (share one object between runs to share its rows).
    history
        ``"final"``: each run records the evaluation of its last round (what a sweep compares);
        ``"full"``: every round, as :func:`fedkit.run` records it (train losses, local models, round 0).
    on_round
        Called after each round with the number of runs that trained in it (a progress bar).
    should_stop
        Checked after each round; when it returns True every unfinished run ends as ``stopped``,
        evaluated at the round it reached.

    Returns
    -------
    list of RunResult
        In the order of ``configs``; nothing is written to a tracker (the caller records them).
    """
    if history not in HISTORIES:
        raise ConfigError(f"The 'history' parameter of run_stacked must be one of {HISTORIES}; got {history!r}.")
    full = history == "full"
    runs = _start_runs(configs, federations)
    if full:
        for run, (rows, intervals) in zip(runs, _evaluate_round(0, runs), strict=True):
            run.recorder.record(0, rows, run.params)
            run.recorder.intervals = intervals
    for server_round in range(1, max((c.rounds for c in configs), default=0) + 1):
        live = [run for run in runs if run.status == "running" and run.config.rounds >= server_round]
        if not live:
            break
        replies = _fit_round(server_round, live, full=full)
        stop = should_stop is not None and should_stop()
        going = [run for run in live if run.status == "running"]
        scored = [run for run in going if full or stop or server_round == run.config.rounds]
        evaluated = dict(zip(map(id, scored), _evaluate_round(server_round, scored), strict=True))
        for run, reply in zip(live, replies, strict=True):
            if run.status == "failed":
                run.recorder.notes.append(run.error or "The run failed.")
                continue
            last = server_round == run.config.rounds
            if id(run) in evaluated:
                rows = reply + evaluated[id(run)].rows
                run.recorder.record(server_round, rows, run.params)
                run.recorder.intervals = evaluated[id(run)].intervals
            if last:
                run.status = "finished"
            elif stop:
                run.status = "stopped"
        if on_round is not None:
            on_round(len(live))
        if stop:
            break
    return [run.recorder.finish(run.status, run.params) for run in runs]


__all__ = ["HISTORIES", "STACKED_FIELDS", "PlanCache", "run_stacked", "stack_blocker"]
