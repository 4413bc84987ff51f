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


def import_opacus(purpose: str) -> ModuleType:
    """``opacus``, or a :class:`~fedkit.errors.ConfigError` saying that ``purpose`` needs fedkit's ``dp`` extra.

    Parameters
    ----------
    purpose
        What needs Opacus, for the message.
    """
    try:
        return importlib.import_module("opacus")
    except ImportError as exc:
        raise ConfigError(
            f"{purpose} needs Opacus, which is not installed here: install fedkit's 'dp' extra "
            "(`pip install -e '.[dp]'`), or use backend='vectorized' with the built-in models (DP-SGD in numpy)."
        ) from exc
