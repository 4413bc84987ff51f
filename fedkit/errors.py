"""The exceptions fedkit raises (one root, subclasses of the matching builtins) and the one warning it emits."""

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


class TrackerError(FedkitError, ValueError):
    """A tracker cannot be set up as asked (unknown backend, missing setting or extra); the message says the fix."""


class RemoteRunError(FedkitError, RuntimeError):
    """A remote run cannot go on (too few sites, a site failed); the message says which and what to do."""


class PocError(FedkitError, RuntimeError):
    """The local federation could not start or stop; the message says which process and where its log is."""


class ReportError(FedkitError, RuntimeError):
    """A report notebook could not be executed or exported; the message names the cell and its error."""


class DeliveryWarning(UserWarning):
    """A remote tracker could not be reached; its events are kept in the local store for ``fedkit runs sync``.

    A warning, not an error: training goes on, and ``fedkit runs sync`` delivers the events later.
    """
