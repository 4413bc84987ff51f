"""Run tracking: the tracker interface, the local SQLite store (always on) and remote backends
(SageMaker Experiments, MLflow) delivered through the store's outbox."""

from fedkit.tracking.base import STATUSES, Tracker, TrackerError
from fedkit.tracking.delivery import DeliveryWarning, RemoteTracker, sync
from fedkit.tracking.factory import BACKENDS, make_trackers
from fedkit.tracking.local import LocalStore

__all__ = [
    "BACKENDS",
    "STATUSES",
    "DeliveryWarning",
    "LocalStore",
    "RemoteTracker",
    "Tracker",
    "TrackerError",
    "make_trackers",
    "sync",
]
