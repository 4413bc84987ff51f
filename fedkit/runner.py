"""The round loop, shared by every engine: select silos, fit, hooks, aggregate, evaluate, record.

It knows the silos only through the :class:`~fedkit.engines.base.Engine` protocol: the simulation
engine trains them in this process, the remote engine (on the FLARE server) asks the sites.
:func:`fedkit.run` chooses and builds the engine, then calls :func:`run`.
"""

from __future__ import annotations

import sys
import traceback
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from fedkit import seeding
from fedkit.config import RunConfig, silos_per_round
from fedkit.data.silos import Federation
from fedkit.engines.base import Engine, Evaluation, FitReply
from fedkit.evalstats import metrics_from_stats
from fedkit.metrics import METRICS
from fedkit.result import POOLED, ClassCounts, RoundEvent, RunResult, class_counts, n_test_by_silo, undefined_auc_notes
from fedkit.strategies import BASELINES, Strategy, make_strategy
from fedkit.strategies.base import Controls
from fedkit.tracking.base import Tracker

UpdateHook = Callable[[int, FitReply], FitReply]
"""Called on every silo reply before aggregation (DP noise, validation, secure aggregation masks...)."""


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


def evaluate_rows(
    server_round: int, engine: Engine, params: np.ndarray, config: RunConfig, personal_models: np.ndarray | None = None
) -> list[dict[str, Any]]:
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
    """
    rows = [] if config.strategy == "local" else score_rows(server_round, "global", engine.evaluate(params))
    if config.scored == "personal":
        models = {} if personal_models is None else {"models": personal_models}
        rows += score_rows(server_round, "personal", engine.evaluate_personal(params, server_round, **models))
    return rows


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


def run_round(
    server_round: int,
    config: RunConfig,
    engine: Engine,
    strategy: Strategy,
    state: Any,
    params: np.ndarray,
    hooks: Sequence[UpdateHook] = (),
) -> tuple[np.ndarray, Any, list[dict[str, Any]]]:
    """One round: sample silos, train them, pass the replies through ``hooks``, aggregate, evaluate.

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
        Called on every silo reply before aggregation.

    Returns
    -------
    tuple[np.ndarray, Any, list[dict]]
        The new global parameters, the strategy's new state and the round's metric rows.
    """
    chosen = select_silos(engine.silos, config.fraction, config.seed, server_round)
    replies = engine.fit(params, server_round, chosen, strategy.local_term(state, params))
    for hook in hooks:
        replies = [hook(server_round, r) for r in replies]
    params, state = aggregate(strategy, state, params, replies, engine, config)
    return params, state, fit_rows(server_round, replies) + evaluate_rows(server_round, engine, params, config)


def aggregate(
    strategy: Strategy, state: Any, params: np.ndarray, replies: list[FitReply], engine: Engine, config: RunConfig
) -> tuple[np.ndarray, Any]:
    """The strategy's step from the silos' ``replies``: new global parameters and state.

    Under secure aggregation the strategy gets only the sums the engine computes (:meth:`Engine.sum_updates`).

    Parameters
    ----------
    strategy
        The run's strategy.
    state
        Its state before the round.
    params
        The global parameters before the round.
    replies
        The silos' replies (after any hooks).
    engine
        The engine holding the silos (how many there are; the secure sum).
    config
        The run (``secure_aggregation``).

    Returns
    -------
    tuple
        The new global parameters and the strategy's new state.
    """
    if config.secure_aggregation:  # the server sees only the sums
        updates, weights, controls = engine.sum_updates(replies, params).strategy_inputs(len(engine.silos))
    else:
        updates = np.stack([r.params - params for r in replies])  # type: ignore[operator]
        weights = np.array([r.n_train for r in replies], dtype=np.float64)
        deltas = [r.control_delta for r in replies if r.control_delta is not None]
        controls = Controls(np.stack(deltas), len(engine.silos)) if deltas else None
    return strategy.aggregate(updates, weights, state, params, controls)


class Recorder:
    """A run's record as it goes: its metric rows, every tracker told of each step, every callback called.

    Parameters
    ----------
    config
        The run.
    federation
        Its silos (recorded with the run).
    trackers
        Where the run is recorded.
    callbacks
        Called with each round's event.
    test_counts
        Each silo's test rows and positives (default: from the federation's test labels).
    """

    def __init__(
        self,
        config: RunConfig,
        federation: Federation,
        trackers: Sequence[Tracker],
        callbacks: Sequence[Callable[[RoundEvent], None]] = (),
        test_counts: ClassCounts | None = None,
    ) -> None:
        self.run_id = new_run_id()
        self.config = config
        self.trackers = list(trackers)
        self.callbacks = list(callbacks)
        self.data = federation.provenance.as_dict()
        self.test_counts = test_counts or class_counts({s.name: s.y_test for s in federation.silos})
        self.records: list[dict[str, Any]] = []

    def start(self) -> None:
        """Tell every tracker the run begins."""
        for t in self.trackers:
            t.start_run(self.run_id, self.config.to_dict(), self.data)

    def record(self, server_round: int, rows: list[dict[str, Any]], params: np.ndarray) -> None:
        """Keep one round's rows, log them to every tracker, and call every callback with the round's event.

        Parameters
        ----------
        server_round
            The round (0 is the initial model).
        rows
            The round's metric rows.
        params
            The global parameters after the round.
        """
        self.records.extend(rows)
        for t in self.trackers:
            t.log_round(self.run_id, server_round, rows)
        event = RoundEvent(self.run_id, server_round, self.config.rounds, rows, params)
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
        notes = undefined_auc_notes(self.records, self.test_counts)
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
            notes,
            self.config.scored,
        )
        summary = result.summary() if self.trackers else None
        for t in self.trackers:
            t.end_run(self.run_id, status, summary=summary, params=params)
        return result

    def fail(self) -> None:
        """End the run as failed, with the traceback of the exception being handled."""
        for t in self.trackers:
            t.end_run(self.run_id, "failed", error=traceback.format_exc())


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
    test_counts: ClassCounts | None = None,
) -> RunResult:
    """Run ``config`` over ``engine``'s silos (of ``federation``), record it in ``trackers``; returns the result.

    Round 0 records the initial model. Ctrl-C records ``stopped``; an exception records ``failed`` (with the
    traceback) and is re-raised. Users call :func:`fedkit.run`, which builds the federation, the engine and the
    trackers.

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
        Called on every silo reply before aggregation.
    callbacks
        Called with a :class:`~fedkit.result.RoundEvent` after each round.
    should_stop
        Checked after each round: when it returns True the run ends cleanly with status ``stopped``.
    progress
        Show a progress bar over the rounds.
    test_counts
        Each silo's test rows and positives (default: from the federation's test labels; the remote server knows
        only those).
    """
    from fedkit.progress import progress_bar

    strategy = strategy_of(config)
    recorder = Recorder(config, federation, trackers, callbacks, test_counts)
    recorder.start()
    params = engine.initial_params()
    state = strategy.init(params)
    status = "finished"
    bar = progress_bar(progress, total=config.rounds, desc=config.strategy, unit="round", file=sys.stderr)
    try:
        recorder.record(0, evaluate_rows(0, engine, params, config), params)
        for server_round in range(1, config.rounds + 1):
            params, state, rows = run_round(server_round, config, engine, strategy, state, params, hooks)
            recorder.record(server_round, rows, params)
            pooled = {r["metric"]: r["value"] for r in rows if r["silo"] == POOLED and r["model"] == config.scored}
            bar.set_postfix(auc=f"{pooled['auc']:.3f}", acc=f"{pooled['accuracy']:.3f}", refresh=False)
            bar.update()
            if should_stop is not None and should_stop() and server_round < config.rounds:
                status = "stopped"
                break
    except KeyboardInterrupt:
        recorder.finish("stopped", params)
        raise
    except BaseException:
        recorder.fail()
        raise
    finally:
        bar.close()
    return recorder.finish(status, params)
