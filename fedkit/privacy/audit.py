"""A run's audit log: append-only records, each carrying the SHA-256 hash of the record before it.

A record is a JSON object with ``run_id``, ``seq`` (0, 1, 2...), ``kind`` and ``prev`` (the previous
record's ``hash``; :data:`GENESIS` for the first), plus its own fields; its ``hash`` is SHA-256 over
the canonical JSON encoding of everything else (sorted keys, no spaces, UTF-8, no NaN). Editing a
record changes its hash; removing, reordering or inserting records breaks the ``prev`` links, so
:func:`verify` names the first record that is not where the chain says it should be.

What a chain cannot show alone: someone who rewrites *every* record after an edit (recomputing all
hashes) makes a new valid chain. Anchor the head: the hash of the last record (printed by
``fedkit audit verify``) kept by a second party, e.g. the submitting machine of a remote run,
turns that into a detectable change too.

Kinds written by the round loop (see :func:`start_record` and friends): ``start`` (who, versions,
config hash, data checksums, validation and DP settings), ``round`` (selected and participating
silos, each update's norm and verdict, the global parameters' hash, DP spending), ``resume`` and
``end``. These functions are pure; the run store keeps the records (:mod:`fedkit.tracking.local`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedkit.errors import AuditError

GENESIS = "0" * 64
"""The ``prev`` of a run's first record."""


def canonical(value: Any) -> bytes:
    """The canonical JSON encoding that is hashed: sorted keys, compact separators, UTF-8, NaN refused.

    Parameters
    ----------
    value
        A JSON-ready value (dicts, lists, strings, finite numbers, booleans, None).
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def digest(value: Any) -> str:
    """SHA-256 (hex) of ``value``'s canonical JSON encoding.

    Parameters
    ----------
    value
        A JSON-ready value.
    """
    return hashlib.sha256(canonical(value)).hexdigest()


def array_digest(values: np.ndarray) -> str:
    """SHA-256 (hex) of an array's dtype, shape and bytes (e.g. the global parameters after a round).

    Parameters
    ----------
    values
        Any numpy array.
    """
    values = np.ascontiguousarray(values)
    head = f"{values.dtype.str}{values.shape}".encode()
    return hashlib.sha256(head + values.tobytes()).hexdigest()


def record_hash(record: Mapping[str, Any]) -> str:
    """The hash a record must carry: the digest of all its fields but ``hash``.

    Parameters
    ----------
    record
        An audit record (its ``hash`` field, if any, is left out).
    """
    return digest({k: v for k, v in record.items() if k != "hash"})


@dataclass
class Chain:
    """The writing end of one run's log: the next sequence number and the head hash.

    Parameters
    ----------
    run_id
        The run the log belongs to (in every record).
    seq
        The sequence number of the next record.
    head
        The hash of the last record (:data:`GENESIS` before the first).
    """

    run_id: str
    seq: int = 0
    head: str = GENESIS

    @classmethod
    def after(cls, records: Sequence[Mapping[str, Any]], run_id: str) -> Chain:
        """The chain that continues ``records`` (a run's log read back, e.g. to resume it).

        Parameters
        ----------
        records
            The run's records so far, in order.
        run_id
            The run.
        """
        if not records:
            return cls(run_id)
        return cls(run_id, int(records[-1]["seq"]) + 1, str(records[-1]["hash"]))

    def append(self, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The next record of ``kind`` with ``fields``, linked and hashed; advances the chain.

        Parameters
        ----------
        kind
            The record's kind: start, round, resume or end.
        fields
            The record's own fields (JSON-ready, no NaN).
        """
        record = {**fields, "run_id": self.run_id, "seq": self.seq, "kind": kind, "prev": self.head}
        record["hash"] = record_hash(record)
        self.seq, self.head = self.seq + 1, record["hash"]
        return record


def verify(
    records: Sequence[Mapping[str, Any]],
    run_id: str,
    *,
    ended: bool = False,
    after: Mapping[str, Any] | None = None,
) -> str:
    """Check a run's log as stored (in storage order); returns the head hash, or raises naming the first bad record.

    Raises :class:`~fedkit.errors.AuditError` for the first record that was edited (its content does
    not give its hash), removed (a gap in the sequence), reordered (a record of another position),
    appended out of chain (its ``prev`` is not the previous record's hash) or belongs to another run.
    ``ended``: the run has ended, so its log must close with an ``end`` record (records removed from the
    end are found this way). ``after``: ``records`` are the log's continuation after this record, already
    checked (a copy that grows a round at a time is checked in its new records only).

    Parameters
    ----------
    records
        The run's records in storage order (with ``after``: the ones that follow it).
    run_id
        The run they must all belong to.
    ended
        The run has ended, so its log must close with an ``end`` record.
    after
        The record before ``records``, checked before (None: ``records`` start the log).
    """
    head = GENESIS if after is None else str(after["hash"])
    first = 0 if after is None else int(after["seq"]) + 1
    previous = after
    by_seq = {r.get("seq") for r in records}
    for position, record in enumerate(records, start=first):
        seq = record.get("seq")
        where = f"Audit record {position} of run {run_id}"
        if record.get("hash") != record_hash(record):
            raise AuditError(f"{where} was edited: its content does not hash to the hash it carries.")
        if record.get("run_id") != run_id:
            raise AuditError(f"{where} belongs to run {record.get('run_id')!r}: it was copied in from another log.")
        if seq != position:
            if isinstance(seq, int) and seq > position and position not in by_seq:
                raise AuditError(f"{where} is missing (removed): record {seq} follows record {position - 1}.")
            raise AuditError(f"{where} is out of order (reordered): it holds record {seq}.")
        if record.get("prev") != head:
            raise AuditError(
                f"{where} does not continue the chain (appended out of chain, or the record before it was "
                "replaced): its prev hash is not the hash of the record before it."
            )
        if previous is not None and previous.get("kind") == "end" and record.get("kind") != "resume":
            raise AuditError(f"{where} was appended after the run's end record without a resume record.")
        head, previous = str(record["hash"]), record
    if ended and (previous is None or previous.get("kind") != "end"):
        last = first + len(records) - 1
        raise AuditError(
            f"The audit log of run {run_id} ends at record {last} without an end record although the run has "
            f"ended: the records after {last} were removed."
        )
    return head


def start_record(
    config: Mapping[str, Any],
    data: Mapping[str, Any],
    silos: Mapping[str, str],
    *,
    user: str,
    versions: Mapping[str, str | None],
    dp: Mapping[str, Any] | None = None,
    sites: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields of a run's first record.

    Parameters
    ----------
    config
        The RunConfig fields (kept whole, and hashed as ``config_sha256``).
    data
        The data provenance: folder, file checksums, whether they matched the pins.
    silos
        Each silo's data checksum as it reported it (:func:`silo_checksums`).
    user
        Who started the run: the OS user, or the FLARE admin identity of a remote run.
    versions
        fedkit's and NVIDIA FLARE's versions (None when not installed).
    dp
        The differential-privacy parameters when DP is on (noise multiplier, clip, delta, accountant); None
        otherwise: the hook the DP integration fills.
    sites
        Remote runs: what each site reported of itself at hello (its fedkit and NVIDIA FLARE versions, its
        identity's certificate), by site; None in simulation.
    """
    record = {
        "config": dict(config),
        "config_sha256": digest(dict(config)),
        "data": dict(data),
        "silos": dict(silos),
        "user": user,
        "versions": dict(versions),
        "dp": None if dp is None else dict(dp),
    }
    return record if sites is None else {**record, "sites": {k: dict(v) for k, v in sites.items()}}


def round_record(
    server_round: int,
    selected: Sequence[str],
    verdicts: Sequence[Any],
    params: np.ndarray,
    *,
    dp: Mapping[str, Any] | None = None,
    attestations: Sequence[Mapping[str, Any]] = (),
    participants: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The fields of a round's record.

    Parameters
    ----------
    server_round
        The round (0: the initial model).
    selected
        The silos asked to train.
    verdicts
        A :class:`~fedkit.privacy.validation.Verdict` per silo that replied: its update's norm, accepted or rejected
        and why.
    params
        The global parameters after the round (recorded as their SHA-256).
    dp
        The round's DP spending when DP is on (e.g. ``{"epsilon": ..., "delta": ...}`` so far); None otherwise.
    attestations
        Remote sites under secure aggregation: each site's signed statement of its own check of its update
        (:func:`fedkit.privacy.validation.statement` with its signature), as the server verified it.
    participants
        The silos whose update is in the aggregate (default: those the verdicts accept; under remote secure
        aggregation a site can drop out of the sum after its update was accepted).
    """
    updates = [{"silo": v.silo, "norm": v.norm, "accepted": v.accepted, "reason": v.reason} for v in verdicts]
    record = {
        "round": server_round,
        "selected": list(selected),
        "participants": [v.silo for v in verdicts if v.accepted] if participants is None else list(participants),
        "updates": updates,
        "params_sha256": array_digest(params),
        "dp": None if dp is None else dict(dp),
    }
    return {**record, "attestations": [dict(a) for a in attestations]} if attestations else record


def silo_checksums(silos: Sequence[Any]) -> dict[str, str]:
    """Each silo's data checksum: SHA-256 over its train and test arrays (what a site reports of its own rows).

    Parameters
    ----------
    silos
        Silos with ``name``, ``x_train``, ``y_train``, ``x_test`` and ``y_test``.
    """
    out = {}
    for silo in silos:
        h = hashlib.sha256()
        for values in (silo.x_train, silo.y_train, silo.x_test, silo.y_test):
            h.update(array_digest(np.asarray(values)).encode())
        out[silo.name] = h.hexdigest()
    return out
