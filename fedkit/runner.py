"""The round loop, shared by every engine: select silos, fit, hooks, aggregate, evaluate, record."""

from __future__ import annotations

import sys
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from fedkit import seeding
from fedkit.config import RunConfig
from fedkit.data.silos import Federation, load_silos
from fedkit.engines.base import Engine, FitReply, Scores
from fedkit.metrics import binary_metrics
from fedkit.result import POOLED, RunResult, undefined_auc_notes
from fedkit.strategies import make_strategy
from fedkit.tracking.base import Tracker

UpdateHook = Callable[[int, FitReply], FitReply]
"""Called on every silo reply before aggregation (DP noise, validation, secure aggregation masks...)."""


@dataclass(frozen=True)
class RoundEvent:
    """What the loop emits after each round: the round, its metric rows, and the new global parameters."""

    run_id: str
    round: int
    rounds: int
    rows: list[dict[str, Any]]
    params: np.ndarray


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus 6 random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def select_silos(names: Sequence[str], fraction: float, seed: int, round: int) -> list[str]:
    """The silos sampled for ``round``: ``max(1, round(fraction * K))`` of them, without replacement, seeded."""
    k = max(1, round_half_up(fraction * len(names)))
    if k >= len(names):
        return list(names)
    chosen = seeding.stream(seed, seeding.SELECTION, round).choice(len(names), size=k, replace=False)
    return [names[i] for i in sorted(chosen)]


def round_half_up(x: float) -> int:
    """Round to the nearest int, halves up (Python's round() rounds halves to even)."""
    return int(np.floor(x + 0.5))


def metric_rows(round: int, model: str, split: str, silo: str, values: dict[str, float]) -> list[dict[str, Any]]:
    """Long-format rows for a dict of metric values."""
    return [
        {"round": round, "silo": silo, "model": model, "split": split, "metric": m, "value": float(v)}
        for m, v in values.items()
    ]


def evaluation_rows(round: int, scores: list[Scores]) -> list[dict[str, Any]]:
    """Global-model test metrics per silo and on the pooled test set (all silos' test rows)."""
    rows = []
    for s in scores:
        rows += metric_rows(round, "global", "test", s.silo, binary_metrics(s.labels, s.logits))
    labels = np.concatenate([s.labels for s in scores])
    logits = np.concatenate([s.logits for s in scores])
    return rows + metric_rows(round, "global", "test", POOLED, binary_metrics(labels, logits))


def fit_rows(round: int, replies: list[FitReply]) -> list[dict[str, Any]]:
    """Local-model metrics: train loss of the local update, and test metrics on the silo's own test set."""
    rows = []
    for r in replies:
        rows += metric_rows(round, "local", "train", r.silo, {"loss": r.train_loss})
        rows += metric_rows(round, "local", "test", r.silo, binary_metrics(r.local_test.labels, r.local_test.logits))
    return rows


def default_engine(federation: Federation, config: RunConfig) -> Engine:
    """The in-process simulation engine for ``config``."""
    from fedkit.engines.simulation import SimulationEngine

    return SimulationEngine(federation, model=config.model, hidden=config.hidden, local=config.local, seed=config.seed)


def run(
    config: RunConfig | None = None,
    *,
    federation: Federation | None = None,
    engine: Engine | None = None,
    trackers: Sequence[Tracker] | None = None,
    hooks: Sequence[UpdateHook] = (),
    callbacks: Sequence[Callable[[RoundEvent], None]] = (),
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
) -> RunResult:
    """Run federated training as ``config`` says and record it; returns the :class:`RunResult`.

    Round 0 records the initial global model. ``should_stop`` is checked after each round: when it
    returns True the run ends cleanly with status ``stopped``. Ctrl-C also records ``stopped``;
    an exception records ``failed`` (with the traceback) and is re-raised.
    """
    from tqdm.auto import tqdm

    from fedkit.tracking.local import LocalStore

    config = config or RunConfig()
    if not isinstance(config, RunConfig):
        raise TypeError(f"run() takes a RunConfig; got {type(config).__name__}. Build one with fedkit.RunConfig(...).")
    federation = federation or load_silos(
        config.split, silos=config.silos, alpha=config.alpha, missing=config.missing,
        standardize=config.standardize, seed=config.seed, verify=config.verify,
    )  # fmt: skip
    engine = engine or default_engine(federation, config)
    trackers = list(trackers) if trackers is not None else [LocalStore()]
    strategy = make_strategy(config.strategy, **config.strategy_options)
    weights_of = {s.name: s.n_train for s in federation.silos}
    test_labels = {s.name: s.y_test for s in federation.silos}
    n_test = {**{s.name: s.n_test for s in federation.silos}, POOLED: sum(s.n_test for s in federation.silos)}
    run_id = new_run_id()
    data = federation.provenance.as_dict()
    for t in trackers:
        t.start_run(run_id, config.to_dict(), data)

    records: list[dict[str, Any]] = []
    params = engine.initial_params()
    state = strategy.init(params)
    status = "finished"
    bar = tqdm(total=config.rounds, desc=config.strategy, unit="round", file=sys.stderr, disable=not progress)

    def emit(round: int, rows: list[dict[str, Any]]) -> None:
        records.extend(rows)
        for t in trackers:
            t.log_round(run_id, round, rows)
        event = RoundEvent(run_id, round, config.rounds, rows, params)
        for callback in callbacks:
            callback(event)

    try:
        emit(0, evaluation_rows(0, engine.evaluate(params)))
        for round in range(1, config.rounds + 1):
            chosen = select_silos(engine.silos, config.fraction, config.seed, round)
            replies = engine.fit(params, round, chosen, strategy.local_term(state, params))
            for hook in hooks:
                replies = [hook(round, r) for r in replies]
            updates = np.stack([r.params - params for r in replies])
            weights = np.array([weights_of[r.silo] for r in replies], dtype=np.float64)
            params, state = strategy.aggregate(updates, weights, state, params)
            rows = fit_rows(round, replies) + evaluation_rows(round, engine.evaluate(params))
            emit(round, rows)
            pooled = {r["metric"]: r["value"] for r in rows if r["silo"] == POOLED}
            bar.set_postfix(auc=f"{pooled['auc']:.3f}", acc=f"{pooled['accuracy']:.3f}", refresh=False)
            bar.update()
            if should_stop is not None and should_stop() and round < config.rounds:
                status = "stopped"
                break
    except KeyboardInterrupt:
        status = "stopped"
        _finish(trackers, run_id, status, records, params, n_test, config, data, test_labels)
        bar.close()
        raise
    except BaseException:
        for t in trackers:
            t.end_run(run_id, "failed", error=traceback.format_exc())
        bar.close()
        raise
    bar.close()
    return _finish(trackers, run_id, status, records, params, n_test, config, data, test_labels)


def _finish(
    trackers: Sequence[Tracker],
    run_id: str,
    status: str,
    records: list[dict[str, Any]],
    params: np.ndarray,
    n_test: dict[str, int],
    config: RunConfig,
    data: dict[str, Any],
    test_labels: dict[str, np.ndarray],
) -> RunResult:
    notes = undefined_auc_notes(records, test_labels)
    if not data["verified"]:
        notes.append("The data files were not verified against the pinned sha256 (verify=False); see data.sha256.")
    result = RunResult(run_id, status, config.to_dict(), records, params, n_test, data, notes)
    summary = result.summary()
    for t in trackers:
        t.end_run(run_id, status, summary=summary, params=params)
    return result
