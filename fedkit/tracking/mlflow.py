"""MLflow: a parent run per fedkit run, a nested run per silo, parameters, metrics with step = round and the
final model as an artifact. Any tracking URI works: a local ``mlflow server``, a database, or SageMaker
managed MLflow (the tracking server ARN, through the ``sagemaker-mlflow`` plugin).

Runs are found again by their tags (``fedkit.run_id``, ``fedkit.silo``), never created twice; metric
points carry the event's fixed timestamp and step, which MLflow's SQL store keeps once however often
they are sent.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from fedkit.errors import TrackerError
from fedkit.result import POOLED
from fedkit.tracking.base import Event, metric_name

RUN_TAG = "fedkit.run_id"
SILO_TAG = "fedkit.silo"
PARENT = "__parent__"
STATUS = {"finished": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}
# MLflow's own HTTP retries default to 7 with exponential backoff (minutes); fedkit bounds them
# (unless the user set them) so a server that is down costs seconds, then the outbox takes over.
# MLflow also prints "View run ..." links to stdout, which would break `fedkit run --json`.
ENV_DEFAULTS = {
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


_SETTINGS = threading.RLock()
"""One :meth:`MlflowBackend.scoped` block at a time in the process (they change process-wide settings)."""


def _plugin_noise(record: logging.LogRecord) -> bool:
    """Drop the warning sagemaker-mlflow's header provider logs on every request to a non-ARN tracking URI
    (it splits any URI as an ARN: "list index out of range"); every other record passes."""
    return "list index out of range" not in record.getMessage()


def _ms(value: str | datetime) -> int:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return int(moment.timestamp() * 1000)


class MlflowBackend:
    """Delivers fedkit events to the MLflow experiment ``experiment`` at ``tracking_uri``.

    A SageMaker managed MLflow tracking server is addressed by its ARN
    (``arn:aws:sagemaker:REGION:ACCOUNT:mlflow-tracking-server/NAME``).

    Parameters
    ----------
    experiment
        The MLflow experiment.
    tracking_uri
        The tracking server (default ``$MLFLOW_TRACKING_URI``).
    """

    name = "mlflow"

    def __init__(self, experiment: str = "fedkit", tracking_uri: str | None = None) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise TrackerError(
                "The mlflow tracker needs mlflow; install it with `pip install 'fedkit[mlflow]'`."
            ) from exc
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise TrackerError(
                "The mlflow tracker needs a tracking URI; set MLFLOW_TRACKING_URI (e.g. http://127.0.0.1:5000 or a "
                "SageMaker MLflow tracking server ARN) or pass --tracking-uri / tracking_uri=."
            )
        if uri.startswith("arn:"):
            try:
                import sagemaker_mlflow  # noqa: F401  (registers the arn: tracking URI scheme)
            except ImportError as exc:
                raise TrackerError(
                    "A SageMaker MLflow ARN as tracking URI needs the sagemaker-mlflow plugin; install it with "
                    "`pip install 'fedkit[mlflow]'`."
                ) from exc
        self.experiment = experiment
        self.tracking_uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self._experiment_id: str | None = None
        self._runs: dict[str, dict[str, str]] = {}
        self._params_logged: set[tuple[str, str]] = set()

    @classmethod
    def from_settings(
        cls, experiment: str, *, tracking_uri: str | None = None, region: str | None = None, **options: Any
    ) -> MlflowBackend:
        """The backend of ``make_trackers``'s settings: the experiment and the tracking URI (the others are AWS's)."""
        return cls(experiment, tracking_uri)

    def target(self) -> dict[str, Any]:
        """The experiment and tracking URI, enough to rebuild this backend for ``fedkit runs sync``."""
        return {"experiment": self.experiment, "tracking_uri": self.tracking_uri}

    @contextmanager
    def scoped(self) -> Iterator[None]:
        """MLflow's process-wide settings this backend needs, for the duration of a ``with`` block, then put back.

        ``ENV_DEFAULTS`` (unless the user set them), the global tracking URI for an ARN (the
        sagemaker-mlflow plugin reads it for its routing header) and the filter of the plugin's noise
        are in force only inside the block, one block at a time in the process; constructing a
        backend changes nothing.
        """
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        logger = logging.getLogger("mlflow.tracking.request_header.registry")
        with _SETTINGS:
            saved = {key: os.environ.get(key) for key in (*ENV_DEFAULTS, "MLFLOW_TRACKING_URI")}
            for key, value in ENV_DEFAULTS.items():
                os.environ.setdefault(key, value)
            logger.addFilter(_plugin_noise)
            try:
                with _use_tracking_uri(self.tracking_uri) if self.tracking_uri.startswith("arn:") else nullcontext():
                    yield
            finally:
                logger.removeFilter(_plugin_noise)
                for key, value in saved.items():  # _use_tracking_uri also unsets MLFLOW_TRACKING_URI on the way out
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    # -- idempotent creation ---------------------------------------------------------------------
    def _experiment(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                try:
                    self._experiment_id = self.client.create_experiment(self.experiment)
                except Exception:
                    found = self.client.get_experiment_by_name(self.experiment)  # created meanwhile
                    if found is None:
                        raise
                    self._experiment_id = found.experiment_id
            else:
                self._experiment_id = found.experiment_id
        return self._experiment_id

    def _known(self, run_id: str) -> dict[str, str]:
        """MLflow run ids of this fedkit run, by silo (``__parent__`` for the parent), found by tag."""
        if run_id not in self._runs:
            found = self.client.search_runs(
                [self._experiment()], filter_string=f"tags.`{RUN_TAG}` = '{run_id}'", max_results=1000
            )
            self._runs[run_id] = {r.data.tags.get(SILO_TAG, PARENT): r.info.run_id for r in found}
        return self._runs[run_id]

    def _ensure_run(self, event: Event, silo: str) -> str:
        known = self._known(event.run_id)
        if silo not in known:
            known[silo] = self._create_run(event, silo)
        if (event.run_id, silo) not in self._params_logged:  # identical params may be logged again
            self._log_params(event, silo, known[silo])
            self._params_logged.add((event.run_id, silo))
        return known[silo]

    def _create_run(self, event: Event, silo: str) -> str:

        tags = {RUN_TAG: event.run_id, "fedkit.version": event.run["fedkit_version"]}
        name = f"fedkit-{event.run_id}"
        if silo != PARENT:
            name = silo
            tags |= {SILO_TAG: silo, "mlflow.parentRunId": self._ensure_run(event, PARENT)}
        run = self.client.create_run(
            self._experiment(), start_time=_ms(event.run["created_at"]), tags=tags, run_name=name
        )
        return str(run.info.run_id)

    def _log_params(self, event: Event, silo: str, mlflow_run: str) -> None:
        from mlflow.entities import Param

        values: dict[str, Any] = dict(event.run["config"])
        if silo == PARENT:
            values["data_verified"] = event.run["data"].get("verified")
        else:
            values["silo"] = silo
        params = [Param(k, str(v)) for k, v in values.items() if v is not None]
        for start in range(0, len(params), 100):  # log_batch takes at most 100 params
            self.client.log_batch(mlflow_run, params=params[start : start + 100])

    # -- events ------------------------------------------------------------------------------------
    def deliver(self, event: Event) -> None:
        """Create (or find) the parent and silo runs; log a round's metrics; the model and end status."""
        with self.scoped():
            self._deliver(event)

    def _deliver(self, event: Event) -> None:
        from mlflow.entities import Metric

        if event.kind == "start":
            self._ensure_run(event, PARENT)
        elif event.kind == "round":
            by_run: dict[str, list[Metric]] = {}
            for row in event.rows:
                if row["value"] is None or not math.isfinite(row["value"]):
                    continue  # an undefined AUC is not a point
                silo = PARENT if row["silo"] == POOLED else row["silo"]
                metric = Metric(metric_name(row), float(row["value"]), event.timestamp_ms, int(row["round"]))
                by_run.setdefault(self._ensure_run(event, silo), []).append(metric)
            for mlflow_run, metrics in by_run.items():
                for start in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics
                    self.client.log_batch(mlflow_run, metrics=metrics[start : start + 1000])
        else:
            self._end(event)

    def _end(self, event: Event) -> None:
        run = event.run
        parent = self._ensure_run(event, PARENT)
        with tempfile.TemporaryDirectory(prefix="fedkit-mlflow-") as tmp:
            folder = Path(tmp) / "model"
            folder.mkdir()
            if run["params"] is not None:
                np.save(folder / "params.npy", np.asarray(run["params"], dtype=np.float32))
            (folder / "config.json").write_text(json.dumps(run["config"], indent=2))
            if run["summary"] is not None:
                summary = {k: v for k, v in run["summary"].items() if k != "history"}
                (folder / "summary.json").write_text(json.dumps(summary, indent=2))
            self.client.log_artifacts(parent, str(folder), artifact_path="model")
        status = STATUS.get(run["status"], "FAILED")
        end = _ms(run["finished_at"]) if run["finished_at"] else event.timestamp_ms
        for mlflow_run in self._known(event.run_id).values():
            self.client.set_terminated(mlflow_run, status=status, end_time=end)
