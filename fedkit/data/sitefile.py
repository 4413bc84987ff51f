"""One site's own data, read and checked against the federation's schema before the site joins.

A site reads its file once: the bytes are hashed and parsed from memory, so the sha256 it
reports is that of the bytes it parsed. Two formats, told apart by the first line:

- the UCI ``processed.<center>.data`` format: no header, the fields in the schema's ``columns``
  order, '?' for a missing value;
- a CSV whose first line names the columns: any order, extra columns ignored (with a note),
  quoted fields allowed.

Every problem is refused with a :class:`~fedkit.errors.SiteDataError` whose message names the
file, the line (1-based, as an editor shows it) and the column, and says what to do: a missing
column, an unknown categorical level, a value that is not a number, a missing label, a row with
the wrong number of fields, a repeated header, a likely wrong delimiter, an empty file, no rows
of one class. The first problem leads the message; up to nine more are listed after it.

The result is what :func:`fedkit.data.preprocess.select` and :func:`~fedkit.data.preprocess.encode`
give for the UCI files: encoded features (NaN where a value is missing and the policy is
``impute``) and 0/1 labels, ready to be split and standardized.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkit._validation import NONE, Options, validate_params
from fedkit.data.preprocess import MISSING_POLICIES
from fedkit.data.schema import Categorical, Schema
from fedkit.data.uci import sha256_bytes
from fedkit.errors import ConfigError, ConfigTypeError, DataError, SiteDataError

if TYPE_CHECKING:
    import pandas as pd

DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")
MAX_LISTED = 10
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")

READ_CONSTRAINTS: dict[str, list[Any]] = {
    "missing": [Options(MISSING_POLICIES)],
    "delimiter": [Options(DELIMITERS)],
    "header": [Options((True, False)), NONE],
}


@dataclass(frozen=True)
class SiteData:
    """One site's rows read against a schema: encoded features, 0/1 labels, and where they came from.

    Parameters
    ----------
    x
        Features, float64 (rows, len(features)), NaN for a missing value (policy ``impute``).
    y
        0/1 labels.
    features
        The encoded feature names.
    source
        The file (or data frame) read.
    sha256
        That of the bytes parsed (None for a data frame).
    rows
        Data rows read.
    dropped
        Rows the ``drop`` policy removed.
    notes
        What was ignored.
    """

    x: np.ndarray
    y: np.ndarray
    features: tuple[str, ...]
    source: str
    sha256: str | None
    rows: int
    dropped: int
    notes: tuple[str, ...] = ()


class _Problems:
    """The problems found in one source, in reading order; raised together as one SiteDataError."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.found: list[tuple[str, int | None, str | None]] = []

    def add(self, message: str, line: int | None = None, column: str | None = None) -> None:
        self.found.append((message, line, column))

    def full(self) -> bool:
        return len(self.found) >= MAX_LISTED

    def raise_any(self) -> None:
        if not self.found:
            return
        message, line, column = self.found[0]
        more = [m for m, _, _ in self.found[1:]]
        if more:
            extra = "" if len(self.found) < MAX_LISTED else " (listing stops here)"
            message += f"\nMore problems in {self.source}{extra}:" + "".join(f"\n  - {m}" for m in more)
        raise SiteDataError(message, source=self.source, line=line, column=column)


Codes = Mapping[str, Sequence[float | str]]
"""Per feature, the values a site's file writes for "not measured"."""


def parse_not_measured(items: list[str]) -> dict[str, list[float | str]]:
    """``["chol=0", "chol=-9"]`` as ``{"chol": [0.0, -9.0]}`` (values that are not numbers stay text).

    Parameters
    ----------
    items
        ``column=value`` pairs, as given on the command line.
    """
    codes: dict[str, list[float | str]] = {}
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column.strip() or not value.strip():
            raise ConfigError(f"--not-measured takes COLUMN=VALUE (e.g. chol=0); got {item!r}.")
        try:
            parsed: float | str = float(value)
        except ValueError:
            parsed = value.strip()
        codes.setdefault(column.strip(), []).append(parsed)
    return codes


def _check_not_measured(schema: Schema, not_measured: Codes | None) -> dict[str, set[float | str]]:
    codes: dict[str, set[float | str]] = {}
    for column, values in (not_measured or {}).items():
        feature = schema.feature(column)  # raises naming the features
        values = [values] if isinstance(values, str | numbers.Real) else list(values)
        text = isinstance(feature, Categorical) and not feature.numeric_levels
        if any(isinstance(v, bool) or not isinstance(v, str if text else numbers.Real) for v in values):
            kind = "text" if text else "numbers"
            raise ConfigError(
                f"The 'not_measured' codes of column {column!r} must be {kind} (the column's values); got {values!r}."
            )
        codes[column] = set(values if text else (float(v) for v in values))
    return codes


def read_site_file(
    path: str | Path,
    schema: Schema,
    *,
    missing: str,
    not_measured: Codes | None = None,
    delimiter: str = ",",
    header: bool | None = None,
) -> SiteData:
    """Read one site's own file against ``schema``; refuse it with the file, line and column of every problem.

    The file is read once; ``SiteData.sha256`` is the hash of the bytes parsed.

    Parameters
    ----------
    path
        The site's file.
    schema
        The federation's schema.
    missing
        The policy: ``"drop"`` removes rows with a missing feature, ``"impute"`` keeps them (NaN, filled later with
        the train mean).
    not_measured
        The values this site's file writes for "not measured", by feature (UCI va: ``{"chol": [0]}``); they become
        missing.
    delimiter
        The field separator.
    header
        Whether the first line is a header; None takes it for one when it names a schema column.

    Raises
    ------
    DataError
        When ``path`` is not a file.
    SiteDataError
        For every problem of its rows, naming the file, line and column.
    """
    validate_params({"missing": missing, "delimiter": delimiter, "header": header}, READ_CONSTRAINTS, "read_site_file")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file. Give the path of this site's own data file.")
    if not path.is_file():
        raise DataError(f"{path} is not a file. Give the path of this site's own data file, not a folder.")
    return read_site_bytes(
        path.read_bytes(), schema, source=str(path), missing=missing,
        not_measured=not_measured, delimiter=delimiter, header=header,
    )  # fmt: skip


def read_site_bytes(
    data: bytes,
    schema: Schema,
    *,
    source: str,
    missing: str,
    not_measured: Codes | None = None,
    delimiter: str = ",",
    header: bool | None = None,
) -> SiteData:
    """:func:`read_site_file` on bytes already in memory; ``source`` names them in messages.

    Parameters
    ----------
    data
        The file's bytes.
    schema
        The federation's schema.
    source
        Names the bytes in messages.
    missing
        The policy: ``"drop"`` or ``"impute"``.
    not_measured
        The values that mean "not measured", by feature.
    delimiter
        The field separator.
    header
        Whether the first line is a header; None takes it for one when it names a schema column.
    """
    validate_params({"missing": missing, "delimiter": delimiter, "header": header}, READ_CONSTRAINTS, "read_site_bytes")
    codes = _check_not_measured(schema, not_measured)
    if not data:
        raise SiteDataError(
            f"{source}: the file is empty (0 bytes); a site's data file holds rows of the columns "
            f"{', '.join(schema.required)}.",
            source=source,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SiteDataError(
            f"{source}, line {line}: byte {exc.start} ({data[exc.start]:#04x}) is not UTF-8 text; save the file "
            "as UTF-8 (or plain ASCII) CSV.",
            source=source,
            line=line,
        ) from None
    records = _records(text.removeprefix("\ufeff"), source, delimiter)
    if not records:
        raise SiteDataError(f"{source}: the file has no rows (only blank lines).", source=source)
    first_line, first = records[0]
    _check_delimiter(first, first_line, source, delimiter)
    names = [f.strip() for f in first]
    known = set(schema.required) | set(schema.drop) | set(schema.columns or ())
    if header is None:
        header = any(n in known for n in names)
        plain = schema.columns is not None and len(names) == len(schema.columns)
        if not header and not plain and not any(_is_number(n) or n in schema.missing for n in names):
            raise SiteDataError(
                f"{source}, line {first_line}: this looks like a header ({', '.join(map(repr, names[:6]))}"
                f"{', ...' if len(names) > 6 else ''}) but names none of the columns of schema {schema.name!r} "
                f"({', '.join(schema.required)}); rename the columns to the schema's names.",
                source=source,
                line=first_line,
            )
    notes: list[str] = []
    if header:
        fields = _header_fields(names, first_line, source, schema, notes)
        width, rows = len(names), records[1:]
        if not rows:
            raise SiteDataError(
                f"{source}: the file has a header (line {first_line}) but no data rows.", source=source, line=first_line
            )
    else:
        if schema.columns is None:
            raise SiteDataError(
                f"{source}, line {first_line}: the file has no header line and schema {schema.name!r} declares no "
                "column order (columns:), so its fields cannot be matched to columns; add a header line naming "
                "the columns.",
                source=source,
                line=first_line,
            )
        fields = {name: schema.columns.index(name) for name in schema.required}
        width, rows = len(schema.columns), records
    problems = _Problems(source)
    cells: list[list[str]] = []
    lines: list[int] = []
    for line, row in rows:
        if len(row) != width:
            expected = f"the header (line {first_line}) has" if header else f"schema {schema.name!r} has"
            hint = f"; the line ends with {delimiter!r}" if len(row) == width + 1 and not row[-1].strip() else ""
            problems.add(f"{source}, line {line}: {len(row)} fields where {expected} {width} columns{hint}.", line)
        elif header and [f.strip() for f in row] == names:
            problems.add(f"{source}, line {line}: the header repeats here (files joined together?); remove it.", line)
        else:
            cells.append(row)
            lines.append(line)
        if problems.full():
            break
    problems.raise_any()
    columns = {name: [row[i] for row in cells] for name, i in sorted(fields.items(), key=lambda item: item[1])}
    return _site_data(
        columns, schema, source=source, where=lambda i: f"line {lines[i]}", line_of=lambda i: lines[i],
        missing=missing, codes=codes, sha256=sha256_bytes(data), notes=notes,
    )  # fmt: skip


def read_site_frame(
    frame: pd.DataFrame,
    schema: Schema,
    *,
    missing: str,
    not_measured: Codes | None = None,
    source: str = "data frame",
) -> SiteData:
    """:func:`read_site_file` for a pandas DataFrame (columns by name, NaN/None/NA missing); rows named by position.

    Parameters
    ----------
    frame
        The site's rows.
    schema
        The federation's schema.
    missing
        The policy: ``"drop"`` or ``"impute"``.
    not_measured
        The values that mean "not measured", by feature.
    source
        Names the frame in messages.
    """
    import pandas as pd

    validate_params({"missing": missing}, {"missing": READ_CONSTRAINTS["missing"]}, "read_site_frame")
    codes = _check_not_measured(schema, not_measured)
    if not isinstance(frame, pd.DataFrame):
        raise ConfigTypeError(f"read_site_frame takes a pandas DataFrame; got {type(frame).__name__}.")
    if frame.empty:
        raise SiteDataError(f"{source}: the data frame has no rows.", source=source)
    names = [str(c) for c in frame.columns]
    notes: list[str] = []
    fields = _header_fields(names, None, source, schema, notes)
    index = list(frame.index)
    columns = {
        name: [None if (not isinstance(v, str) and pd.isna(v)) else v for v in frame.iloc[:, i].tolist()]
        for name, i in sorted(fields.items(), key=lambda item: item[1])
    }
    return _site_data(
        columns, schema, source=source, where=lambda i: f"row {i + 1} (index {index[i]!r})", line_of=lambda i: i + 1,
        missing=missing, codes=codes, sha256=None, notes=notes,
    )  # fmt: skip


def _records(text: str, source: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """Non-blank records with the line each ends on."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records = []
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                records.append((reader.line_num, fields))
    except csv.Error as exc:
        raise SiteDataError(
            f"{source}, line {reader.line_num}: not readable as CSV ({exc}); check the quotes on that line.",
            source=source,
            line=reader.line_num,
        ) from None
    return records


def _check_delimiter(first: list[str], line: int, source: str, delimiter: str) -> None:
    if len(first) != 1:
        return
    for other in DELIMITERS:
        if other != delimiter and other in first[0]:
            shown = "a tab" if other == "\t" else repr(other)
            arg = "'\\t'" if other == "\t" else repr(other)
            raise SiteDataError(
                f"{source}, line {line}: the line is one field ({first[0][:60]!r}) holding {shown}: the file seems "
                f"separated by {shown}, not {delimiter!r}. Pass delimiter={arg} (or save the file comma-separated).",
                source=source,
                line=line,
            )


def _header_fields(names: list[str], line: int | None, source: str, schema: Schema, notes: list[str]) -> dict[str, int]:
    """Field index of every required column in a header; notes the ignored ones."""
    at = f"{source}, line {line} (header)" if line is not None else source
    for name in schema.required:
        if names.count(name) > 1:
            positions = [i + 1 for i, n in enumerate(names) if n == name]
            raise SiteDataError(
                f"{at}: column {name!r} appears {len(positions)} times (fields {', '.join(map(str, positions))}); "
                "keep one of them.",
                source=source,
                line=line,
                column=name,
            )
    absent = [name for name in schema.required if name not in names]
    if absent:
        name = absent[0]
        unused = [n for n in names if n not in schema.required and n not in schema.drop]
        close = [n for n in unused if n.lower() == name.lower()] or difflib.get_close_matches(name, unused, n=1)
        close = close or [n for n in unused if name.lower() in n.lower() or n.lower() in name.lower()]
        hint = f" (is {close[0]!r} meant to be {name!r}? rename it)" if close else ""
        kind = "label" if name == schema.label.column else "feature"
        raise SiteDataError(
            f"{at}: no column {name!r}{hint}, which schema {schema.name!r} needs as a {kind}"
            + (f"; also missing: {', '.join(map(repr, absent[1:]))}" if len(absent) > 1 else "")
            + f". The columns are: {', '.join(map(repr, names))}.",
            source=source,
            line=line,
            column=name,
        )
    extra = [n or "(unnamed)" for n in names if n not in schema.required and n not in schema.drop]
    if extra:
        notes.append(f"{source}: ignored column(s) not in schema {schema.name!r}: {', '.join(extra)}.")
    return {name: names.index(name) for name in schema.required}


def _is_number(token: str) -> bool:
    return _NUMBER.fullmatch(token) is not None


def _site_data(
    columns: dict[str, list[Any]],
    schema: Schema,
    *,
    source: str,
    where: Callable[[int], str],
    line_of: Callable[[int], int],
    missing: str,
    codes: dict[str, set[float | str]],
    sha256: str | None,
    notes: list[str],
) -> SiteData:
    """Convert, check and encode the cells of the required columns (in field order)."""
    n = len(next(iter(columns.values())))
    values = {name: np.empty(n, dtype=np.float64) for name in columns}
    label = schema.label
    specs = {f.name: f for f in schema.features}
    problems = _Problems(source)
    for i in range(n):
        for name, cells in columns.items():
            try:
                values[name][i] = _cell(cells[i], name, specs.get(name), schema, codes.get(name, set()))
            except ValueError as exc:
                problems.add(f"{source}, {where(i)}, column {name!r}: {exc}", line_of(i), name)
        if problems.full():
            break
    problems.raise_any()
    y = values.pop(label.column)
    present = ~np.isnan(np.column_stack(list(values.values()))).any(axis=1)
    dropped = 0
    if missing == "drop":
        dropped = int(n - present.sum())
        if dropped == n:
            counts = {name: int(np.isnan(v).sum()) for name, v in values.items()}
            worst = max(counts, key=counts.__getitem__)
            raise SiteDataError(
                f"{source}: every one of its {n} rows has a missing value, so missing='drop' leaves none (column "
                f"{worst!r} is missing in {counts[worst]} rows); use missing='impute', or drop that column from the "
                "schema.",
                source=source,
                column=worst,
            )
        values = {name: v[present] for name, v in values.items()}
        y = y[present]
    for cls in (1.0, 0.0):
        if not (y == cls).any():
            after = f" left after dropping {dropped} with a missing value" if dropped else ""
            raise SiteDataError(
                f"{source}: no rows of class {int(cls)} ({label.describe(bool(cls))}) among its {len(y)} rows{after}; "
                f"a site needs rows of both classes to train and to be scored. Check column {label.column!r} and "
                "the schema's label rule.",
                source=source,
                column=label.column,
            )
    return SiteData(
        x=schema.encode(values), y=y, features=schema.feature_names, source=source, sha256=sha256,
        rows=n, dropped=dropped, notes=tuple(notes),
    )  # fmt: skip


def _number(cell: Any, schema: Schema) -> float:
    """The finite number a cell holds; ValueError saying why not."""
    if isinstance(cell, str):
        token = cell.strip()
        if _is_number(token):
            return float(token)
        tokens = " or ".join(repr(m) for m in schema.missing)
        if token == "":
            reason = f"an empty field is not a missing value in schema {schema.name!r}: write {tokens} there"
        elif token.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            reason = f"{token!r} is not a finite number; mark a missing value with {tokens}"
        elif _DECIMAL_COMMA.fullmatch(token):
            reason = f"{token!r} is not a number: write the decimal point as '.' ({token.replace(',', '.')})"
        else:
            reason = (
                f"{token!r} is not a number; only numbers and {tokens} (missing) are allowed. If {token!r} marks a "
                "missing value, add it to the schema's missing tokens (that does not change the encoding)"
            )
        raise ValueError(reason + ".")
    if isinstance(cell, numbers.Real) and not isinstance(cell, bool | np.bool_):
        if not math.isfinite(cell):
            raise ValueError(f"{cell!r} is not a finite number.")
        return float(cell)
    raise ValueError(f"{cell!r} ({type(cell).__name__}) is not a number.")


def _cell(cell: Any, name: str, spec: Any, schema: Schema, codes: set[float | str]) -> float:
    """One cell as a float: a number, a level index, a 0/1 label, or NaN when missing."""
    if cell is None or (isinstance(cell, str) and cell.strip() in schema.missing):
        if name == schema.label.column:
            raise ValueError("the label is missing; every row needs its label (fix it or remove the row).")
        return math.nan
    token = cell.strip() if isinstance(cell, str) else cell
    label = schema.label
    if name == label.column:
        if label.positive_above is not None:
            return float(_number(cell, schema) > label.positive_above)
        value = _number(cell, schema) if not isinstance(token, str) or _is_number(token) else None
        for cls, values in ((1.0, label.positive), (0.0, label.negative)):
            if token in values or (value is not None and value in values):
                return cls
        raise ValueError(
            f"{token!r} is neither a positive ({label.describe(True)}) nor a negative ({label.describe(False)}) label."
        )
    if isinstance(spec, Categorical) and not spec.numeric_levels:
        if token in codes:
            return math.nan
        if isinstance(token, str) and token in spec.levels:
            return float(spec.levels.index(token))
        raise ValueError(_unknown_level(token, spec, schema))
    value = _number(cell, schema)
    if value in codes:
        return math.nan
    if isinstance(spec, Categorical):
        if value in spec.levels:
            return float(spec.levels.index(value))
        raise ValueError(_unknown_level(token, spec, schema))
    return value


def _unknown_level(token: Any, spec: Categorical, schema: Schema) -> str:
    levels = ", ".join(f"{v:g}" if isinstance(v, float) else repr(v) for v in spec.levels)
    tokens = " or ".join(repr(m) for m in schema.missing)
    return (
        f"{token!r} is not a level of {spec.name!r}; schema {schema.name!r} allows {levels} (or {tokens} for missing). "
        "Fix the value, or add the level to the schema (every site must then use the new schema)."
    )
