"""Parameter constraints as data, checked once at public entry points (after scikit-learn).

A constraint is a small value with ``is_satisfied_by(value)`` and a ``__str__`` that reads as
"what is allowed". :func:`validate_params` raises one :class:`~fedkit.errors.ConfigError` (or
:class:`~fedkit.errors.ConfigTypeError`) naming the parameter, the caller, what is allowed and
what was received.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fedkit.errors import ConfigError, ConfigTypeError


class Constraint(Protocol):
    """Something a parameter value may satisfy."""

    def is_satisfied_by(self, value: Any) -> bool:
        """Whether ``value`` is allowed."""
        ...


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple[Any, ...]

    def is_satisfied_by(self, value: Any) -> bool:
        """Whether ``value`` is one of the options."""
        return isinstance(value, str | bool | type(None) | numbers.Number) and value in self.values

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Interval:
    """A number of a given kind (``int`` or ``float``) in a range.

    ``closed`` says which ends belong to it: "both", "left", "right" or "neither".
    """

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"

    def is_satisfied_by(self, value: Any) -> bool:
        """Whether ``value`` is a number of the right kind inside the range."""
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if self.kind is float and not isinstance(value, numbers.Real):
            return False
        if isinstance(value, numbers.Real) and not math.isfinite(value):
            return False
        low_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return low_ok and high_ok

    def __str__(self) -> str:
        kind = "an int" if self.kind is int else "a float"
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{kind} in the range {left}{low}, {high}{right}"


@dataclass(frozen=True)
class OfType:
    """An instance of a type (``None`` excluded unless listed separately)."""

    kind: type

    def is_satisfied_by(self, value: Any) -> bool:
        """Whether ``value`` is an instance of the type."""
        return isinstance(value, self.kind)

    def __str__(self) -> str:
        return f"an instance of {self.kind.__name__}"


NONE = Options((None,))


def did_you_mean(value: Any, names: Iterable[Any], prefix: str = "") -> str:
    """`` Did you mean 'x'?`` for the name closest to ``value`` among ``names`` (text only), else ``""``.

    Parameters
    ----------
    value
        What was given.
    names
        The allowed values; only the strings among them are candidates.
    prefix
        A prefix every name shares (``"--"`` of a flag): compared without it, so that it alone makes no match.
    """
    import difflib

    if not isinstance(value, str):
        return ""
    candidates = [n.removeprefix(prefix) for n in names if isinstance(n, str)]
    close = difflib.get_close_matches(value.removeprefix(prefix), candidates, n=1)
    return f" Did you mean {prefix + close[0]!r}?" if close else ""


def _describe(constraints: Iterable[Constraint]) -> str:
    parts = ["None" if c == NONE else str(c) for c in constraints]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def validate_params(params: Mapping[str, Any], constraints: Mapping[str, list[Constraint]], caller: str) -> None:
    """Check every ``params[name]`` against ``constraints[name]``; raise on the first failure.

    A value fails with :class:`ConfigTypeError` when no constraint accepts its type at all and
    with :class:`ConfigError` when its type is right but its value is not.
    """
    for name, allowed in constraints.items():
        value = params[name]
        if any(c.is_satisfied_by(value) for c in allowed):
            continue
        message = (
            f"The {name!r} parameter of {caller} must be {_describe(allowed)}; got {value!r} ({type(value).__name__})."
        )
        message += did_you_mean(value, [v for c in allowed if isinstance(c, Options) for v in c.values])
        numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
        type_ok = any(
            (isinstance(c, Interval) and numeric and (c.kind is float or isinstance(value, numbers.Integral)))
            or (isinstance(c, Options) and isinstance(value, str | bool | type(None) | numbers.Number))
            or (isinstance(c, OfType) and isinstance(value, c.kind))
            for c in allowed
        )
        raise (ConfigError if type_ok else ConfigTypeError)(message)
