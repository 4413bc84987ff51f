"""What travels between the server and the sites: task names, array encoding, event topic. No FLARE import."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

HELLO = "fedkit_hello"
FIT = "fedkit_fit"
EVALUATE = "fedkit_evaluate"
EVALUATE_PERSONAL = "fedkit_evaluate_personal"
TASKS: tuple[str, ...] = (HELLO, FIT, EVALUATE, EVALUATE_PERSONAL)
EVENTS_TOPIC = "fedkit.events"
"""App command the controller registers; the notebook polls it for the run's tracker calls."""
RESULT_FILE = "fedkit_result.json"
"""Written by the controller into the job's server workspace; read back from the downloaded job result."""


def pack(array: np.ndarray | None) -> dict[str, Any] | None:
    """An array as a msgpack/JSON-free dict of dtype, shape and raw bytes (exact, any size).

    Parameters
    ----------
    array
        The array (None passes through).
    """
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}


def unpack(packed: dict[str, Any] | None) -> np.ndarray | None:
    """The array :func:`pack` encoded (a fresh, writable copy).

    Parameters
    ----------
    packed
        A dict :func:`pack` made (None passes through).
    """
    if packed is None:
        return None
    return np.frombuffer(packed["data"], dtype=np.dtype(packed["dtype"])).reshape(packed["shape"]).copy()


def to_json(value: Any) -> Any:
    """``value`` with NaN floats as None and arrays as float lists, so it survives JSON.

    Parameters
    ----------
    value
        Any JSON-like value.
    """
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_json(float(v)) for v in value.ravel()]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def rows_from_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metric rows back from JSON: a null value is NaN again, as the round loop produced it.

    Parameters
    ----------
    rows
        Metric rows read from JSON.
    """
    return [{**r, "value": float("nan") if r["value"] is None else float(r["value"])} for r in rows]
