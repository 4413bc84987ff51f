"""Where fedkit keeps things on disk: the data folder and the fedkit home (run store)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "FEDKIT_DATA_DIR"
HOME_ENV = "FEDKIT_HOME"


def home_dir() -> Path:
    """The fedkit home: ``$FEDKIT_HOME`` if set, else ``~/.fedkit``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".fedkit").expanduser()


def data_dir() -> Path:
    """The data folder: ``$FEDKIT_DATA_DIR`` if set, else the per-user cache ``~/.cache/fedkit/heart-disease``."""
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "fedkit" / "heart-disease"
