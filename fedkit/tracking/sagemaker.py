"""SageMaker Experiments through boto3: an experiment, a trial per fedkit run, a trial component per silo model
and one for the aggregated model, the run configuration as parameters and per-round metrics with step = round.

Why boto3 and not the ``sagemaker`` SDK's ``Run`` (docs/tracking.md has the details): not installability
(sagemaker 2.254-2.257 install beside numpy 2.4 / pandas 3.1 and conflict only with this project's
``packaging`` pin; 3.27 resolves with the constraints, pulling about 110 more packages) nor zeros
(it keeps a 0 as 0), but how ``Run`` records: one trial component per ``Run`` object, a forced trial
name, metric timestamps in whole seconds, and none older than two weeks (a late ``fedkit runs sync``
would fail). The same two APIs (``sagemaker`` and ``sagemaker-metrics``) through boto3 give
deterministic names, millisecond timestamps and idempotent re-delivery.

Names follow the API's rule ``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,119}``: anything else becomes ``-``,
names over 120 characters are cut and suffixed with a hash; the original names are kept as
parameters (``fedkit_run_id``, ``fedkit_silo``, ``fedkit_experiment``). Throttling and transient
errors are retried by botocore's ``standard`` mode (exponential backoff with jitter), bounded by
``max_attempts`` and the timeouts.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from fedkit.errors import TrackerError
from fedkit.result import POOLED
from fedkit.tracking.base import Event, metric_name

MAX_NAME = 120
METRICS_PER_CALL = 10
MAX_STRING_PARAMETER = 2500
MAX_PARAMETER_NAME = 256
AGGREGATED = "aggregated"
PAGE_SIZE = 100
"""Items per page of a list call (the API's maximum)."""
MAX_PAGES = 1000
"""Pages a list call follows at most (a bound, not a limit met in practice: 100,000 items)."""
STATUS = {"finished": "Completed", "failed": "Failed", "stopped": "Stopped"}
_INVALID = re.compile(r"[^a-zA-Z0-9]+")


def sagemaker_name(text: str) -> str:
    """``text`` as a valid SageMaker Experiments name (letters, digits, single inner hyphens, ≤ 120 chars).

    Parameters
    ----------
    text
        Any text.
    """
    name = _INVALID.sub("-", text).strip("-") or "fedkit"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        name = name[: MAX_NAME - 9].rstrip("-") + "-" + digest
    return name


def trial_name(run_id: str) -> str:
    """The trial of a fedkit run.

    Parameters
    ----------
    run_id
        The run's id.
    """
    return sagemaker_name(f"fedkit-{run_id}")


def component_name(run_id: str, silo: str) -> str:
    """The trial component of one silo's model (``silo = "aggregated"`` for the aggregated model).

    Parameters
    ----------
    run_id
        The run's id.
    silo
        The silo's name (``"aggregated"`` for the aggregated model).
    """
    return sagemaker_name(f"fedkit-{run_id}-{silo}")


def parameter_value(value: Any) -> dict[str, Any] | None:
    """A trial component parameter (numbers as NumberValue, 0 included; text ≤ 2500 chars); None is left out.

    Parameters
    ----------
    value
        The parameter's value.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return {"StringValue": str(value).lower()}
    if isinstance(value, int | float):
        return {"NumberValue": value} if math.isfinite(value) else {"StringValue": str(value)}
    return {"StringValue": str(value)[:MAX_STRING_PARAMETER]}


def parameters(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Trial component parameters from a mapping, names cut to the API's 256 characters.

    Parameters
    ----------
    values
        Parameter values by name.
    """
    out = {}
    for key, value in values.items():
        converted = parameter_value(value)
        if converted is not None:
            out[str(key)[:MAX_PARAMETER_NAME]] = converted
    return out


def paginate(call: Callable[..., dict[str, Any]], key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item under ``key`` of a paginated SageMaker list call, following ``NextToken`` (at most
    :data:`MAX_PAGES` pages of :data:`PAGE_SIZE`).

    Parameters
    ----------
    call
        A client's list method, e.g. ``sm.list_trials``.
    key
        Where the page holds its items, e.g. ``"TrialSummaries"``.
    **kwargs
        The call's own arguments.
    """
    kwargs = {**kwargs, "MaxResults": PAGE_SIZE}
    for _ in range(MAX_PAGES):
        page = call(**kwargs)
        yield from page.get(key, [])
        if not page.get("NextToken"):
            return
        kwargs["NextToken"] = page["NextToken"]


def _error(exc: Exception) -> tuple[str, str]:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    return str(error.get("Code", "")), str(error.get("Message", ""))


def _not_found(exc: Exception) -> bool:
    code, message = _error(exc)
    return code in ("ResourceNotFound", "ResourceNotFoundException") or (
        code in ("ValidationException", "ValidationError")
        and any(s in message for s in ("Could not find", "does not exist", "not found"))
    )


def _exists(exc: Exception) -> bool:
    code, message = _error(exc)
    return code in ("ValidationException", "ResourceInUse", "ConflictException") and "already exist" in message


class SageMakerBackend:
    """Delivers fedkit events to SageMaker Experiments in ``region`` (credentials from the usual AWS chain).

    ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_SAGEMAKER``) points it elsewhere, e.g. at moto.

    Parameters
    ----------
    experiment
        The SageMaker experiment.
    region
        The AWS region (default: the environment's).
    max_attempts
        Attempts per API call (botocore's standard retry mode).
    timeout
        Read timeout of each call, in seconds (connect: at most 5 s).
    clients
        Ready (sagemaker, sagemaker-metrics) clients to use, e.g. with a botocore Stubber.
    """

    name = "sagemaker"

    def __init__(
        self,
        experiment: str = "fedkit",
        region: str | None = None,
        *,
        max_attempts: int = 3,
        timeout: float = 10.0,
        clients: tuple[Any, Any] | None = None,
    ) -> None:
        self.experiment = experiment
        self.experiment_name = sagemaker_name(experiment)
        self.max_attempts = max_attempts
        self.timeout = timeout
        if clients is not None:
            self.sm, self.metrics = clients
            self.region = region or self.sm.meta.region_name
        else:
            self.sm, self.metrics, self.region = self._clients(region)
        self._components: dict[str, set[str]] = {}

    @classmethod
    def from_settings(
        cls, experiment: str, *, tracking_uri: str | None = None, region: str | None = None, **options: Any
    ) -> SageMakerBackend:
        """The backend of ``make_trackers``'s settings: the experiment, the AWS region, ``max_attempts``/``timeout``."""
        return cls(experiment, region, **options)

    def _clients(self, region: str | None) -> tuple[Any, Any, str]:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise TrackerError(
                "The sagemaker tracker needs boto3; install it with `pip install 'fedkit[aws]'`."
            ) from exc
        session = boto3.session.Session(region_name=region)
        if not session.region_name:
            raise TrackerError(
                "The sagemaker tracker needs an AWS region: `export AWS_DEFAULT_REGION=eu-west-1` or a region in the "
                "profile (boto3 reads AWS_DEFAULT_REGION; it ignores AWS_REGION)."
            )
        config = Config(
            retries={"mode": "standard", "max_attempts": self.max_attempts},
            connect_timeout=min(self.timeout, 5.0),
            read_timeout=self.timeout,
        )
        return (
            session.client("sagemaker", config=config),
            session.client("sagemaker-metrics", config=config),
            str(session.region_name),
        )

    def target(self) -> dict[str, Any]:
        """The experiment and region, enough to rebuild this backend for ``fedkit runs sync``."""
        return {"experiment": self.experiment, "region": self.region}

    # -- idempotent creation ---------------------------------------------------------------------
    def _ensure_experiment(self) -> None:
        try:
            self.sm.create_experiment(
                ExperimentName=self.experiment_name, Description=f"fedkit runs: {self.experiment}"[:3072]
            )
        except Exception as exc:
            if not _exists(exc):
                raise

    def _ensure_trial(self, run_id: str) -> None:
        name = trial_name(run_id)
        try:
            self.sm.describe_trial(TrialName=name)
        except Exception as exc:
            if not _not_found(exc):
                raise
            try:
                self.sm.create_trial(TrialName=name, ExperimentName=self.experiment_name)
            except Exception as create_exc:
                if not _exists(create_exc):
                    raise

    def _associated(self, run_id: str) -> set[str]:
        """Names of the trial's components (listed once per backend object, then kept up to date)."""
        if run_id not in self._components:
            listing = paginate(self.sm.list_trial_components, "TrialComponentSummaries", TrialName=trial_name(run_id))
            self._components[run_id] = {c["TrialComponentName"] for c in listing}
        return self._components[run_id]

    def _ensure_component(self, event: Event, silo: str) -> str:
        name = component_name(event.run_id, silo)
        associated = self._associated(event.run_id)
        if name in associated:
            return name
        try:
            self.sm.describe_trial_component(TrialComponentName=name)
        except Exception as exc:
            if not _not_found(exc):
                raise
            config = event.run["config"]
            meta = {
                "fedkit_run_id": event.run_id,
                "fedkit_silo": silo,
                "fedkit_experiment": self.experiment,
                "fedkit_version": event.run["fedkit_version"],
                "data_verified": event.run["data"].get("verified"),
            }
            try:
                self.sm.create_trial_component(
                    TrialComponentName=name,
                    Status={"PrimaryStatus": "InProgress"},
                    StartTime=datetime.fromisoformat(event.run["created_at"]),
                    Parameters=parameters({**config, **meta}),
                )
            except Exception as create_exc:
                if not _exists(create_exc):
                    raise
        self.sm.associate_trial_component(TrialComponentName=name, TrialName=trial_name(event.run_id))
        associated.add(name)
        return name

    # -- events ------------------------------------------------------------------------------------
    def deliver(self, event: Event) -> None:
        """Create (or reuse) the experiment, trial and components; put a round's metrics; set the end status."""
        if event.kind == "start":
            self._ensure_experiment()
            self._ensure_trial(event.run_id)
            self._ensure_component(event, AGGREGATED)
        elif event.kind == "round":
            by_silo: dict[str, list[dict[str, Any]]] = {}
            for row in event.rows:
                by_silo.setdefault(AGGREGATED if row["silo"] == POOLED else row["silo"], []).append(row)
            for silo, rows in by_silo.items():
                self._put_metrics(self._ensure_component(event, silo), rows, event)
        else:
            run = event.run
            status = {"PrimaryStatus": STATUS.get(run["status"], "Failed")}
            if run["error"]:
                status["Message"] = run["error"].strip().splitlines()[-1][:3072]
            end = datetime.fromisoformat(run["finished_at"]) if run["finished_at"] else event.created_at
            for name in sorted(self._associated(event.run_id)):
                self.sm.update_trial_component(TrialComponentName=name, Status=status, EndTime=end)

    def _put_metrics(self, component: str, rows: list[dict[str, Any]], event: Event) -> None:
        data = [
            {"MetricName": metric_name(r), "Timestamp": event.created_at, "Step": int(r["round"]), "Value": r["value"]}
            for r in rows
            if r["value"] is not None and math.isfinite(r["value"])  # an undefined AUC is not a point
        ]
        for chunk in _chunks(data, METRICS_PER_CALL):
            response = self.metrics.batch_put_metrics(TrialComponentName=component, MetricData=chunk)
            if response.get("Errors"):
                raise RuntimeError(f"BatchPutMetrics rejected points of {component}: {response['Errors'][:3]}")


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
