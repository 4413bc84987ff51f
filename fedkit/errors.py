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
    """Data files are not on disk and could not be downloaded.

    In a notebook (IPython) the error shows as one line saying where they were expected and how to
    point fedkit at them, instead of a traceback.

    Parameters
    ----------
    message
        The full message: the missing files, where to put them, where to get them, what was tried.
    directory
        Where they were expected.
    """

    def __init__(self, message: str, *, directory: str | None = None) -> None:
        super().__init__(message)
        self.directory = directory

    def _render_traceback_(self) -> list[str]:
        """IPython's hook: the lines a notebook shows for this error (one, no traceback)."""
        where = f"in {self.directory}" if self.directory else "where fedkit looked"
        return [
            f"MissingDataError: the UCI Heart Disease files are not {where} and could not be downloaded: "
            "set data_dir (or FEDKIT_DATA_DIR) to their folder."
        ]


class ChecksumError(DataError):
    """A data file's sha256 differs from the pinned one."""


class SchemaError(ConfigError):
    """A federation's declared schema is malformed; the message names the field and the fix."""


class SiteDataError(DataError):
    """A site's data breaks the federation's schema; the message names the file, the row and the column.

    Parameters
    ----------
    message
        The sentence shown to the user.
    source
        The file (or data frame) name.
    line
        The 1-based line of the file (row of a frame), None when the problem is not tied to one.
    column
        The schema column, None when the problem is not tied to one.
    """

    def __init__(self, message: str, *, source: str, line: int | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.line = line
        self.column = column


class RunNotFoundError(FedkitError, LookupError):
    """No run with the given id is in the run store."""


class TrackerError(FedkitError, ValueError):
    """A tracker cannot be set up as asked (unknown backend, missing setting or extra); the message says the fix."""


class RemoteRunError(FedkitError, RuntimeError):
    """A remote run cannot go on (too few sites, a site failed); the message says which and what to do."""


class RoundFailedError(FedkitError, RuntimeError):
    """A round cannot be aggregated: too few valid updates, or the global model diverged.

    ``run_id`` is the run it ended (set by the round loop on the way out).

    Parameters
    ----------
    message
        The sentence shown to the user: the round, the silos, the likely cause and the fix.
    server_round
        The round that failed.
    silos
        The silos whose updates were rejected or missing (empty when the aggregate itself diverged).
    """

    def __init__(self, message: str, *, server_round: int, silos: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.server_round = server_round
        self.silos = silos
        self.run_id: str | None = None


class ResumeError(FedkitError, ValueError):
    """A run cannot be resumed (finished, still running, or no checkpoint); the message says why and what to do."""


class AuditError(FedkitError, ValueError):
    """A run's audit log does not verify; the message names the first edited, removed or reordered record."""


class PocError(FedkitError, RuntimeError):
    """The local federation could not start or stop; the message says which process and where its log is."""


class ReportError(FedkitError, RuntimeError):
    """A report notebook could not be executed or exported; the message names the cell and its error."""


class DeliveryWarning(UserWarning):
    """A remote tracker could not be reached; its events are kept in the local store for ``fedkit runs sync``.

    A warning, not an error: training goes on, and ``fedkit runs sync`` delivers the events later.
    """


class SecAggError(FedkitError, ValueError):
    """A secure-aggregation round cannot go on; the message names the round, the step and the site(s)."""


class SecAggDropoutError(SecAggError):
    """Fewer sites than the threshold t answered a step: the round's sum cannot be unmasked (retry, or lower t)."""


class SecAggAuthenticationError(SecAggError):
    """A signature, certificate or encrypted share failed its check: forged, altered or misrouted on the way."""


class SecAggReplayError(SecAggError):
    """A message of another run or round, a second one of the same step and sender, or one out of step."""


class SecAggUnmaskRequestError(SecAggError):
    """The server asked a site for both secrets of one peer (self-mask seed and mask key); the site refuses."""


class SecAggRangeError(SecAggError):
    """An input is not finite or too large for the fixed-point ring: the masked sum could wrap around 2^64."""
