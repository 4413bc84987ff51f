"""What travels between the server and the sites: task names, array encoding, event topic. No FLARE import."""

from __future__ import annotations

import math
import zlib
from typing import Any, NamedTuple

import numpy as np

HELLO = "fedkit_hello"
MOMENTS = "fedkit_moments"
SCALING = "fedkit_scaling"
FIT = "fedkit_fit"
EVALUATE = "fedkit_evaluate"
EVALUATE_PERSONAL = "fedkit_evaluate_personal"
EVALUATE_FIT = "fedkit_evaluate_fit"
"""A round's evaluation with the next round's training from the same parameters: one task instead of two."""
SECAGG = "fedkit_secagg"
RESTORE = "fedkit_restore"
TASKS: tuple[str, ...] = (
    HELLO,
    MOMENTS,
    SCALING,
    FIT,
    EVALUATE,
    EVALUATE_PERSONAL,
    EVALUATE_FIT,
    SECAGG,
    RESTORE,
)
EVENTS_TOPIC = "fedkit.events"
"""App command the controller registers; the notebook polls it for the run's tracker calls."""
RESULT_FILE = "fedkit_result.json"
"""Written by the controller into the job's server workspace; read back from the downloaded job result."""


def pack(array: np.ndarray | None, compress: bool = False) -> dict[str, Any] | None:
    """An array as a dict of dtype, shape and raw bytes (exact, any size); ``compress`` deflates the bytes (zlib).

    Compression pays for sparse arrays such as an evaluation-statistics vector in the clear
    (131 kB raw, a few hundred bytes deflated); masked vectors are random and do not compress.

    Parameters
    ----------
    array
        The array (None passes through).
    compress
        Deflate the bytes (zlib).
    """
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    data = zlib.compress(array.tobytes()) if compress else array.tobytes()
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": data, **({"zlib": True} if compress else {})}


def unpack(packed: dict[str, Any] | None) -> np.ndarray | None:
    """The array :func:`pack` encoded (a fresh, writable copy).

    Parameters
    ----------
    packed
        A dict :func:`pack` made (None passes through).
    """
    if packed is None:
        return None
    data = zlib.decompress(packed["data"]) if packed.get("zlib") else packed["data"]
    return np.frombuffer(data, dtype=np.dtype(packed["dtype"])).reshape(packed["shape"]).copy()


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


class Field(NamedTuple):
    """One field a site sends: its shape (P = model parameters, F = features, B = histogram bins) and why.

    Parameters
    ----------
    shape
        Its shape (P = model parameters, F = features, B = histogram bins).
    why
        Why the server needs it.
    """

    shape: str
    why: str


_EVALUATION = {
    "metrics": Field("{loss, auc, accuracy}: 3 floats", "the site's exact metrics of that model on its own test rows"),
    "stats": Field(
        "7 + 2B float64 (B = 8192), deflated",
        "n, loss sum, confusion counts at 0.5, rows with a non-finite score and the class-conditional score "
        "histograms on fixed bins: the "
        "pooled loss and accuracy (exact) and AUC (within the bound); in the clear only without secure aggregation",
    ),
}
_TRAINING = {
    "train_loss": Field("float", "mean train loss of the local update (the local model's train curve)"),
    "steps": Field("int", "local optimizer steps taken"),
    "local_metrics": Field("{loss, auc, accuracy}: 3 floats", "the local model's exact metrics on its test rows"),
    "params": Field("P float32", "the local model (personal coordinates replaced); without secure aggregation"),
    "control_delta": Field("P float32 or none", "SCAFFOLD's control-variate change; without secure aggregation"),
}
_NEXT_SUM = {
    "advert": Field(
        "2 public keys (32 bytes each), certificate, signature",
        "step 1 of the next secure sum: its fresh X25519 keys, signed with the site's certificate",
    )
}
_MASKED = {
    "masked": Field(
        "8 bytes per summed entry: P + 1 (+ P for SCAFFOLD) for training, 7 + 2B for evaluation, 3F for moments",
        "step 3 of secure aggregation: the site's vector (weighted update and train size, statistics or moments) "
        "in Z_2^64, masked",
    ),
    **_NEXT_SUM,
}
SENT_BY_SITE: dict[str, dict[str, Field]] = {
    HELLO: {
        "silo": Field("string", "the site's name (its FLARE identity)"),
        "n_train": Field("int", "train rows: FedAvg's weight and fine-tuning's step count"),
        "n_test": Field("int", "test rows: the denominators of the pooled metrics"),
        "test_positives": Field("int", "positive test rows: says why a silo's AUC is undefined (one class)"),
        "features": Field("F strings", "the encoded feature names, checked equal across sites"),
        "schema": Field("sha256 hex", "the schema fingerprint; the server refuses a site with another"),
        "data": Field("file name, sha256, verified", "provenance of the rows the site read (no path, no rows)"),
        "fedkit_version": Field("string", "every site must run the server's fedkit"),
        "nvflare_version": Field("string", "the site's NVIDIA FLARE, for the audit log"),
        "silo_sha256": Field(
            "sha256 hex", "checksum of the site's own train/test rows: the audit log's, checked again on resume"
        ),
        "identity": Field(
            "certificate (public) or none",
            "the site's certificate, in the audit log: anyone can check its signed statements later",
        ),
    },
    MOMENTS: {
        "moments": Field(
            "3F float64", "count, sum, sum of squares per feature: standardize='federated' (in the clear)"
        ),
        **_MASKED,
    },
    SCALING: {},
    FIT: {
        **_TRAINING,
        "statement": Field(
            "{run_id, round, silo, bound, accepted, kind, reason}",
            "under secure aggregation: the site's verdict on its own update (shape, finiteness, norm bound), no norm",
        ),
        "signature": Field("signature (~256 bytes)", "the statement signed with the site's certificate key"),
        **_MASKED,
    },
    EVALUATE: {**_EVALUATION, **_MASKED},
    EVALUATE_PERSONAL: {**_EVALUATION, **_MASKED},
    EVALUATE_FIT: {**_EVALUATION, **_TRAINING},  # in the clear only; training fields from the sites that train
    SECAGG: {
        "shares": Field(
            "one 65-byte share per surviving or dropped neighbour",
            "step 4 of a secure sum: the shares the server needs to remove the masks, never both secrets of one site",
        ),
        "bundle": Field(
            "one AES-GCM ciphertext per neighbour (~200 bytes each)",
            "step 2 of the next secure sum: Shamir shares of its two secrets, readable only by their holders",
        ),
        **_NEXT_SUM,
    },
    RESTORE: {
        "restored": Field("int or none", "the round whose state the site reloaded from its own file (resume)"),
    },
}
"""Every field of every reply a site sends, by task: the documented list (docs "What leaves a hospital")."""
