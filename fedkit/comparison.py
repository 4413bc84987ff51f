"""Compare runs (``fedkit.compare``; the module is not named compare so it never shadows that function): one row
per run with the config fields that differ and the final per-silo and pooled metrics.

Runs come from the local store (every per-round curve is there), or are read back from SageMaker
Experiments or MLflow. SageMaker returns only summary statistics of each metric (last, min, max,
avg, count), so a run read from it has its final values, not its curves; MLflow returns both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fedkit.errors import TrackerError
from fedkit.metrics import METRICS
from fedkit.result import POOLED
from fedkit.tracking.local import LocalStore
from fedkit.tracking.registry import BACKENDS

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

SOURCES: tuple[str, ...] = tuple(BACKENDS)
"""Where runs can be read back from: every tracker backend."""


def _matches(config: dict[str, Any], where: Mapping[str, Any]) -> bool:
    for key, wanted in where.items():
        allowed = wanted if isinstance(wanted, list | tuple | set) else [wanted]
        if config.get(key) not in allowed:
            return False
    return True


def _local_records(runs: Sequence[str] | None, where: Mapping[str, Any], store: LocalStore) -> list[dict[str, Any]]:
    ids = list(runs) if runs is not None else [r["run_id"] for r in reversed(store.list_runs())]
    records = []
    for run_id in ids:
        run = store.get(run_id)
        if not _matches(run["config"], where):
            continue
        final = (run["summary"] or {}).get("final") or {"silos": {}, POOLED: None}
        silos = {s: {m: v for m, v in block.items() if m in METRICS} for s, block in final["silos"].items()}
        if final.get(POOLED):
            silos[POOLED] = {m: v for m, v in final[POOLED].items() if m in METRICS}
        records.append({"run_id": run["run_id"], "status": run["status"], "config": run["config"], "final": silos})
    return records


def _parse(text: str) -> Any:
    """A parameter read back as text: int, float, bool or the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "true": True, "false": False}.get(text, text)


def _typed(config: dict[str, Any]) -> dict[str, Any]:
    """Read-back config values with RunConfig's types (SageMaker returns every number as a float)."""
    from fedkit.config import RunConfig

    types = {f: str(field.type) for f, field in RunConfig.__dataclass_fields__.items()}
    return {
        k: int(v) if isinstance(v, float) and types.get(k, "").startswith("int") and v.is_integer() else v
        for k, v in config.items()
    }


def _final(record: dict[str, Any]) -> dict[str, Any]:
    """A read-back record with its raw ``metrics`` per silo replaced by the test metrics of its scored model."""
    from fedkit.config import scored_model

    model = scored_model(record["config"])
    metrics = record.pop("metrics")
    final = {
        silo: {m: values[f"{model}_test_{m}"] for m in METRICS if f"{model}_test_{m}" in values}
        for silo, values in metrics.items()
    }
    return {**record, "final": final}


def _mlflow_records(runs: Sequence[str] | None, experiment: str, tracking_uri: str | None) -> list[dict[str, Any]]:
    from fedkit.tracking.mlflow import RUN_TAG, SILO_TAG, MlflowBackend

    backend = MlflowBackend(experiment, tracking_uri)
    with backend.scoped():
        found = backend.client.get_experiment_by_name(experiment)
        if found is None:
            raise TrackerError(
                f"MLflow at {backend.tracking_uri} has no experiment {experiment!r}; check --experiment."
            )
        listed = backend.client.search_runs([found.experiment_id], filter_string=f"tags.`{RUN_TAG}` != ''")
    by_run: dict[str, dict[str, Any]] = {}
    for run in listed:
        run_id = run.data.tags[RUN_TAG]
        record = by_run.setdefault(run_id, {"run_id": run_id, "status": None, "config": {}, "metrics": {}})
        silo = run.data.tags.get(SILO_TAG)
        record["metrics"][silo or POOLED] = dict(run.data.metrics)
        if silo is None:
            record["status"] = run.info.status.lower()
            record["config"] = _typed({k: _parse(v) for k, v in run.data.params.items() if k != "data_verified"})
    return _select(by_run, runs)


def _sagemaker_records(runs: Sequence[str] | None, experiment: str, region: str | None) -> list[dict[str, Any]]:
    from fedkit.tracking.sagemaker import AGGREGATED, SageMakerBackend, paginate, sagemaker_name

    backend = SageMakerBackend(experiment, region)
    by_run: dict[str, dict[str, Any]] = {}
    trials = list(paginate(backend.sm.list_trials, "TrialSummaries", ExperimentName=sagemaker_name(experiment)))
    for trial in trials:
        listing = paginate(backend.sm.list_trial_components, "TrialComponentSummaries", TrialName=trial["TrialName"])
        for summary in listing:
            component = backend.sm.describe_trial_component(TrialComponentName=summary["TrialComponentName"])
            params = {k: v.get("NumberValue", v.get("StringValue")) for k, v in component.get("Parameters", {}).items()}
            run_id, silo = params.pop("fedkit_run_id", None), params.pop("fedkit_silo", None)
            if run_id is None:
                continue  # not written by fedkit
            record = by_run.setdefault(run_id, {"run_id": run_id, "status": None, "config": {}, "metrics": {}})
            last = {m["MetricName"]: m["Last"] for m in component.get("Metrics", []) if "Last" in m}
            record["metrics"][POOLED if silo == AGGREGATED else silo] = last
            if silo == AGGREGATED:
                record["status"] = component.get("Status", {}).get("PrimaryStatus", "").lower() or None
                drop = {"fedkit_experiment", "fedkit_version", "data_verified"}
                record["config"] = _typed(
                    {k: _parse(v) if isinstance(v, str) else v for k, v in params.items() if k not in drop}
                )
    return _select(by_run, runs)


def _select(by_run: dict[str, dict[str, Any]], runs: Sequence[str] | None) -> list[dict[str, Any]]:
    by_run = {run_id: _final(record) for run_id, record in by_run.items()}
    if runs is None:
        return [by_run[k] for k in sorted(by_run)]
    out = []
    for wanted in runs:
        hits = [k for k in by_run if k.startswith(wanted)]
        if len(hits) != 1:
            raise TrackerError(
                f"Run {wanted!r} matches {len(hits)} runs in the tracker; give a full run id "
                "(`fedkit.compare(source=...)` without ids lists them all)."
            )
        out.append(by_run[hits[0]])
    return out


def _same(values: list[Any]) -> bool:
    first = values[0]
    return all(
        v == first or (isinstance(v, float | int) and isinstance(first, float | int) and math.isclose(v, first))
        for v in values
    )


def frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The comparison DataFrame of run records (``run_id``, ``status``, ``config``, ``final`` per silo).

    Parameters
    ----------
    records
        Run records as the run store returns them.
    """
    import pandas as pd

    keys = list(dict.fromkeys(k for r in records for k in r["config"]))
    differing = [k for k in keys if len(records) < 2 or not _same([r["config"].get(k) for r in records])]
    silos = list(dict.fromkeys(s for r in records for s in r["final"] if s != POOLED))
    rows = []
    for r in records:
        row: dict[str, Any] = {"run_id": r["run_id"], "status": r["status"]}
        row |= {k: r["config"].get(k) for k in differing}
        for silo in [*silos, POOLED]:
            for metric in ("accuracy", "auc", "loss"):
                row[f"{silo}_{metric}"] = r["final"].get(silo, {}).get(metric)
        # FLamby's Avg over the run's own silos (runs of different splits have different silos)
        accuracies = [block.get("accuracy") for s, block in r["final"].items() if s != POOLED]
        known = [a for a in accuracies if a is not None]
        row["avg_accuracy"] = sum(known) / len(known) if known and len(known) == len(accuracies) else None
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["run_id"]).set_index("run_id")
    table = pd.DataFrame(rows).set_index("run_id")
    for k in differing:  # config values keep their types: a field that is None in another run stays 8, not 8.0
        table[k] = pd.Series([r["config"].get(k) for r in records], index=table.index, dtype=object)
    return table


def compare(
    runs: Sequence[str] | Mapping[str, Any] | None = None,
    *,
    source: str = "local",
    experiment: str = "fedkit",
    tracking_uri: str | None = None,
    region: str | None = None,
    store: LocalStore | None = None,
) -> pd.DataFrame:
    """One row per run: status, the config fields that differ between the runs, final per-silo and pooled
    accuracy / AUC / loss (``{silo}_{metric}``) and ``avg_accuracy`` (unweighted mean over silos).

    (SageMaker keeps only summary statistics: the final values are its ``Last``.)

    Parameters
    ----------
    runs
        Run ids (unique prefixes work), a filter of config values (``{"split": "flamby", "strategy": ["fedavg",
        "fedprox"]}``) or None for every run.
    source
        Where to read the runs: ``"local"``, ``"sagemaker"`` or ``"mlflow"``.
    experiment
        The tracker's experiment the runs were logged to (``sagemaker`` / ``mlflow``).
    tracking_uri
        MLflow tracking URI (``mlflow`` only; default: MLflow's own).
    region
        AWS region (``sagemaker`` only; default: boto3's).
    store
        The local run store (``local`` only; default: ``$FEDKIT_HOME/runs.sqlite``).

    Returns
    -------
    pandas.DataFrame
        One row per run.

    Raises
    ------
    TrackerError
        When ``source`` is unknown or its extra is not installed.
    """
    if source not in SOURCES:
        raise TrackerError(f"The 'source' parameter of compare must be one of {', '.join(SOURCES)}; got {source!r}.")
    if isinstance(runs, str):
        runs = [runs]
    where: Mapping[str, Any] = runs if isinstance(runs, Mapping) else {}
    ids = None if isinstance(runs, Mapping) or runs is None else list(runs)
    if source == "local":
        records = _local_records(ids, where, store or LocalStore())
    elif source == "mlflow":
        records = _mlflow_records(ids, experiment, tracking_uri)
    else:
        records = _sagemaker_records(ids, experiment, region)
    return frame([r for r in records if _matches(r["config"], where)])


def plot_curves(runs: Sequence[str], metric: str = "auc", *, store: LocalStore | None = None) -> Figure:
    """Per-round test ``metric`` of several local runs overlaid: one panel per silo (and pooled), a line per run.

    Parameters
    ----------
    runs
        Run ids (unique prefixes work) of local runs.
    metric
        ``"loss"``, ``"auc"`` or ``"accuracy"``.
    store
        The local run store (default: ``$FEDKIT_HOME/runs.sqlite``).
    """
    import pandas as pd

    from fedkit.plots import overlay_figure

    store = store or LocalStore()
    histories = {}
    for run_id in runs:
        full = store.get(run_id)["run_id"]
        histories[full] = pd.DataFrame(store.history(full))
    return overlay_figure(histories, metric)


def plot_final(runs: Sequence[str], metric: str = "accuracy", *, store: LocalStore | None = None) -> Figure:
    """Final test ``metric`` per silo (and pooled) of several local runs as grouped bars.

    Parameters
    ----------
    runs
        Run ids (unique prefixes work) of local runs.
    metric
        ``"loss"``, ``"auc"`` or ``"accuracy"``.
    store
        The local run store (default: ``$FEDKIT_HOME/runs.sqlite``).
    """
    import pandas as pd

    from fedkit.plots import final_bars_figure

    table = compare(list(runs), store=store)
    finals = {}
    for run_id, row in table.iterrows():
        silos = [c[: -len("_accuracy")] for c in table.columns if c.endswith("_accuracy") and c != "avg_accuracy"]
        finals[str(run_id)] = pd.DataFrame({metric: [row[f"{s}_{metric}"] for s in silos]}, index=silos)
    return final_bars_figure(finals, metric)
