"""Every tracker backend fedkit knows, by name: its label, its class (imported on first use) and its client library.

The one list of backends: :func:`~fedkit.tracking.factory.make_trackers` builds trackers from it,
:func:`~fedkit.tracking.delivery.sync` rebuilds a backend from the name recorded with its events,
and the CLI, the widgets and :func:`fedkit.compare` offer its names. It sits below the outbox and
the factory, which both read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from importlib.util import find_spec
from typing import Any

from fedkit.errors import TrackerError


@dataclass(frozen=True)
class BackendInfo:
    """One backend: how it is shown, where its class is (``module:Class``), which client library it needs.

    Parameters
    ----------
    label
        How the backend is shown.
    path
        Where its class is (``module:Class``).
    requires
        The client library it needs.
    """

    label: str
    path: str
    requires: str

    def load(self) -> Any:
        """The backend's class (its module is imported now)."""
        module, name = self.path.split(":")
        return getattr(import_module(module), name)

    def installed(self) -> bool:
        """Whether this installation can record to it: its module and its client library are there."""
        return find_spec(self.path.split(":")[0]) is not None and find_spec(self.requires) is not None


LOCAL = "local"
BACKENDS: dict[str, BackendInfo] = {
    LOCAL: BackendInfo("local run store", "fedkit.tracking.local:LocalStore", "sqlite3"),
    "sagemaker": BackendInfo("SageMaker Experiments", "fedkit.tracking.sagemaker:SageMakerBackend", "boto3"),
    "mlflow": BackendInfo("MLflow", "fedkit.tracking.mlflow:MlflowBackend", "mlflow"),
}
"""Backend name -> :class:`BackendInfo`; the local store is always first (and always on)."""


def backend_info(name: str) -> BackendInfo:
    """The registry entry of backend ``name``, with an error listing the known ones.

    Parameters
    ----------
    name
        The backend's registry name.

    Raises
    ------
    TrackerError
        When there is no backend ``name``.
    """
    if name not in BACKENDS:
        raise TrackerError(f"Unknown tracker backend {name!r}; this fedkit knows {', '.join(BACKENDS)}.")
    return BACKENDS[name]


def available_trackers() -> dict[str, bool]:
    """Each backend name and whether this installation can record to it (its client library is installed)."""
    return {name: info.installed() for name, info in BACKENDS.items()}
