"""A federation's declared schema: the columns every site's file must have, their types, and the label rule.

The schema alone fixes the encoding, so no site (and no server) derives it from pooled data:

- a :class:`Numeric` feature is its value as a float;
- a :class:`Categorical` feature has fixed levels and is one-hot encoded with the first level
  dropped (``cp`` with levels 1, 2, 3, 4 gives ``cp_2``, ``cp_3``, ``cp_4``);
- the feature vector is the numeric features in declared order, then each categorical's
  dummies in declared order (FLamby's ``pd.get_dummies(..., drop_first=True)`` order);
- the :class:`Label` rule turns the label column into 0/1 (UCI: ``num > 0``);
- ``missing`` lists the tokens that mark a missing value ('?' in the UCI files);
- ``drop`` lists columns a file may carry that are not used; ``columns`` (optional) is the
  order of the fields of a file without a header line.

A schema is declared in Python or read from YAML/JSON (:func:`load_schema`, format in
:meth:`Schema.from_dict`) and validated on construction with errors that name the field.
:meth:`Schema.fingerprint` lets a federation check that every site encodes the same way.

Which value a site wrote for "not measured" is *not* in the schema: it is how one site recorded
its file (switzerland and va wrote ``chol = 0``, the others wrote '?'), so the site says it when it
reads its own file (``not_measured=`` of :func:`fedkit.data.sitefile.read_site_file`). The shared
schema then never changes when a site joins and never names sites; such a rule only turns some
of the site's own values into missing ones and does not change the encoding.
:func:`uci_not_measured` gives the UCI hospitals' rules under fedkit's missing-value policies.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedkit.data import preprocess, uci
from fedkit.errors import SchemaError


def _level_name(level: float | str) -> str:
    return f"{level:g}" if isinstance(level, float) else level


@dataclass(frozen=True)
class Numeric:
    """A numeric feature: the column's value as a float.

    Parameters
    ----------
    name
        The column's name.
    """

    name: str


@dataclass(frozen=True)
class Categorical:
    """A categorical feature with fixed ``levels`` (all numbers or all strings), one-hot encoded, first level dropped.

    Numeric levels match a file's value numerically (``2``, ``2.0`` and ``2.00`` are level 2); string levels
    match the file's text exactly.

    Parameters
    ----------
    name
        The column's name.
    levels
        Its levels, in order (the first is dropped by the encoding).
    """

    name: str
    levels: tuple[float, ...] | tuple[str, ...]

    def __post_init__(self) -> None:
        levels = tuple(self.levels) if isinstance(self.levels, Sequence) and not isinstance(self.levels, str) else None
        if levels is None:
            raise SchemaError(f"Categorical feature {self.name!r}: levels must be a list; got {self.levels!r}.")
        if any(isinstance(v, bool) for v in levels):
            raise SchemaError(
                f"Categorical feature {self.name!r}: a level is a boolean ({levels!r}); YAML reads yes/no/on/off "
                "and true/false as booleans: quote them ('yes') to use them as text levels."
            )
        if all(isinstance(v, numbers.Real) for v in levels):
            levels = tuple(float(v) for v in levels)
            if not all(math.isfinite(v) for v in levels):
                raise SchemaError(f"Categorical feature {self.name!r}: levels must be finite numbers; got {levels!r}.")
        elif not all(isinstance(v, str) and v.strip() == v and v for v in levels):
            raise SchemaError(
                f"Categorical feature {self.name!r}: levels must be all numbers or all non-empty strings without "
                f"surrounding spaces; got {list(self.levels)!r}."
            )
        if len(levels) < 2:
            raise SchemaError(
                f"Categorical feature {self.name!r} has {len(levels)} level(s); it needs at least 2 (one level "
                "carries no information: drop the column instead)."
            )
        repeated = sorted({_level_name(v) for v in levels if levels.count(v) > 1})
        if repeated:
            raise SchemaError(
                f"Categorical feature {self.name!r}: level(s) {', '.join(repeated)} listed more than once; "
                "list each level once."
            )
        object.__setattr__(self, "levels", levels)

    @property
    def numeric_levels(self) -> bool:
        """Whether the levels are numbers (matched by value) rather than strings (matched by text)."""
        return isinstance(self.levels[0], float)

    @property
    def dummies(self) -> tuple[str, ...]:
        """Names of the encoded columns: ``name_level`` for every level but the first."""
        return tuple(f"{self.name}_{_level_name(level)}" for level in self.levels[1:])


Feature = Numeric | Categorical


@dataclass(frozen=True)
class Label:
    """How the label column becomes 0/1: ``value > positive_above``, or explicit ``positive`` / ``negative`` values.

    With ``positive`` and ``negative`` every value must be one of them (numbers match by value, text exactly);
    any other value is refused, so a typo never becomes a silent negative.

    Parameters
    ----------
    column
        The label column's name.
    positive_above
        A value above it is positive (e.g. ``num > 0``); None with ``positive`` / ``negative``.
    positive
        The values that mean positive.
    negative
        The values that mean negative.
    """

    column: str
    positive_above: float | None = None
    positive: tuple[float, ...] | tuple[str, ...] = ()
    negative: tuple[float, ...] | tuple[str, ...] = ()

    def __post_init__(self) -> None:
        named = bool(self.positive) or bool(self.negative)
        if (self.positive_above is None) == (not named) or (named and not (self.positive and self.negative)):
            raise SchemaError(
                f"Label {self.column!r}: give either positive_above (a number: label = value > it) or both "
                f"positive and negative (the values of each class); got positive_above={self.positive_above!r}, "
                f"positive={list(self.positive)!r}, negative={list(self.negative)!r}."
            )
        if self.positive_above is not None:
            value = self.positive_above
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise SchemaError(f"Label {self.column!r}: positive_above must be a finite number; got {value!r}.")
            object.__setattr__(self, "positive_above", float(value))
            return
        classes = {}
        for kind in ("positive", "negative"):
            values = getattr(self, kind)
            values = (values,) if isinstance(values, str | numbers.Real) else tuple(values)
            if any(isinstance(v, bool) for v in values):
                raise SchemaError(
                    f"Label {self.column!r}: a {kind} value is a boolean ({list(values)!r}); YAML reads yes/no/on/off "
                    "and true/false as booleans: quote them ('yes')."
                )
            if not all(isinstance(v, str | numbers.Real) for v in values):
                raise SchemaError(f"Label {self.column!r}: {kind} values must be numbers or strings; got {values!r}.")
            classes[kind] = tuple(float(v) if isinstance(v, numbers.Real) else v for v in values)
            object.__setattr__(self, kind, classes[kind])
        both = set(classes["positive"]) & set(classes["negative"])
        if both:
            shown = ", ".join(sorted(_level_name(v) for v in both))
            raise SchemaError(f"Label {self.column!r}: value(s) {shown} are both positive and negative.")

    def describe(self, positive: bool) -> str:
        """The rule of one class in words, e.g. ``num > 0`` or ``outcome in ('yes',)``.

        Parameters
        ----------
        positive
            The positive class (else the negative one).
        """
        if self.positive_above is not None:
            return f"{self.column} {'>' if positive else '<='} {self.positive_above:g}"
        values = [repr(_level_name(v)) for v in (self.positive if positive else self.negative)]
        return f"{self.column} = {values[0]}" if len(values) == 1 else f"{self.column} in ({', '.join(values)})"


@dataclass(frozen=True)
class Schema:
    """The columns a federation's data has: features, label rule, dropped columns, missing tokens, file column order.

    Validated on construction (:class:`~fedkit.errors.SchemaError` otherwise): feature, label and dropped names
    are distinct; ``columns``, when given, lists every one of them and nothing else; ``missing`` may hold the
    empty string (empty cells are missing) but no text level of a categorical feature.

    Parameters
    ----------
    features
        The features, in order.
    label
        How the label column becomes 0/1.
    columns
        The file's column order, for a file without header (None: the header names them).
    drop
        Columns present in the files but not used.
    missing
        Tokens that mean a missing value.
    name
        The schema's name, for messages.
    """

    features: tuple[Feature, ...]
    label: Label
    columns: tuple[str, ...] | None = None
    drop: tuple[str, ...] = ()
    missing: tuple[str, ...] = (uci.MISSING_TOKEN,)
    name: str = "custom"

    def __post_init__(self) -> None:
        for attr in ("features", "drop", "missing") + (("columns",) if self.columns is not None else ()):
            value = getattr(self, attr)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise SchemaError(f"Schema {self.name!r}: {attr} must be a list; got {value!r}.")
            object.__setattr__(self, attr, tuple(value))
        if not isinstance(self.name, str) or not self.name:
            raise SchemaError(f"A schema's name must be a non-empty string; got {self.name!r}.")
        if not self.features:
            raise SchemaError(f"Schema {self.name!r} has no features; declare at least one.")
        if not isinstance(self.label, Label):
            raise SchemaError(f"Schema {self.name!r}: label must be a Label; got {self.label!r}.")
        for f in self.features:
            if not isinstance(f, Numeric | Categorical):
                raise SchemaError(f"Schema {self.name!r}: a feature must be Numeric or Categorical; got {f!r}.")
        names = [f.name for f in self.features] + [self.label.column] + list(self.drop)
        for n in names + list(self.columns or ()) + list(self.missing):
            if not isinstance(n, str):
                raise SchemaError(
                    f"Schema {self.name!r}: column names and missing tokens must be strings; got {n!r} "
                    f"({type(n).__name__}); quote it in YAML."
                )
        for n in names + list(self.columns or ()):
            if not n or n != n.strip():
                raise SchemaError(f"Schema {self.name!r}: column name {n!r} is empty or has surrounding spaces.")
        role = {f.name: "feature" for f in self.features}
        for n, kind in [(self.label.column, "the label"), *((d, "dropped") for d in self.drop)]:
            if n in role:
                raise SchemaError(f"Schema {self.name!r}: column {n!r} is declared twice ({role[n]} and {kind}).")
            role[n] = kind
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SchemaError(f"Schema {self.name!r}: column(s) {', '.join(repeated)} declared more than once.")
        if self.columns is not None:
            twice = sorted({c for c in self.columns if self.columns.count(c) > 1})
            if twice:
                raise SchemaError(f"Schema {self.name!r}: columns lists {', '.join(twice)} more than once.")
            absent = [n for n in names if n not in self.columns]
            if absent:
                raise SchemaError(
                    f"Schema {self.name!r}: columns (the field order of a file without header) lacks "
                    f"{', '.join(absent)}; list every feature, the label and every dropped column."
                )
            unknown = [c for c in self.columns if c not in role]
            if unknown:
                raise SchemaError(
                    f"Schema {self.name!r}: column(s) {', '.join(unknown)} in columns are neither a feature, the label "
                    "nor dropped; add them to drop (or to the features)."
                )
        if not self.missing:
            raise SchemaError(f"Schema {self.name!r}: missing must list at least one token (UCI: '?').")
        if len(set(self.missing)) != len(self.missing):
            raise SchemaError(f"Schema {self.name!r}: missing lists a token twice: {list(self.missing)!r}.")
        for f in self.features:
            if isinstance(f, Categorical) and not f.numeric_levels:
                clash = [m for m in self.missing if m in f.levels]
                if clash:
                    raise SchemaError(
                        f"Schema {self.name!r}: {clash[0]!r} is both a level of {f.name!r} and a missing-value token."
                    )
        encoded = self.feature_names
        clashes = sorted({n for n in encoded if encoded.count(n) > 1})
        if clashes:
            raise SchemaError(
                f"Schema {self.name!r}: encoded feature name(s) {', '.join(clashes)} occur twice (a numeric feature "
                "is named like a categorical's dummy); rename one."
            )

    @property
    def numeric(self) -> tuple[Numeric, ...]:
        """The numeric features in declared order."""
        return tuple(f for f in self.features if isinstance(f, Numeric))

    @property
    def categorical(self) -> tuple[Categorical, ...]:
        """The categorical features in declared order."""
        return tuple(f for f in self.features if isinstance(f, Categorical))

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the encoded columns: numeric features, then every categorical's dummies."""
        return tuple(f.name for f in self.numeric) + tuple(d for c in self.categorical for d in c.dummies)

    @property
    def required(self) -> tuple[str, ...]:
        """The columns a site's file must have: every feature and the label."""
        return (*(f.name for f in self.features), self.label.column)

    def feature(self, name: str) -> Feature:
        """The declared feature ``name`` (SchemaError naming the features when there is none).

        Parameters
        ----------
        name
            The feature's name.
        """
        for f in self.features:
            if f.name == name:
                return f
        raise SchemaError(
            f"Schema {self.name!r} has no feature {name!r}{_did_you_mean(name, [f.name for f in self.features])}; "
            f"its features are {', '.join(f.name for f in self.features)}."
        )

    def encode(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Feature matrix from per-column arrays: numeric values; level indices (0..k-1, NaN if missing).

        Parameters
        ----------
        values
            Each column's values, by column name.
        """
        blocks = [np.asarray(values[f.name], dtype=np.float64)[:, None] for f in self.numeric]
        blocks += [preprocess.one_hot(values[c.name], range(len(c.levels))) for c in self.categorical]
        return np.concatenate(blocks, axis=1)

    def to_dict(self) -> dict[str, Any]:
        """The JSON/YAML form read by :meth:`from_dict`."""
        features: dict[str, Any] = {}
        for f in self.features:
            features[f.name] = "numeric" if isinstance(f, Numeric) else {"categorical": [_plain(v) for v in f.levels]}
        label: dict[str, Any] = {"column": self.label.column}
        if self.label.positive_above is not None:
            label["positive_above"] = _plain(self.label.positive_above)
        else:
            label["positive"] = [_plain(v) for v in self.label.positive]
            label["negative"] = [_plain(v) for v in self.label.negative]
        out: dict[str, Any] = {"name": self.name}
        if self.columns is not None:
            out["columns"] = list(self.columns)
        out.update({"features": features, "label": label, "drop": list(self.drop), "missing": list(self.missing)})
        return out

    def fingerprint(self) -> str:
        """sha256 of the encoding contract: the features in order with their types and levels, and the label rule.

        Sites of one federation must agree on it (checked when they join); how a file is laid out
        (``columns``, ``drop``, ``missing``) and the name may differ between sites without changing it.
        """
        spec = self.to_dict()
        canonical = {"features": list(spec["features"].items()), "label": spec["label"]}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "schema") -> Schema:
        """Build from a mapping (a parsed YAML/JSON file); ``where`` names it in errors.

        Keys: ``features`` (a mapping, in order, of column name to ``numeric`` or ``{categorical: [levels]}``),
        ``label`` (``{column, positive_above}`` or ``{column, positive: [...], negative: [...]}``), optional
        ``name``, ``columns`` (field order of a file without header), ``drop`` (unused columns) and ``missing``
        (tokens, default ``['?']``).

        Parameters
        ----------
        values
            The mapping (a parsed YAML/JSON file).
        where
            What it is, named in errors (e.g. the file).

        Raises
        ------
        SchemaError
            When a key or value is malformed; the message names it and the fix.
        """
        if not isinstance(values, Mapping):
            raise SchemaError(f"{where}: a schema is a mapping with features and label; got {type(values).__name__}.")
        _check_keys(values, ("name", "columns", "features", "label", "drop", "missing"), where)
        for key in ("features", "label"):
            if key not in values:
                raise SchemaError(f"{where}: the schema has no {key!r}; it needs 'features' and 'label'.")
        raw = values["features"]
        if not isinstance(raw, Mapping):
            raise SchemaError(
                f"{where}: features must be a mapping of column name to 'numeric' or {{categorical: [levels]}}; "
                f"got {type(raw).__name__}."
            )
        features: list[Feature] = []
        for name, spec in raw.items():
            at = f"{where}: features.{name}"
            if not isinstance(name, str):
                raise SchemaError(f"{at}: a column name must be a string; quote {name!r} in YAML.")
            if spec == "numeric":
                features.append(Numeric(name))
            elif isinstance(spec, Mapping) and set(spec) == {"categorical"}:
                try:
                    features.append(Categorical(name, spec["categorical"]))
                except SchemaError as exc:
                    raise SchemaError(f"{where}: {exc}") from None
            else:
                raise SchemaError(
                    f"{at}: {spec!r} is not a feature type; write 'numeric' or {{categorical: [level, ...]}}."
                )
        label = values["label"]
        if not isinstance(label, Mapping):
            raise SchemaError(
                f"{where}: label must be a mapping like {{column: num, positive_above: 0}}; got {label!r}."
            )
        _check_keys(label, ("column", "positive_above", "positive", "negative"), f"{where}: label")
        if "column" not in label:
            raise SchemaError(f"{where}: label has no 'column' (the name of the label column).")
        try:
            return cls(
                features=tuple(features),
                label=Label(
                    label["column"],
                    label.get("positive_above"),
                    label.get("positive", ()),
                    label.get("negative", ()),
                ),
                columns=values.get("columns"),
                drop=values.get("drop", ()),
                missing=values.get("missing", (uci.MISSING_TOKEN,)),
                name=values.get("name", "custom"),
            )
        except SchemaError as exc:
            raise SchemaError(f"{where}: {exc}") from None


def _plain(value: float | str) -> float | int | str:
    """A level as YAML/JSON writes it: whole numbers as ints."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _did_you_mean(name: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(values: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in values:
        if key not in allowed:
            raise SchemaError(
                f"{where}: unknown key {key!r}{_did_you_mean(str(key), allowed)}; allowed keys: {', '.join(allowed)}."
            )


def load_schema(path: str | Path) -> Schema:
    """Read a schema from a YAML (.yaml/.yml) or JSON file (format: :meth:`Schema.from_dict`).

    Parameters
    ----------
    path
        The YAML (.yaml/.yml) or JSON file.

    Raises
    ------
    SchemaError
        When the file is missing, does not parse, or is not a valid schema.
    """
    import yaml  # JSON is YAML; only the error wording differs

    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"Schema file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise SchemaError(f"Schema file {path} is not valid {kind}: {exc}") from None
    return Schema.from_dict(values, where=str(path))


UCI_HEART_DISEASE = Schema(
    features=tuple(
        Numeric(c) if c in preprocess.NUMERIC else Categorical(c, preprocess.CATEGORICAL[c])
        for c in uci.COLUMNS
        if c in preprocess.NUMERIC or c in preprocess.CATEGORICAL
    ),
    label=Label("num", positive_above=0),
    columns=uci.COLUMNS,
    drop=("slope", "ca", "thal"),
    missing=(uci.MISSING_TOKEN,),
    name="uci-heart-disease",
)
"""The UCI Heart Disease schema: FLamby's 13 features in fedkit's order, label ``num > 0``, '?' missing.

The features are declared in the files' column order; the encoding puts the numeric ones first,
which gives exactly :data:`fedkit.data.preprocess.FEATURES`.
"""


def uci_not_measured(hospital: str, missing: str) -> dict[str, tuple[float, ...]]:
    """The codes a UCI hospital's file uses for "not measured", under missing-value policy ``missing``.

    ``chol == 0`` in switzerland and va under ``"impute"``; nothing under ``"drop"``, where the FLamby protocol
    keeps ``chol == 0`` as recorded (it would otherwise drop every Swiss row).

    Parameters
    ----------
    hospital
        The hospital's name.
    missing
        Missing-value policy: ``"drop"`` or ``"impute"``.
    """
    if missing == "impute" and hospital in preprocess.CHOL_NOT_MEASURED_IN:
        return {"chol": (0.0,)}
    return {}
