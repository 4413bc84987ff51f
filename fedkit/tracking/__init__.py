"""Run tracking: the tracker interface, the local SQLite store (always on) and remote backends
(SageMaker Experiments, MLflow) delivered through the store's outbox.

Names are imported on first use, so reading the backend registry (e.g. to build the CLI's parser)
loads neither numpy nor the store.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BACKENDS": "fedkit.tracking.registry",
    "available_trackers": "fedkit.tracking.registry",
    "STATUSES": "fedkit.tracking.base",
    "Tracker": "fedkit.tracking.base",
    "DeliveryWarning": "fedkit.errors",
    "TrackerError": "fedkit.errors",
    "LocalStore": "fedkit.tracking.local",
    "RemoteTracker": "fedkit.tracking.delivery",
    "sync": "fedkit.tracking.delivery",
    "make_trackers": "fedkit.tracking.factory",
}

__all__ = [
    "BACKENDS",
    "STATUSES",
    "DeliveryWarning",
    "LocalStore",
    "RemoteTracker",
    "Tracker",
    "TrackerError",
    "available_trackers",
    "make_trackers",
    "sync",
]

if TYPE_CHECKING:
    from fedkit.errors import DeliveryWarning, TrackerError
    from fedkit.tracking.base import STATUSES, Tracker
    from fedkit.tracking.delivery import RemoteTracker, sync
    from fedkit.tracking.factory import make_trackers
    from fedkit.tracking.local import LocalStore
    from fedkit.tracking.registry import BACKENDS, available_trackers


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fedkit.tracking' has no attribute {name!r}")
