"""Run tracking: the tracker interface and its backends (the local SQLite store by default)."""

from fedkit.tracking.base import STATUSES, Tracker
from fedkit.tracking.local import LocalStore

__all__ = ["STATUSES", "LocalStore", "Tracker"]
