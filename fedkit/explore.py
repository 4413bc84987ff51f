"""Tables and sentences for the notebooks: the hospitals' raw data, and runs side by side.

Pure functions over the UCI files and recorded runs (no plotting, no widgets), tested like the rest
of the package; the notebooks only call them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedkit.data import uci
from fedkit.errors import ConfigError
from fedkit.metrics import METRICS
from fedkit.result import POOLED, final_table

if TYPE_CHECKING:
    import pandas as pd


def data_folder(data_dir: str | Path | None = None, *, verify: bool = True) -> Path:
    """The folder of the four UCI files, checked (downloaded, verified, when missing): what a notebook starts with.

    Parameters
    ----------
    data_dir
        The folder; None: ``$FEDKIT_DATA_DIR``, else the verified download in ``~/.cache/fedkit``.
    verify
        Check every file against its pinned sha256.

    Raises
    ------
    MissingDataError
        The files are not there and cannot be downloaded; a notebook shows it as one line saying
        where they were expected and how to point fedkit at them.
    """
    from fedkit.paths import data_dir as default_data_dir

    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    uci.ensure_files(directory, verify=verify)
    return directory


def raw_tables(data_dir: str | Path | None = None, *, verify: bool = True) -> dict[str, pd.DataFrame]:
    """Each hospital's file as a DataFrame of the 14 UCI columns (NaN where the file has '?').

    Parameters
    ----------
    data_dir
        The folder of the UCI files (default: ``$FEDKIT_DATA_DIR``, else the verified download).
    verify
        Check the files against their pinned sha256.
    """
    import pandas as pd

    directory = data_folder(data_dir, verify=verify)
    return {h: pd.DataFrame(uci.read_hospital(directory, h), columns=list(uci.COLUMNS)) for h in uci.HOSPITALS}


def hospital_overview(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per hospital: patients, positives, positive rate, rows with a missing value, age, share male.

    Parameters
    ----------
    tables
        Each hospital's raw rows (:func:`raw_tables`).
    """
    import pandas as pd

    rows = []
    for name, t in tables.items():
        positive = t["num"] > 0
        rows.append(
            {
                "hospital": name,
                "patients": len(t),
                "positives": int(positive.sum()),
                "positive_rate": float(positive.mean()),
                "rows_with_missing": int(t.isna().any(axis=1).sum()),
                "rows_kept_by_flamby": int((~t.drop(columns=["slope", "ca", "thal"]).isna().any(axis=1)).sum()),
                "mean_age": float(t["age"].mean()),
                "male_share": float(t["sex"].mean()),
            }
        )
    return pd.DataFrame(rows).set_index("hospital")


def missing_values(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Missing values ('?') per column and hospital, plus ``chol == 0`` (not measured in switzerland and va).

    Parameters
    ----------
    tables
        Each hospital's raw rows (:func:`raw_tables`).
    """
    import pandas as pd

    counts = pd.DataFrame({name: t.isna().sum() for name, t in tables.items()}).T
    counts["chol == 0"] = [int((t["chol"] == 0).sum()) for t in tables.values()]
    counts.index.name = "hospital"
    return counts.loc[:, (counts != 0).any(axis=0)]


def partition_table(federation: Any) -> pd.DataFrame:
    """One row per silo of a :class:`~fedkit.data.silos.Federation`: rows, positives, positive rate, train/test.

    Parameters
    ----------
    federation
        The silos.
    """
    import pandas as pd

    return pd.DataFrame(federation.summary()).set_index("silo")


# -- runs side by side -------------------------------------------------------------------------


def run_label(run: Mapping[str, Any], fields: Sequence[str] = ("split", "seed")) -> str:
    """A short label of a recorded run: its strategy, ``fields`` as ``name=value`` and the id's last characters.

    Parameters
    ----------
    run
        A recorded run (its ``config`` and ``run_id``).
    fields
        The config fields that tell it apart from the runs beside it (:func:`load_runs` picks those that differ).
    """
    config = run["config"]
    shown = [f"{k}={config.get(k)}" for k in fields if k != "strategy"]
    return "·".join([config["strategy"], *shown, run["run_id"][-6:]])


def _differing(configs: Sequence[Mapping[str, Any]], most: int = 3) -> list[str]:
    """Up to ``most`` config fields whose values differ between the runs (strategy first when it does)."""
    names = list(dict.fromkeys(k for c in configs for k in c))
    differ = [k for k in names if len({repr(c.get(k)) for c in configs}) > 1]
    return sorted(differ, key=lambda k: k != "strategy")[:most]


def load_runs(
    run_ids: Sequence[str] | None = None, *, last: int = 3, split: str | None = None, store: Any = None
) -> list[dict[str, Any]]:
    """Recorded runs from the local store, which has every run's curves (as :func:`fedkit.load_run`, plus
    ``history`` and ``label``).

    Parameters
    ----------
    run_ids
        The runs to load (unique prefixes are enough), in this order; None picks them as below.
    last
        Without ``run_ids``: the ``last`` finished or stopped runs of one split, oldest first.
    split
        That split; None: the split of the newest finished run. Runs of different splits have
        different silos and test rows, so they are not picked together (give ``run_ids`` for that).
    store
        The run store (default: the local store of the fedkit home).

    Raises
    ------
    ConfigError
        When the store has no finished run (on that split), or a run asked for has no final metrics.
    """
    from fedkit.tracking.local import LocalStore

    store = store or LocalStore()
    if not run_ids:
        listed = [r for r in store.list_runs() if r["status"] in ("finished", "stopped")]
        if not listed:
            raise ConfigError(
                f"The run store {store.path} has no finished run to compare; start one with the "
                "02_fedavg_widgets notebook or `fedkit run`, or pass run_ids."
            )
        wanted = split or listed[0]["split"]
        same = [r for r in listed if r["split"] == wanted]
        if not same:
            raise ConfigError(f"The run store {store.path} has no finished run on the {wanted!r} split; pick another.")
        run_ids = [r["run_id"] for r in same[:last]][::-1]
    runs = []
    for run_id in run_ids:
        run = store.get(run_id)
        if run["summary"] is None:
            raise ConfigError(f"Run {run['run_id']} has status {run['status']!r} and no final metrics; pick another.")
        run["history"] = run["summary"]["history"]
        runs.append(run)
    fields = _differing([r["config"] for r in runs]) if len(runs) > 1 else ["split", "seed"]
    for run in runs:  # labels say what tells the runs apart
        run["label"] = run_label(run, fields)
    return runs


def scored_on(config: Mapping[str, Any]) -> dict[str, Any]:
    """What decides which patients a run was scored on: the split and, where they matter, silos, alpha,
    the missing-value policy and the seed (the FLamby split's test rows are the same for every seed).

    Parameters
    ----------
    config
        A run's configuration (RunConfig fields).
    """
    from fedkit.data.silos import SKEWED, SYNTHETIC, check_data_options

    split = config["split"]
    rows: dict[str, Any] = {"split": split}
    if split in SYNTHETIC:
        rows["silos"] = config.get("silos") or 4
    if split in SKEWED:
        rows["alpha"] = config.get("alpha")
    rows["missing"] = check_data_options(split, rows.get("silos"), config.get("missing"), "scored_on")
    if split != "flamby":
        rows["seed"] = config.get("seed")
    return rows


def comparability(runs: Sequence[Mapping[str, Any]]) -> str:
    """One sentence: whether the runs were scored on the same test rows, so their metrics compare directly.

    Parameters
    ----------
    runs
        Recorded runs (:func:`load_runs`).
    """
    if not runs:
        return "No runs to compare."
    keys = [scored_on(r["config"]) for r in runs]
    n = len(runs)
    splits = sorted({k["split"] for k in keys})
    if len(splits) > 1:
        return (
            f"**Not comparable silo by silo**: these {n} runs are on different splits ({', '.join(splits)}), "
            "so their silos and test rows differ; only their overall trends compare."
        )
    differ = sorted({name for k in keys for name, value in k.items() if value != keys[0].get(name)})
    if differ:
        values = "; ".join(f"{name}: {', '.join(sorted({str(k.get(name)) for k in keys}))}" for name in differ)
        return (
            f"The {n} runs are on the {splits[0]} split but differ in {', '.join(differ)} ({values}), so each "
            "was scored on other test rows: compare trends, not small differences."
        )
    pooled = runs[0]["summary"]["final"].get(POOLED) or {}
    size = f"{pooled['n_test']} test rows" if pooled.get("n_test") else "test rows"
    if n == 1:
        return f"One run, on the {splits[0]} split ({size}): nothing to compare it with yet."
    return f"The {n} runs are on the {splits[0]} split with the same {size}: their metrics compare directly."


def differences_table(runs: Sequence[Mapping[str, Any]], source: str = "local") -> pd.DataFrame:
    """What differs between runs and their main final scores: one row per field, one column per run.

    The rows are the status and config fields that differ, then ``avg_accuracy`` (FLamby's Avg over the
    run's own silos) and the pooled accuracy and AUC; the per-silo scores are :func:`finals_table`'s.

    Parameters
    ----------
    runs
        Recorded runs (:func:`load_runs`); their labels name the columns.
    source
        Where ``fedkit.compare`` reads them: ``"local"``, ``"sagemaker"`` or ``"mlflow"``.
    """
    from fedkit.comparison import compare

    table = compare([r["run_id"] for r in runs], source=source)
    scores = [c for c in ("avg_accuracy", "pooled_accuracy", "pooled_auc") if c in table.columns]
    metric_columns = tuple(f"_{m}" for m in METRICS)
    fields = [c for c in table.columns if not c.endswith(metric_columns) and (c != "status" or table[c].nunique() > 1)]
    if len(runs) == 1:  # nothing differs: show the fields it set
        fields = [c for c in fields if table[c].iloc[0] is not None]
    shown = table[[*fields, *scores]].T
    shown.columns = [r["label"] for r in runs]
    shown.index.name = "field"
    return shown


def final_frame(final: Mapping[str, Any]) -> pd.DataFrame:
    """A summary's ``final`` block as a table (:func:`fedkit.result.final_table`: n_test, metrics, 95% intervals).

    Parameters
    ----------
    final
        The ``final`` block of a run summary.
    """
    return final_table(final)


def readable_table(table: pd.DataFrame) -> pd.DataFrame:
    """A final table (:meth:`RunResult.table <fedkit.result.RunResult.table>`) for reading: each interval's two
    bound columns become one ``95% CI`` text column beside its metric (:func:`fedkit.intervals.interval_text`).

    Parameters
    ----------
    table
        A final table with ``*_low`` / ``*_high`` columns.
    """
    from fedkit.intervals import interval_text

    shown = table.copy()
    for metric in ("auc", "accuracy"):
        low, high = shown.pop(f"{metric}_low"), shown.pop(f"{metric}_high")
        text = [interval_text(lo, hi) for lo, hi in zip(low, high, strict=True)]
        shown.insert(shown.columns.get_loc(metric) + 1, f"{metric} 95% CI", text)
    return shown


def finals_table(finals: Mapping[str, pd.DataFrame], metrics: Sequence[str] = ("accuracy", "auc")) -> pd.DataFrame:
    """Final metrics of several runs side by side: rows (metric, silo), one column per run.

    The metric names the rows, so it stays in view however many runs there are.

    Parameters
    ----------
    finals
        Each run's final table, by run label.
    metrics
        The metrics to show, in this order.
    """
    import pandas as pd

    return pd.concat({m: pd.DataFrame({label: t[m] for label, t in finals.items()}) for m in metrics}, axis=0)


TIE = 1e-9
"""Scores closer than this are a tie (accuracies are ratios of whole counts: equal ones are equal exactly)."""


def best_summary(finals: Mapping[str, pd.DataFrame]) -> str:
    """A few sentences: which run is best on each silo (by accuracy, AUC breaking ties) and on average; a tie
    on both is reported as a tie.

    Parameters
    ----------
    finals
        Each run's final table (index silo, with ``accuracy`` and ``auc``), by run label.
    """
    if not finals:
        return "No runs to compare."
    silos: list[str] = []
    for table in finals.values():
        silos += [s for s in table.index if s not in silos]
    lines = []
    for silo in silos:
        scored = sorted(
            (
                (t.loc[silo, "accuracy"], _or_minus(t.loc[silo, "auc"]), label)
                for label, t in finals.items()
                if silo in t.index
            ),
            key=lambda x: (x[0], x[1]),
            reverse=True,
        )
        lines.append(f"- **{silo}**: " + _ranking(scored))
    means = {label: t.drop(index=POOLED, errors="ignore")["accuracy"].mean() for label, t in finals.items()}
    top = max(means.values())
    best = [label for label, m in means.items() if abs(m - top) <= TIE]
    who = f"**{best[0]}**" if len(best) == 1 else "a tie between " + ", ".join(f"**{b}**" for b in best)
    head = (
        f"Best mean accuracy over silos (FLamby's Avg): {who} ({top:.3f}). "
        "Best run per silo (final test accuracy, AUC breaking ties):"
    )
    return "\n".join([head, *lines])


def _ranking(scored: Sequence[tuple[float, float, str]]) -> str:
    """The best of ``(accuracy, auc, label)`` sorted best first: a tie, AUC breaking a tie, or a margin."""
    accuracy, auc, label = scored[0]
    auc_text = f", AUC {auc:.3f}" if auc >= 0 else ""
    if len(scored) == 1:
        return f"{label} (accuracy {accuracy:.3f}{auc_text})"
    tied = [s for s in scored if abs(s[0] - accuracy) <= TIE and abs(s[1] - auc) <= TIE]
    if len(tied) > 1:
        return f"a tie between {', '.join(s[2] for s in tied)} (accuracy {accuracy:.3f}{auc_text})"
    second = scored[1]
    if abs(second[0] - accuracy) <= TIE:
        return f"{label} (accuracy {accuracy:.3f}, tied with {second[2]}; AUC {auc:.3f} vs {second[1]:.3f})"
    return f"{label} (accuracy {accuracy:.3f}{auc_text}; {accuracy - second[0]:+.3f} over the next)"


def _or_minus(value: float | None) -> float:
    return -1.0 if value is None or value != value else float(value)


def mean_table(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Several final tables (``RunResult.table()``) averaged cell-wise, rows in their order (e.g. over seeds).

    Parameters
    ----------
    tables
        Final tables with the same rows and columns.
    """
    import pandas as pd

    return pd.concat(list(tables)).groupby(level=0, sort=False).mean()


def mean_history(histories: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Several runs' long metric tables averaged value-wise (e.g. over seeds).

    Parameters
    ----------
    histories
        Long metric tables of runs with the same rounds.
    """
    import pandas as pd

    keys = ["round", "silo", "model", "split", "metric"]
    return pd.concat(list(histories)).groupby(keys, sort=False, as_index=False)["value"].mean()


def seeds_table(summaries: Mapping[str, Sequence[Mapping[str, Any]]]) -> pd.DataFrame:
    """Final loss, accuracy and AUC per silo with ``n_test`` and 95% intervals, one column block per label.

    One seed: each value and its interval. Several: the mean and std (ddof=0) over seeds, and the
    "typical 95% CI", the mean of the seeds' bounds (the test rows' uncertainty; the std is the
    seeds'). The row ``avg (silos)`` is the unweighted mean over silos (FLamby's Avg), without an interval.

    Parameters
    ----------
    summaries
        By label (e.g. strategy), the run summaries of its seeds.
    """
    import pandas as pd

    from fedkit.intervals import interval_text

    columns: dict[tuple[str, str], Any] = {}
    for label, runs in summaries.items():
        finals = [final_table(s["final"]) for s in runs]
        for table in finals:  # the unweighted mean over silos (FLamby's Avg), per seed
            table.loc["avg (silos)", ["accuracy", "auc"]] = table.drop(index=POOLED)[["accuracy", "auc"]].mean()
        stacked = pd.concat(finals).groupby(level=0, sort=False)
        mean = stacked.mean()
        if not columns:
            columns[("test rows", "n_test")] = mean["n_test"].map(lambda n: "" if n != n else int(n))
        several = len(finals) > 1
        columns[(label, "loss mean" if several else "loss")] = mean["loss"]
        for metric in ("accuracy", "auc"):
            bounds = mean[[f"{metric}_low", f"{metric}_high"]].itertuples(index=False)
            text = [interval_text(low, high) for low, high in bounds]
            columns[(label, f"{metric} mean" if several else metric)] = mean[metric]
            if several:  # one seed has no spread over seeds: no column of zeros
                columns[(label, f"{metric} std")] = stacked[metric].std(ddof=0)
            ci = f"{metric} typical 95% CI" if several else f"{metric} 95% CI"
            columns[(label, ci)] = pd.Series(text, index=mean.index).where(mean.index != "avg (silos)", "")
    return pd.DataFrame(columns)


def config_text(config: Any, leave_out: Sequence[str] = ("seed",)) -> str:
    """``name=value, ...`` of the fields that shape a run (:meth:`RunConfig.in_use <fedkit.config.RunConfig.in_use>`).

    Parameters
    ----------
    config
        A :class:`~fedkit.config.RunConfig`.
    leave_out
        Fields said elsewhere (default: the seed, which a report lists apart).
    """
    return ", ".join(f"{k}={v}" for k, v in config.in_use().items() if k not in leave_out)


REJECTION_COLUMNS = ["run", "run_id", "seed", "round", "silo", "kind", "reason"]


def rejections_table(summaries: Mapping[str, Sequence[Mapping[str, Any]]]) -> pd.DataFrame:
    """Every update that validation left out of a round, one row each (empty when none was).

    ``summaries`` maps a label (e.g. strategy) to run summaries (:meth:`fedkit.result.RunResult.summary`,
    or a recorded run's ``summary``); each rejected update is listed with its run, seed, round,
    silo, ``kind`` (see :data:`fedkit.privacy.validation.KINDS`) and reason.

    Parameters
    ----------
    summaries
        A label (e.g. strategy) to run summaries (:meth:`fedkit.result.RunResult.summary`, or a recorded run's
        ``summary``).
    """
    import pandas as pd

    rows = [
        {"run": label, "run_id": s["run_id"], "seed": s["config"]["seed"], **r}
        for label, runs in summaries.items()
        for s in runs
        for r in s.get("rejected", [])
    ]
    return pd.DataFrame(rows, columns=REJECTION_COLUMNS)
