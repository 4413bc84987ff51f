"""The round loop, shared by every engine: select silos, fit, hooks, aggregate, evaluate, record."""

from __future__ import annotations

import sys
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkit import seeding
from fedkit.config import RunConfig, silos_per_round
from fedkit.data.silos import Federation, load_silos
from fedkit.engines.base import Engine, FitReply, Scores
from fedkit.errors import ConfigError
from fedkit.metrics import METRICS, grouped_metrics
from fedkit.result import POOLED, RunResult, undefined_auc_notes
from fedkit.strategies import BASELINES, make_strategy
from fedkit.tracking.base import Tracker

if TYPE_CHECKING:
    from torch import nn

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
    k = silos_per_round(len(names), fraction)
    if k >= len(names):
        return list(names)
    chosen = seeding.stream(seed, seeding.SELECTION, round).choice(len(names), size=k, replace=False)
    return [names[i] for i in sorted(chosen)]


def metric_rows(round: int, model: str, split: str, silo: str, values: dict[str, float]) -> list[dict[str, Any]]:
    """Long-format rows for a dict of metric values."""
    return [
        {"round": round, "silo": silo, "model": model, "split": split, "metric": m, "value": float(v)}
        for m, v in values.items()
    ]


def score_rows(round: int, model: str, scores: list[Scores], pooled: bool = True) -> list[dict[str, Any]]:
    """Test metrics of ``model`` per silo and, if ``pooled``, on all silos' rows together — one grouped pass."""
    labels = np.concatenate([s.labels for s in scores])
    logits = np.concatenate([s.logits for s in scores])
    group = np.repeat(np.arange(len(scores)), [len(s.labels) for s in scores])
    names = [s.silo for s in scores]
    if pooled:  # every row once more, as group K
        labels, logits = np.concatenate([labels, labels]), np.concatenate([logits, logits])
        group = np.concatenate([group, np.full(len(group), len(scores))])
        names.append(POOLED)
    values = grouped_metrics(labels, logits, group, len(names))
    return [
        {"round": round, "silo": name, "model": model, "split": "test", "metric": m, "value": float(values[m][i])}
        for i, name in enumerate(names)
        for m in METRICS
    ]


def evaluate_rows(round: int, engine: Engine, params: np.ndarray, strategy: str) -> list[dict[str, Any]]:
    """The round's evaluation: the global model (not for ``local``) and each silo's own model when personalized."""
    rows = [] if strategy == "local" else score_rows(round, "global", engine.evaluate(params))
    if engine.personalized:
        rows += score_rows(round, "personal", engine.evaluate_personal(params, round))
    return rows


def fit_rows(round: int, replies: list[FitReply]) -> list[dict[str, Any]]:
    """Local-model metrics: train loss of the local update, and test metrics on the silo's own test set."""
    rows = [metric_rows(round, "local", "train", r.silo, {"loss": r.train_loss})[0] for r in replies]
    return rows + score_rows(round, "local", [r.local_test for r in replies], pooled=False)


def run(
    config: RunConfig | None = None,
    *,
    federation: Federation | None = None,
    engine: Engine | None = None,
    model: nn.Module | None = None,
    trackers: Sequence[Tracker] | None = None,
    hooks: Sequence[UpdateHook] = (),
    callbacks: Sequence[Callable[[RoundEvent], None]] = (),
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
    admin_kit: str | Path | None = None,
) -> RunResult:
    """Run federated training as ``config`` says and record it; returns the :class:`RunResult`.

    Round 0 records the initial model. ``model`` is any ``torch.nn.Module`` returning logits,
    trained on the per-silo path (default: ``config.model`` on the vectorized path).
    ``should_stop`` is checked after each round: when it returns True the run ends cleanly with
    status ``stopped``. Ctrl-C also records ``stopped``;
    an exception records ``failed`` (with the traceback) and is re-raised.

    With ``config.engine == "remote"`` the run goes to the NVIDIA FLARE federation of the admin
    startup kit ``admin_kit`` (see :func:`fedkit.remote.submit.run_remote`); it is recorded here all the same.
    """
    from fedkit.progress import progress_bar
    from fedkit.tracking.local import LocalStore

    config = config or RunConfig()
    if not isinstance(config, RunConfig):
        raise TypeError(f"run() takes a RunConfig; got {type(config).__name__}. Build one with fedkit.RunConfig(...).")
    if config.engine == "remote" and engine is None:
        from fedkit.remote.submit import run_remote

        if admin_kit is None or federation is not None or model is not None or hooks:
            raise ConfigError(
                "engine='remote' needs admin_kit= (the admin startup kit from `fedkit remote provision`) and takes "
                "no federation=, model= or hooks= (each site loads its own hospital and trains the config's model)."
            )
        return run_remote(
            config,
            admin_kit=admin_kit,
            trackers=trackers,
            callbacks=callbacks,
            should_stop=should_stop,
            progress=progress,
        )
    federation = federation or load_silos(
        config.split, silos=config.silos, alpha=config.alpha, missing=config.missing,
        standardize=config.standardize, seed=config.seed, verify=config.verify,
    )  # fmt: skip
    if engine is None:
        from fedkit.engines.simulation import make_engine

        engine = make_engine(federation, config, model)
    trackers = list(trackers) if trackers is not None else [LocalStore()]
    baseline = config.strategy in BASELINES  # pooled: one silo; local: nothing shared — FedAvg is a no-op
    strategy = make_strategy("fedavg" if baseline else config.strategy, **config.strategy_options)
    scored = "personal" if engine.personalized else "global"
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
    bar = progress_bar(progress, total=config.rounds, desc=config.strategy, unit="round", file=sys.stderr)

    def emit(round: int, rows: list[dict[str, Any]]) -> None:
        records.extend(rows)
        for t in trackers:
            t.log_round(run_id, round, rows)
        event = RoundEvent(run_id, round, config.rounds, rows, params)
        for callback in callbacks:
            callback(event)

    try:
        emit(0, evaluate_rows(0, engine, params, config.strategy))
        for round in range(1, config.rounds + 1):
            chosen = select_silos(engine.silos, config.fraction, config.seed, round)
            replies = engine.fit(params, round, chosen, strategy.local_term(state, params))
            for hook in hooks:
                replies = [hook(round, r) for r in replies]
            updates = np.stack([r.params - params for r in replies])
            weights = np.array([r.n_train for r in replies], dtype=np.float64)
            controls = [r.control_delta for r in replies if r.control_delta is not None]
            params, state = strategy.aggregate(updates, weights, state, params)
            if controls:
                state = strategy.update_controls(state, np.stack(controls), len(engine.silos))
            rows = fit_rows(round, replies) + evaluate_rows(round, engine, params, config.strategy)
            emit(round, rows)
            pooled = {r["metric"]: r["value"] for r in rows if r["silo"] == POOLED and r["model"] == scored}
            bar.set_postfix(auc=f"{pooled['auc']:.3f}", acc=f"{pooled['accuracy']:.3f}", refresh=False)
            bar.update()
            if should_stop is not None and should_stop() and round < config.rounds:
                status = "stopped"
                break
    except KeyboardInterrupt:
        status = "stopped"
        _finish(trackers, run_id, status, records, params, n_test, config, data, test_labels, scored)
        bar.close()
        raise
    except BaseException:
        for t in trackers:
            t.end_run(run_id, "failed", error=traceback.format_exc())
        bar.close()
        raise
    bar.close()
    return _finish(trackers, run_id, status, records, params, n_test, config, data, test_labels, scored)


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
    scored: str,
) -> RunResult:
    notes = undefined_auc_notes(records, test_labels)
    if not data["verified"]:
        notes.append("The data files were not verified against the pinned sha256 (verify=False); see data.sha256.")
    result = RunResult(run_id, status, config.to_dict(), records, params, n_test, data, notes, scored)
    summary = result.summary() if trackers else None
    for t in trackers:
        t.end_run(run_id, status, summary=summary, params=params)
    return result
