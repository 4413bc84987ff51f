"""Optional dependencies, imported on first use; when one is missing the error names the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from fedkit.errors import ConfigError


def import_torch(purpose: str) -> ModuleType:
    """``torch``, or a :class:`~fedkit.errors.ConfigError` saying that ``purpose`` needs fedkit's ``torch`` extra."""
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise ConfigError(
            f"{purpose} needs PyTorch, which is not installed here: install fedkit's 'torch' extra "
            "(`pip install -e '.[torch]'` in the clone, after torch's CPU build on Linux; `make setup` does both), "
            "or use backend='vectorized' with the built-in models."
        ) from exc
