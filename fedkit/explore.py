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
from fedkit.result import POOLED

if TYPE_CHECKING:
    import pandas as pd


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

    from fedkit.paths import data_dir as default_data_dir

    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    uci.ensure_files(directory, verify=verify)
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


def run_label(run: Mapping[str, Any]) -> str:
    """A short label of a recorded run: strategy, split, seed and the id's last characters.

    Parameters
    ----------
    run
        A recorded run (:func:`fedkit.load_run`).
    """
    config = run["config"]
    return f"{config['strategy']}·{config['split']}·s{config['seed']}·{run['run_id'][-6:]}"


def load_runs(run_ids: Sequence[str] | None = None, *, last: int = 3, store: Any = None) -> list[dict[str, Any]]:
    """Recorded runs from the local store, which has every run's curves (as :func:`fedkit.load_run`, plus
    ``history`` and ``label``): ``run_ids`` (unique prefixes are enough), else the ``last`` finished or stopped runs.

    Parameters
    ----------
    run_ids
        Runs to load (unique prefixes are enough); None for the ``last`` finished or stopped runs.
    last
        How many of the latest runs to load when ``run_ids`` is None.
    store
        The local run store (default: ``$FEDKIT_HOME/runs.sqlite``).

    Raises
    ------
    ConfigError
        When the store has no finished run, or a run asked for has no final metrics.
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
        run_ids = [r["run_id"] for r in listed[:last]][::-1]
    runs = []
    for run_id in run_ids:
        run = store.get(run_id)
        if run["summary"] is None:
            raise ConfigError(f"Run {run['run_id']} has status {run['status']!r} and no final metrics; pick another.")
        run["history"] = run["summary"]["history"]
        run["label"] = run_label(run)
        runs.append(run)
    return runs


def differences_table(runs: Sequence[Mapping[str, Any]], source: str = "local") -> pd.DataFrame:
    """One row per run: the config fields that differ and the final metrics.

    Uses ``fedkit.compare`` (which also reads the runs back from SageMaker or MLflow with ``source``)
    when this fedkit has it, else the local runs' configs.

    Parameters
    ----------
    runs
        Recorded runs (:func:`load_runs`).
    source
        Where to read them: ``"local"``, ``"sagemaker"`` or ``"mlflow"``.
    """
    from importlib.util import find_spec

    if find_spec("fedkit.comparison") is not None:
        from fedkit.comparison import compare

        return compare([r["run_id"] for r in runs], source=source)
    if source != "local":
        raise ConfigError(f"This fedkit compares runs of source='local' only; got {source!r}.")
    table = config_differences({r["run_id"]: r["config"] for r in runs}).T
    table.insert(0, "avg_accuracy", [r["summary"]["final"]["avg_accuracy"] for r in runs])
    table.index.name = "run_id"
    return table


def config_differences(configs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The config fields whose values differ between runs: one row per field, one column per run.

    Parameters
    ----------
    configs
        Each run's RunConfig fields, by run label.
    """
    import pandas as pd

    table = pd.DataFrame({label: dict(c) for label, c in configs.items()})
    differ = table.astype(str).nunique(axis=1) > 1
    return table[differ]


def final_frame(final: Mapping[str, Any]) -> pd.DataFrame:
    """A summary's ``final`` block as a table: one row per silo plus pooled (n_test, loss, auc, accuracy).

    Parameters
    ----------
    final
        A summary's ``final`` block.
    """
    import pandas as pd

    rows = [{"silo": s, **m} for s, m in final["silos"].items()] + [{"silo": POOLED, **final[POOLED]}]
    return pd.DataFrame(rows, columns=["silo", "n_test", "loss", "auc", "accuracy"]).set_index("silo")


def finals_table(finals: Mapping[str, pd.DataFrame], metrics: Sequence[str] = ("accuracy", "auc")) -> pd.DataFrame:
    """Final metrics of several runs side by side: rows silo, columns (metric, run).

    Parameters
    ----------
    finals
        Each run's final table (:func:`final_frame`), by run label.
    metrics
        The metrics to show, in this order.
    """
    import pandas as pd

    return pd.concat({m: pd.DataFrame({label: t[m] for label, t in finals.items()}) for m in metrics}, axis=1)


def best_summary(finals: Mapping[str, pd.DataFrame]) -> str:
    """A few sentences: which run is best on each silo (by accuracy, AUC breaking ties) and on average.

    Parameters
    ----------
    finals
        Each run's final table (:func:`final_frame`), by run label.
    """
    if not finals:
        return "No runs to compare."
    silos: list[str] = []
    for table in finals.values():
        silos += [s for s in table.index if s not in silos]
    lines = []
    for silo in silos:
        scored = [
            (t.loc[silo, "accuracy"], _or_minus(t.loc[silo, "auc"]), label)
            for label, t in finals.items()
            if silo in t.index
        ]
        accuracy, auc, label = max(scored)
        auc_text = f", AUC {auc:.3f}" if auc >= 0 else ""
        margin = sorted((s[0] for s in scored), reverse=True)
        gap = f" ({margin[0] - margin[1]:+.3f} over the next)" if len(margin) > 1 else ""
        lines.append(f"- **{silo}**: {label} (accuracy {accuracy:.3f}{auc_text}){gap}")
    means = {label: t.drop(index=POOLED, errors="ignore")["accuracy"].mean() for label, t in finals.items()}
    best = max(means, key=lambda label: means[label])
    head = (
        f"Best mean accuracy over silos (FLamby's Avg): **{best}** ({means[best]:.3f}). "
        "Best run per silo (final test accuracy, AUC breaking ties):"
    )
    return "\n".join([head, *lines])


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
    """Mean ± std over seeds of the final accuracy and AUC per silo, one column block per label.

    Parameters
    ----------
    summaries
        The run summaries of each label's seeds, by label (e.g. strategy).
    """
    import pandas as pd

    columns = {}
    for label, runs in summaries.items():
        finals = [final_frame(s["final"]) for s in runs]
        for table in finals:  # the unweighted mean over silos (FLamby's Avg), per seed
            table.loc["avg (silos)"] = table.drop(index=POOLED).mean()
        stacked = pd.concat(finals)
        for metric in ("accuracy", "auc"):
            grouped = stacked.groupby(level=0, sort=False)[metric]
            columns[(label, f"{metric} mean")] = grouped.mean()
            columns[(label, f"{metric} std")] = grouped.std(ddof=0)
    return pd.DataFrame(columns)
