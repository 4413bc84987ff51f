"""``fedkit.sweep``: every configuration of a grid × seeds (× validation folds) as one stacked job, tabulated.

Every configuration is built — and so validated by :class:`~fedkit.config.RunConfig` — before
anything trains: a bad value is refused up front, naming the field and the value. The runs then
train together (:func:`fedkit.stacking.run_stacked`: the silos of every run are rows of one
vectorized trainer call per round), in chunks of at most :data:`MAX_ROWS` rows; a run the stacked
loop cannot take runs alone through :func:`fedkit.run`, and the result says so. Each run equals
the same config through :func:`fedkit.run` (tests/test_sweep.py), and is recorded in the local
store under the sweep's id, in one transaction per chunk.

With ``folds=K`` every run is repeated on the K validation folds of each silo's train rows
(:func:`fedkit.data.silos.validation_split`), so the best configuration is chosen without
touching a test set; measure it on the test sets once, afterwards (``result.best_config()``).
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkit._validation import did_you_mean
from fedkit.config import RunConfig, load_federation, with_changes
from fedkit.errors import ConfigError, ConfigTypeError, RoundFailedError
from fedkit.stacking import HISTORIES, run_stacked, stack_blocker
from fedkit.tracking.local import LocalStore, SweepRunRecord

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from fedkit.data.silos import Federation
    from fedkit.result import RunResult
    from fedkit.tracking.base import Tracker

SCORES: tuple[str, ...] = ("avg_accuracy", "pooled_auc", "pooled_accuracy", "pooled_loss")
"""What a sweep tabulates per run, from the final evaluation of the model each run is scored with."""
LOWER_IS_BETTER: tuple[str, ...] = ("pooled_loss",)
MAX_ROWS = 8192
"""Rows (silos of runs) trained in one stacked chunk: bounds memory, and a chunk is recorded as it ends."""
TRAINING_FIELDS: frozenset[str] = frozenset(
    {"model", "hidden", "strategy", "personalize", "finetune_steps", "backend", "engine", "rounds", "fraction"}
    | {"local_steps", "local_epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay"}
    | {"server_lr", "server_momentum", "mu", "beta1", "beta2", "tau", "trim_beta", "byzantine", "krum_m"}
    | {"secure_aggregation"}
)
"""RunConfig fields that change how a run trains but not its data; runs differing only in them share a federation."""


def expand_grid(
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]] | None,
) -> list[dict[str, Any]]:
    """Every combination of ``grid``'s values, in order (the last field varies fastest).

    Parameters
    ----------
    grid
        A mapping of RunConfig fields to lists of values, or a list of such mappings: the union of
        each one's combinations (for values that only go together, e.g. ``mu`` with ``fedprox``), as
        scikit-learn's ``ParameterGrid``. None or ``{}`` is one combination that changes nothing.

    Returns
    -------
    list of dict
        One dict of field values per combination.

    Raises
    ------
    ConfigError
        A field that is not a RunConfig field (with the closest name), ``seed`` (use ``seeds``), or
        an empty list of values.
    ConfigTypeError
        Values that are not a list (a string is one value, not a list of values).
    """
    grids = [grid or {}] if grid is None or isinstance(grid, Mapping) else list(grid)
    names = [f.name for f in fields(RunConfig)]
    combos: list[dict[str, Any]] = []
    for sub in grids:
        if not isinstance(sub, Mapping):
            raise ConfigTypeError(f"A sweep grid is a mapping of RunConfig fields to lists of values; got {sub!r}.")
        for key, values in sub.items():
            if key == "seed":
                raise ConfigError("The grid of sweep cannot vary 'seed'; pass seeds=[...] (every config runs each).")
            if key not in names:
                raise ConfigError(f"The grid of sweep has no RunConfig field {key!r}.{did_you_mean(key, names)}")
            if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
                raise ConfigTypeError(
                    f"The grid of sweep takes a list of values per field; got {key}={values!r}. "
                    f"Write {key}=[{values!r}] for a single value."
                )
            if not values:
                raise ConfigError(f"The grid of sweep has no values for {key!r}; give at least one.")
        combos += [dict(zip(sub, values, strict=True)) for values in itertools.product(*sub.values())]
    return combos


def seeds_from_text(text: str) -> list[int]:
    """``"42-46"`` -> [42, ..., 46]; ``"42,43,50"`` and ``"42-44,50"`` likewise (``--seeds``, the sweep panel).

    Parameters
    ----------
    text
        Ints and ranges, comma-separated.

    Returns
    -------
    list of int
        The seeds, in order.

    Raises
    ------
    ConfigError
        A part that is not an int or a range of ints.
    """
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
    except ValueError:
        raise ConfigError(f"Seeds are ints and ranges, e.g. 42-46 or 42,43,50; got {text!r}.") from None
    return seeds


def grid_from_text(lines: Sequence[str]) -> dict[str, list[Any]]:
    """``["lr=0.001,0.01", "strategy=fedavg,fedprox"]`` -> ``{"lr": [0.001, 0.01], "strategy": [...]}``.

    Each value is read as its RunConfig field's type; ``none`` is None for a field that may be unset.

    Parameters
    ----------
    lines
        ``FIELD=VALUE,VALUE,...`` each (``fedkit sweep --grid``, the sweep panel's text box); blank lines are skipped.

    Returns
    -------
    dict
        RunConfig field -> the list of its values.

    Raises
    ------
    ConfigError
        A line that is not ``FIELD=VALUES``, a field RunConfig does not have (with the closest name), or
        a value of the wrong type.
    """
    kinds = {f.name: str(f.type) for f in fields(RunConfig)}
    readers: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}
    grid: dict[str, list[Any]] = {}
    for line in (line for line in lines if line.strip()):
        name, sep, text = line.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not sep or not text.strip():
            raise ConfigError(f"A grid line is FIELD=VALUE,VALUE,... e.g. lr=0.001,0.01; got {line!r}.")
        if name not in kinds:
            raise ConfigError(f"Grid line {line!r}: RunConfig has no field {name!r}.{did_you_mean(name, kinds)}")
        kind = kinds[name].split("|")[0].strip()
        values: list[Any] = []
        for word in (w.strip() for w in text.split(",")):
            if word.lower() == "none" and "None" in kinds[name]:
                values.append(None)
            elif kind == "bool":
                values.append(word.lower() in ("true", "yes", "1"))
            else:
                try:
                    values.append(readers[kind](word))
                except ValueError:
                    raise ConfigError(
                        f"Grid line {line!r}: {word!r} is not {'an' if kind == 'int' else 'a'} {kind}."
                    ) from None
        grid[name] = values
    return grid


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its config and its place in the sweep.

    Parameters
    ----------
    config
        The run's configuration.
    configuration
        Its row in the sweep's table (the grid combination).
    seed
        Its seed.
    fold
        Its validation fold, or None when it is scored on the test sets.
    """

    config: RunConfig
    configuration: int
    seed: int
    fold: int | None


def plan_runs(
    base: RunConfig | Mapping[str, Any] | None,
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]] | None,
    seeds: Sequence[int],
    folds: int | None,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[SweepRun]]:
    """The base fields, the grid's combinations and every run of the sweep, each config built (validated) here.

    Parameters
    ----------
    base
        The fields every run shares (a RunConfig, a mapping of its fields, or None).
    grid
        The grid (see :func:`expand_grid`).
    seeds
        The seeds every combination runs with.
    folds
        Validation folds per seed, or None.

    Returns
    -------
    tuple
        The base fields (without ``seed``), the list of combinations, and every :class:`SweepRun`.

    Raises
    ------
    ConfigError
        The first invalid combination, naming its grid values and RunConfig's reason.
    """
    if base is None:
        base_fields: dict[str, Any] = {}
    elif isinstance(base, RunConfig):
        base_fields = base.to_dict()
    elif isinstance(base, Mapping):
        RunConfig.from_dict(dict(base))  # a bad base is refused as itself
        base_fields = dict(base)
    else:
        raise ConfigTypeError(
            f"The 'base' parameter of sweep takes a RunConfig or a mapping; got {type(base).__name__}."
        )
    base_fields.pop("seed", None)
    combos = expand_grid(grid)
    runs = []
    for index, combo in enumerate(combos):
        for seed in seeds:
            try:
                config = RunConfig.from_dict(with_changes(base_fields, {**combo, "seed": seed}))
            except ConfigError as exc:
                given = ", ".join(f"{k}={v!r}" for k, v in combo.items()) or "the base config"
                raise type(exc)(f"Sweep grid combination {given} (seed {seed}) is invalid: {exc}") from exc
            if config.engine != "simulation":
                raise ConfigError(
                    f"sweep trains in this process (engine='simulation'); got engine={config.engine!r}. "
                    "Run remote configurations with fedkit.run."
                )
            runs += [SweepRun(config, index, seed, fold) for fold in (range(folds) if folds else [None])]
    return base_fields, combos, runs


def _data_key(config: RunConfig) -> str:
    """What identifies a config's federation: every field that is not a training field (as JSON: some are dicts)."""
    data = {f.name: getattr(config, f.name) for f in fields(RunConfig) if f.name not in TRAINING_FIELDS}
    return json.dumps(data, sort_keys=True, default=str)


class _Federations:
    """Each run's federation, loaded once per data key and fold and shared by every run that has it."""

    def __init__(self, folds: int | None, data_dir: str | Path | None = None) -> None:
        self.folds = folds
        self.data_dir = data_dir
        self._loaded: dict[str, Federation] = {}

    def of(self, run: SweepRun) -> Federation:
        """The federation ``run`` trains on: its config's, or a validation fold of it."""
        from fedkit.data.silos import validation_split

        key = _data_key(run.config)
        if key not in self._loaded:
            self._loaded[key] = load_federation(run.config, data_dir=self.data_dir)
        if run.fold is None:
            return self._loaded[key]
        fold_key = f"{key} fold {run.fold}"
        if fold_key not in self._loaded:
            folds = self.folds or 0
            self._loaded[fold_key] = validation_split(self._loaded[key], seed=run.seed, fold=run.fold, folds=folds)
        return self._loaded[fold_key]


def _chunks(runs: Sequence[SweepRun], federations: _Federations, max_rows: int = MAX_ROWS) -> list[list[int]]:
    """Indices of ``runs`` in chunks of at most ``max_rows`` silo rows, runs alike (model, batch, steps) together."""

    def rows(run: SweepRun) -> int:
        return 1 if run.config.strategy == "pooled" else len(federations.of(run).silos)

    def alike(i: int) -> tuple[Any, ...]:
        c = runs[i].config
        return (c.model, c.hidden, c.batch_size, c.local_steps or 0, c.local_epochs or 0, c.rounds, c.optimizer)

    out: list[list[int]] = []
    size = 0
    for i in sorted(range(len(runs)), key=alike):
        if not out or size + rows(runs[i]) > max_rows:
            out.append([])
            size = 0
        out[-1].append(i)
        size += rows(runs[i])
    return out


def _kept_rows(result: RunResult, history: str) -> list[dict[str, Any]]:
    """The metric rows a sweep keeps of a run: its last round's evaluation, or all of them (``history="full"``)."""
    if history == "full" or not result.records:
        return result.records
    last = max(r["round"] for r in result.records)
    return [r for r in result.records if r["round"] == last and r["model"] != "local"]


def _run_scores(result: RunResult) -> dict[str, Any]:
    """The :data:`SCORES` of a run and each silo's accuracy, from its final evaluation."""
    final = result.final
    pooled = final["pooled"] or {}
    scores = {
        "avg_accuracy": final["avg_accuracy"],
        **{f"pooled_{m}": pooled.get(m) for m in ("auc", "accuracy", "loss")},
    }
    scores.update({f"{silo}_accuracy": block["accuracy"] for silo, block in final["silos"].items()})
    return {k: math.nan if v is None else v for k, v in scores.items()}


@dataclass
class SweepResult:
    """What :func:`sweep` returns: one row per run, one per configuration, the best one, and notes.

    Parameters
    ----------
    sweep_id
        The sweep's id in the run store.
    configurations
        The grid's combinations (field -> value), one per table row.
    runs
        One row per run: configuration, grid values, seed, fold, run id, status, the :data:`SCORES`
        and each silo's accuracy.
    table
        One row per configuration: its grid values, ``runs``, ``complete`` (every run finished), and
        the mean and standard deviation over seeds of each score (``<score>_mean``, ``<score>_std``;
        with folds, each seed's mean over its folds first).
    metric
        The score the best configuration is chosen by.
    scored_on
        ``"validation"`` with folds, else ``"test"``.
    base
        The fields every run shares.
    seeds
        The seeds.
    notes
        Sentences on how the sweep ran (runs not stacked and why, test-set scoring, a stop).
    results
        Each run's :class:`~fedkit.result.RunResult` (None with ``keep_results=False``).
    """

    sweep_id: str
    configurations: list[dict[str, Any]]
    runs: pd.DataFrame
    table: pd.DataFrame
    metric: str
    scored_on: str
    base: dict[str, Any]
    seeds: list[int]
    notes: list[str] = field(default_factory=list)
    results: list[RunResult] | None = None

    @property
    def best(self) -> int:
        """The table row of the best configuration: highest mean ``metric`` (lowest for a loss), then pooled AUC.

        Only configurations whose every run finished compete (all of them if none did); the first wins a tie.
        """
        sign = -1.0 if self.metric in LOWER_IS_BETTER else 1.0
        complete = self.table[self.table["complete"]] if self.table["complete"].any() else self.table

        def key(i: Any) -> tuple[float, float]:
            row = complete.loc[i]
            value, auc = sign * row[f"{self.metric}_mean"], row["pooled_auc_mean"]
            return (
                round(value, 6) if not math.isnan(value) else -math.inf,
                round(auc, 6) if not math.isnan(auc) else -math.inf,
            )

        return int(max(complete.index, key=key))

    @property
    def best_fields(self) -> dict[str, Any]:
        """The grid values of the best configuration."""
        return dict(self.configurations[self.best])

    def best_config(self, seed: int | None = None) -> RunConfig:
        """The best configuration as a RunConfig, to test once on the test sets.

        Parameters
        ----------
        seed
            Its seed (default: the sweep's first).

        Returns
        -------
        RunConfig
            The base fields with the best grid values.
        """
        return RunConfig.from_dict(
            with_changes(self.base, {**self.best_fields, "seed": self.seeds[0] if seed is None else seed})
        )

    def summary(self) -> dict[str, Any]:
        """JSON-ready: id, what was scored, the best configuration, the table and the notes (what ``--json`` prints)."""
        table = self.table.reset_index().astype(object).where(self.table.reset_index().notna(), None)
        return {
            "sweep_id": self.sweep_id,
            "scored_on": self.scored_on,
            "metric": self.metric,
            "best": self.best_fields,
            "table": table.to_dict("records"),
            "notes": list(self.notes),
        }

    def __repr__(self) -> str:
        return (
            f"SweepResult({self.sweep_id!r}: {len(self.table)} configurations, {len(self.runs)} runs, "
            f"best by {self.scored_on} {self.metric}: {self.best_fields})"
        )


def summary_table(runs: pd.DataFrame, configurations: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per configuration: grid values, run count, whether all finished, each score's mean ± std over seeds.

    Parameters
    ----------
    runs
        One row per run (``SweepResult.runs``).
    configurations
        The grid's combinations, one per row of the table.

    Returns
    -------
    pandas.DataFrame
        Indexed by configuration.
    """
    import pandas as pd

    scores = [c for c in runs.columns if c in SCORES]
    per_seed = runs.groupby(["configuration", "seed"], sort=True)[scores].mean()  # folds averaged first
    grouped = per_seed.groupby(level="configuration")
    table = pd.DataFrame(configurations).reindex(range(len(configurations)))
    table["runs"] = runs.groupby("configuration").size().reindex(table.index, fill_value=0)
    table["complete"] = (runs.assign(done=runs["status"] == "finished").groupby("configuration")["done"].all()).reindex(
        table.index, fill_value=False
    )
    for score in scores:
        table[f"{score}_mean"] = grouped[score].mean()
        table[f"{score}_std"] = grouped[score].std(ddof=1)
    table.index.name = "configuration"
    return table


SWEEP_CONSTRAINTS = {"metric": SCORES, "history": HISTORIES}


def sweep(
    base: RunConfig | Mapping[str, Any] | None = None,
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]] | None = None,
    seeds: Sequence[int] | int = (42,),
    folds: int | None = None,
    *,
    metric: str = "avg_accuracy",
    trackers: Sequence[Tracker] | None = None,
    history: str = "final",
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    on_round: Callable[[int, int], None] | None = None,
    keep_results: bool = True,
    data_dir: str | Path | None = None,
) -> SweepResult:
    """Run every combination of ``grid`` on top of ``base``, for each seed (and fold), as one job; tabulate it.

    Parameters
    ----------
    base
        The fields every run shares (a RunConfig or a mapping of its fields; default ``RunConfig()``).
    grid
        RunConfig field -> list of values, or a list of such mappings (see :func:`expand_grid`).
    seeds
        The seeds every configuration runs with; mean ± std in the table are over them.
    folds
        None: score each run on the silos' test sets. K >= 2: run each configuration and seed on
        the K validation folds of each silo's train rows and score on the held-out fold — choose
        on these, then test the best once (:meth:`SweepResult.best_config`).
    metric
        The score the best configuration is chosen by: ``avg_accuracy`` (Avg4), ``pooled_auc``,
        ``pooled_accuracy`` or ``pooled_loss`` (lowest wins); ties go to the higher pooled AUC.
    trackers
        Where the runs are recorded (default: the local store, under the sweep's id, one
        transaction per chunk); ``[]`` records nothing. A remote tracker gets each run replayed.
    history
        ``"final"`` (default): each run keeps its last round's evaluation; ``"full"``: every round
        as :func:`fedkit.run` records it (slower: every run is evaluated every round).
    progress
        A progress bar over every round of every run.
    should_stop
        Checked after each round; True ends the sweep cleanly (unfinished runs ``stopped``).
    on_round
        Called after each round with the rounds done so far and in all (over every run): a widget's progress.
    keep_results
        Keep each run's :class:`~fedkit.result.RunResult` in ``result.results`` (False for very large sweeps).
    data_dir
        The folder of the four UCI files (default: ``$FEDKIT_DATA_DIR``, else the verified download).

    Returns
    -------
    SweepResult
        ``table`` (one row per configuration), ``runs`` (one per run), ``best``, ``notes``.

    Raises
    ------
    ConfigError
        Before anything trains: an invalid grid value or combination (naming the field and value),
        an unknown field, bad seeds or folds.
    """
    from fedkit.progress import progress_bar
    from fedkit.runner import new_run_id

    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    for name, allowed in SWEEP_CONSTRAINTS.items():
        value = {"metric": metric, "history": history}[name]
        if value not in allowed:
            raise ConfigError(f"The {name!r} parameter of sweep must be one of {allowed}; got {value!r}.")
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(
            f"The 'seeds' parameter of sweep takes a non-empty list of ints, e.g. [42, 43]; got {seeds!r}."
        )
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
        raise ConfigError(f"The 'folds' parameter of sweep must be None or an int >= 2; got {folds!r}.")
    base_fields, combos, runs = plan_runs(base, grid, seeds, folds)
    federations = _Federations(folds, data_dir)
    trackers = [LocalStore()] if trackers is None else list(trackers)
    sweep_id = "sweep-" + new_run_id()
    spec = {"base": base_fields, "grid": combos, "seeds": seeds, "folds": folds, "metric": metric}
    for store in _stores(trackers):
        store.start_sweep(sweep_id, spec)
    blockers = [stack_blocker(r.config) for r in runs]
    stacked = [i for i, b in enumerate(blockers) if b is None]
    groups = [[stacked[i] for i in c] for c in _chunks([runs[i] for i in stacked], federations)]
    groups += [[i] for i, b in enumerate(blockers) if b is not None]
    notes = _notes(runs, blockers, folds)
    rows: list[dict[str, Any] | None] = [None] * len(runs)  # the runs table: scores only, however many runs
    kept: list[RunResult | None] = [None] * len(runs)
    total = sum(r.config.rounds for r in runs)
    bar = progress_bar(progress, total=total, desc="sweep", unit="round", file=sys.stderr)

    done_rounds = 0

    def advance(rounds: int) -> None:
        nonlocal done_rounds
        done_rounds += rounds  # counted here: a hidden tqdm bar counts nothing
        bar.update(rounds)
        if on_round is not None:
            on_round(done_rounds, total)

    status = "failed"
    try:
        for group in groups:
            alone = blockers[group[0]] is not None
            done = _run_group([runs[i] for i in group], federations, alone, history, advance, should_stop)
            done = [replace(result, records=_kept_rows(result, history)) for result in done]
            for i, result in zip(group, done, strict=True):
                rows[i] = _run_row(runs[i], combos, result)
                kept[i] = result if keep_results else None
            _record(trackers, sweep_id, list(zip([runs[i] for i in group], done, strict=True)))
            if should_stop is not None and should_stop():
                break
        status = "finished" if all(r is not None and r["status"] == "finished" for r in rows) else "stopped"
    except KeyboardInterrupt:
        status = "stopped"
        raise
    finally:
        bar.close()
        if status != "finished":
            for store in _stores(trackers):
                store.end_sweep(sweep_id, status)
    ran = [row for row in rows if row is not None]
    if len(ran) < len(runs):
        notes.append(f"Stopped: {len(ran)} of {len(runs)} runs ran; the table covers those.")
    results = [r for r in kept if r is not None] if keep_results else None
    outcome = _outcome(sweep_id, base_fields, combos, ran, seeds, folds, metric, notes, results)
    for store in _stores(trackers):
        store.end_sweep(sweep_id, status, outcome.summary())
    return outcome


def _stores(trackers: Sequence[Tracker]) -> list[LocalStore]:
    return [t for t in trackers if isinstance(t, LocalStore)]


def _notes(runs: Sequence[SweepRun], blockers: Sequence[str | None], folds: int | None) -> list[str]:
    """Sentences on how the sweep ran: runs trained one by one (and why), and what it is scored on."""
    notes = []
    for reason in dict.fromkeys(b for b in blockers if b is not None):
        count = sum(b == reason for b in blockers)
        notes.append(f"{count} of {len(runs)} runs trained one by one through fedkit.run, not stacked: {reason}.")
    if folds is None:
        notes.append(
            "Scored on the silos' test sets: a configuration chosen by them looks better than it will do on new "
            "data. Pass folds=K to choose on validation folds of the train rows, then test the choice once."
        )
    return notes


def _run_group(
    runs: Sequence[SweepRun],
    federations: _Federations,
    alone: bool,
    history: str,
    update: Callable[[int], Any],
    should_stop: Callable[[], bool] | None,
) -> list[RunResult]:
    """One stacked chunk of runs, or one run alone through :func:`fedkit.run`."""
    feds = [federations.of(run) for run in runs]
    if not alone:
        configs = [run.config for run in runs]
        return run_stacked(configs, feds, history=history, on_round=update, should_stop=should_stop)
    from fedkit.api import run
    from fedkit.runner import Recorder

    (one,), (federation,) = runs, feds
    try:
        result = run(one.config, federation=federation, trackers=[], progress=False, should_stop=should_stop)
    except RoundFailedError as exc:  # this candidate diverged or lost its silos: it fails, the sweep goes on
        recorder = Recorder(one.config, federation, trackers=[])
        recorder.notes.append(str(exc))
        result = recorder.finish("failed", np.empty(0, dtype=np.float32))
    update(one.config.rounds)
    return [result]


def _record(trackers: Sequence[Tracker], sweep_id: str, done: Sequence[tuple[SweepRun, RunResult]]) -> None:
    """Record finished runs: in each local store in one transaction, then replayed to every other tracker."""
    records = [
        SweepRunRecord(
            r.run_id,
            r.status,
            r.config,
            r.data,
            r.summary(),
            r.params,
            r.records,
            run.configuration,
            run.seed,
            run.fold,
        )
        for run, r in done
    ]
    for store in _stores(trackers):
        store.add_sweep_runs(sweep_id, records)
    for tracker in trackers:
        if isinstance(tracker, LocalStore):
            continue
        for record in records:
            tracker.start_run(record.run_id, record.config, record.data)
            for server_round, rows in itertools.groupby(record.rows, key=lambda row: row["round"]):
                tracker.log_round(record.run_id, server_round, list(rows))
            tracker.end_run(record.run_id, record.status, summary=record.summary, params=record.params)


def _run_row(run: SweepRun, combos: Sequence[Mapping[str, Any]], result: RunResult) -> dict[str, Any]:
    """A run's row of ``SweepResult.runs``: its place, id, status and scores."""
    return {
        "configuration": run.configuration,
        **combos[run.configuration],
        "seed": run.seed,
        "fold": run.fold,
        "run_id": result.run_id,
        "status": result.status,
        **_run_scores(result),
    }


def _outcome(
    sweep_id: str,
    base_fields: dict[str, Any],
    combos: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    seeds: list[int],
    folds: int | None,
    metric: str,
    notes: list[str],
    results: list[RunResult] | None,
) -> SweepResult:
    import pandas as pd

    runs = pd.DataFrame(rows)
    scored_on = "validation" if folds else "test"
    table = summary_table(runs, combos)
    return SweepResult(sweep_id, combos, runs, table, metric, scored_on, base_fields, seeds, notes, results)
