"""The UCI Heart Disease files: pinned checksums, verified download, strict parsing.

Source: UCI Machine Learning Repository, "Heart Disease" (Janosi, Steinbrunn, Pfisterer,
Detrano, 1988), DOI 10.24432/C52P4X, CC BY 4.0.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedkit.errors import ChecksumError, DataError, MissingDataError

HOSPITALS: tuple[str, ...] = ("cleveland", "hungarian", "switzerland", "va")
COLUMNS: tuple[str, ...] = (
    "age",
    "sex",
    "cp",
    "trestbps",
    "chol",
    "fbs",
    "restecg",
    "thalach",
    "exang",
    "oldpeak",
    "slope",
    "ca",
    "thal",
    "num",
)


@dataclass(frozen=True)
class Pin:
    """The expected sha256, size and row count of one file.

    Parameters
    ----------
    sha256
        The file's hex sha256.
    size
        Its size in bytes.
    rows
        Its data rows.
    """

    sha256: str
    size: int
    rows: int


PINS: dict[str, Pin] = {
    "processed.cleveland.data": Pin("a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8", 18461, 303),
    "processed.hungarian.data": Pin("d1ad108f785768cd3d7e82dc522e6f5a61eea93cccfb3a46ee8076f73fc3d796", 10263, 294),
    "processed.switzerland.data": Pin("834a405ccf5b66ab4056bb77794adc8df0b7125186454c0a1d002d33c6c3b314", 4109, 123),
    "processed.va.data": Pin("e7c93d8d0d2acdadfa4c5e8de768e2191e7f618b952e29623f1f0d5949ff6b8f", 6737, 200),
}

ZIP_URL = "https://archive.ics.uci.edu/static/public/45/heart+disease.zip"
LEGACY_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/heart-disease/{name}"
DOWNLOAD_TIMEOUT_S = 30.0
MISSING_TOKEN = "?"  # noqa: S105 (the UCI files' mark for a missing value)


def file_name(hospital: str) -> str:
    """The processed file name of a hospital, e.g. ``processed.va.data``.

    Parameters
    ----------
    hospital
        The hospital's name.
    """
    return f"processed.{hospital}.data"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of some bytes.

    Parameters
    ----------
    data
        The bytes.
    """
    return hashlib.sha256(data).hexdigest()


def check_bytes(name: str, data: bytes, where: str) -> None:
    """Raise :class:`ChecksumError` unless ``data`` is exactly the pinned file ``name``.

    Parameters
    ----------
    name
        The pinned file's name.
    data
        Its bytes.
    where
        Where they come from, for the message.

    Raises
    ------
    ChecksumError
        When the bytes are not the pinned file (the message says whether it is truncated or longer).
    """
    pin = PINS[name]
    found = sha256_bytes(data)
    if found == pin.sha256:
        return
    if len(data) < pin.size:
        problem = f"it is truncated: {len(data)} bytes where the pinned file has {pin.size}"
    elif len(data) > pin.size:
        problem = f"it is {len(data)} bytes where the pinned file has {pin.size} (extra content)"
    else:
        problem = "its content differs from the pinned file (same size, different bytes)"
    raise ChecksumError(
        f"{where}: checksum mismatch, {problem}; expected sha256 {pin.sha256}, found {found}. "
        "Delete it to download a verified copy, or pass verify=False (CLI: --no-verify) to use it "
        "anyway; the run will record that the data was not verified."
    )


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fetch(url: str, timeout: float) -> bytes:
    import urllib.request  # here: http.client & co. cost every import of fedkit 40 ms

    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (https URLs from constants)
        return response.read()


def download(
    names: Sequence[str],
    target: Path,
    *,
    zip_url: str = ZIP_URL,
    legacy_url: str = LEGACY_URL,
    fetch: Callable[[str, float], bytes] = _fetch,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> list[Path]:
    """Download pinned files into ``target``: the UCI zip first, the per-file legacy URL as fallback.

    Every file is verified against its pin before it is written (temp file + rename), so a failed or
    interrupted download never leaves a half file.

    Parameters
    ----------
    names
        The files to fetch.
    target
        The folder to write them to.
    zip_url
        The UCI archive holding every file.
    legacy_url
        The per-file fallback (``{name}`` is the file name).
    fetch
        Gets a URL's bytes within a timeout (replaced in tests).
    timeout
        Seconds per request.

    Raises
    ------
    MissingDataError
        Listing what could not be fetched, where to put it and where to get it.
    """
    import zipfile

    wanted = list(names)
    written: list[Path] = []
    errors: list[str] = []
    try:
        archive = zipfile.ZipFile(io.BytesIO(fetch(zip_url, timeout)))
        members = {Path(m).name: m for m in archive.namelist()}
        for name in list(wanted):
            if name in members:
                data = archive.read(members[name])
                check_bytes(name, data, f"{name} in {zip_url}")
                _atomic_write(target / name, data)
                written.append(target / name)
                wanted.remove(name)
    except (OSError, zipfile.BadZipFile, ChecksumError) as exc:  # URLError is an OSError
        errors.append(f"{zip_url}: {exc}")
    for name in list(wanted):
        url = legacy_url.format(name=name)
        try:
            data = fetch(url, timeout)
            check_bytes(name, data, url)
        except (OSError, ChecksumError) as exc:
            errors.append(f"{url}: {exc}")
            continue
        _atomic_write(target / name, data)
        written.append(target / name)
        wanted.remove(name)
    if wanted:
        raise MissingDataError(_missing_message(wanted, target, errors), directory=str(target))
    return written


def _missing_message(missing: Sequence[str], target: Path, errors: Sequence[str]) -> str:
    tried = "".join(f"\n  - {e}" for e in errors)
    return (
        f"Missing UCI Heart Disease file(s): {', '.join(missing)}. "
        f"Put them in {target} (or point FEDKIT_DATA_DIR at a folder that has them). "
        f"Get them from {ZIP_URL} (the zip holds them) or "
        f"{LEGACY_URL.format(name='processed.<center>.data')}; fedkit checks their sha256."
        + (f"\nDownload attempts failed:{tried}" if tried else "")
    )


def read_files(
    directory: Path, *, verify: bool = True, download_missing: bool = True, **download_kwargs: object
) -> dict[str, bytes]:
    """The bytes of the four processed files in ``directory``, by hospital, each read from disk once.

    Missing files are downloaded (verified) unless ``download_missing`` is false. With
    ``verify=True`` every file must match its pin; the caller hashes and parses these same bytes.

    Parameters
    ----------
    directory
        The data folder.
    verify
        Every file must match its pin.
    download_missing
        Download the files that are missing.
    **download_kwargs
        Passed to :func:`download`.
    """
    names = [file_name(h) for h in HOSPITALS]
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        if not download_missing:
            raise MissingDataError(_missing_message(missing, directory, []), directory=str(directory))
        download(missing, directory, **download_kwargs)  # type: ignore[arg-type]
    files = {h: (directory / file_name(h)).read_bytes() for h in HOSPITALS}
    if verify:
        for h, data in files.items():
            check_bytes(file_name(h), data, str(directory / file_name(h)))
    return files


def ensure_files(
    directory: Path, *, verify: bool = True, download_missing: bool = True, **download_kwargs: object
) -> dict[str, str]:
    """Make sure the four processed files are in ``directory``; return ``{file name: sha256}``.

    Missing files are downloaded (verified) unless ``download_missing`` is false.

    Parameters
    ----------
    directory
        The data folder.
    verify
        Every file on disk must match its pin.
    download_missing
        Download the files that are missing.
    **download_kwargs
        Passed to :func:`download`.

    Raises
    ------
    MissingDataError
        When files are missing and cannot be downloaded.
    ChecksumError
        When a file does not match its pin.
    """
    files = read_files(directory, verify=verify, download_missing=download_missing, **download_kwargs)
    return {file_name(h): sha256_bytes(data) for h, data in files.items()}


def pinned(name: str, sha256: str | None) -> bool:
    """Whether ``sha256`` is the pin of the UCI file called ``name`` (a site's own file may be a UCI file).

    Parameters
    ----------
    name
        The UCI file's name (``processed.<hospital>.data``).
    sha256
        The sha256 of a file's bytes (None for a data frame).
    """
    pin = PINS.get(name)
    return pin is not None and pin.sha256 == sha256


def parse(data: bytes, where: str) -> np.ndarray:
    """Parse one processed file into a float array of shape (rows, 14), NaN where the file has '?'.

    Parameters
    ----------
    data
        The file's bytes.
    where
        The file's name, for messages.

    Raises
    ------
    DataError
        Naming the file and line for a row with the wrong number of fields or a token that is neither a number nor
        '?'.
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not a text file (byte {exc.start} is not ASCII).") from exc
    rows: list[list[float]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        if len(fields) != len(COLUMNS):
            raise DataError(
                f"{where}, line {line_no}: {len(fields)} fields where {len(COLUMNS)} are expected "
                f"({', '.join(COLUMNS)}); the line reads {line.strip()[:80]!r}."
            )
        row: list[float] = []
        for column, raw in zip(COLUMNS, fields, strict=True):
            token = raw.strip()
            if token == MISSING_TOKEN:
                row.append(float("nan"))
                continue
            try:
                row.append(float(token))
            except ValueError:
                raise DataError(
                    f"{where}, line {line_no}, column {column!r}: {token!r} is not a number; "
                    "only numbers and '?' (missing) are allowed."
                ) from None
        rows.append(row)
    if not rows:
        raise DataError(f"{where}: the file has no rows.")
    return np.asarray(rows, dtype=np.float64)


def read_hospital(directory: Path, hospital: str) -> np.ndarray:
    """Parse one hospital's processed file from ``directory``.

    Parameters
    ----------
    directory
        The data folder.
    hospital
        The hospital's name.
    """
    path = directory / file_name(hospital)
    return parse(path.read_bytes(), str(path))
