"""The exceptions fedkit raises: one root, subclasses of the matching builtins."""

from __future__ import annotations


class FedkitError(Exception):
    """Root of every error fedkit raises on purpose."""


class ConfigError(FedkitError, ValueError):
    """A parameter has a value that is not allowed; the message names it and what is allowed."""


class ConfigTypeError(FedkitError, TypeError):
    """A parameter has the wrong type; the message names it and the expected type."""


class DataError(FedkitError, ValueError):
    """A data file is missing, corrupted or malformed; the message names the file and the problem."""


class MissingDataError(DataError, FileNotFoundError):
    """Data files are not on disk and could not be downloaded."""


class ChecksumError(DataError):
    """A data file's sha256 differs from the pinned one."""


class RunNotFoundError(FedkitError, LookupError):
    """No run with the given id is in the run store."""
