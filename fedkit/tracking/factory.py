"""``make_trackers("local,sagemaker,mlflow", experiment=...)``: the trackers of a run, local store always first."""

from __future__ import annotations

from typing import Any

from fedkit.errors import TrackerError
from fedkit.tracking.base import Tracker
from fedkit.tracking.delivery import RemoteTracker
from fedkit.tracking.local import LocalStore
from fedkit.tracking.registry import BACKENDS, LOCAL, backend_info

DEFAULT_EXPERIMENT = "fedkit"


def parse_trackers(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Backend names from ``"local,sagemaker"`` (or a list), checked, deduplicated, ``local`` always first.

    Parameters
    ----------
    spec
        Backend names, comma-separated or a list.

    Raises
    ------
    TrackerError
        When a name is not a known backend.
    """
    names = [n.strip().lower() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise TrackerError(
            f"The 'trackers' parameter got unknown backend(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(BACKENDS)} (comma-separated, e.g. 'local,mlflow')."
        )
    return [LOCAL, *dict.fromkeys(n for n in names if n != LOCAL)]


def make_trackers(
    spec: str | list[str] | tuple[str, ...] = "local",
    *,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    region: str | None = None,
    store: LocalStore | None = None,
    **options: Any,
) -> list[Tracker]:
    """The trackers for ``fedkit.run(config, trackers=...)``: the local store, then each remote backend.

    Remote backends deliver through the local store's outbox, so a backend that fails never stops the run;
    ``fedkit runs sync`` delivers what it missed.

    Parameters
    ----------
    spec
        Backend names, comma-separated or a list (``local`` is always first).
    experiment
        The SageMaker experiment and the MLflow experiment (default ``fedkit``).
    tracking_uri
        MLflow's tracking URI (default ``$MLFLOW_TRACKING_URI``).
    region
        AWS's region (default from the environment).
    store
        The local run store (default: ``$FEDKIT_HOME/runs.sqlite``).
    **options
        Settings of the SageMaker backend (``max_attempts``, ``timeout``).

    Raises
    ------
    TrackerError
        When a backend is unknown, a setting is missing, or its extra is not installed.
    """
    store = store or LocalStore()
    settings = {"tracking_uri": tracking_uri, "region": region, **options}
    trackers: list[Tracker] = [store]
    for name in parse_trackers(spec)[1:]:
        backend = backend_info(name).load().from_settings(experiment or DEFAULT_EXPERIMENT, **settings)
        trackers.append(RemoteTracker(backend, store))
    return trackers
