"""Run tracking: the tracker interface, the local SQLite store (always on) and remote backends
(SageMaker Experiments, MLflow) delivered through the store's outbox."""

from fedkit.errors import DeliveryWarning, TrackerError
from fedkit.tracking.base import STATUSES, Tracker
from fedkit.tracking.delivery import RemoteTracker, sync
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
