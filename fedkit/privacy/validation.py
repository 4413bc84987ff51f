"""Checks on every silo update before it is aggregated: shape and dtype, finite values, an L2 norm bound.

Pure functions over arrays; the round loop calls :func:`validate_updates` once per round, for every
engine, and leaves the rejected updates out of the aggregate. An update is the silo's local
parameters minus the global parameters it started from. It is rejected when

- its shape or dtype differs from the global model's (a silo running another model or encoding);
- its local training loss or any of its values is not finite (the local training diverged);
- its L2 norm exceeds the round's bound: ``max_update_norm`` (absolute), and/or ``max_norm_ratio``
  times the median norm of the round's well-formed updates (relative, so it needs no tuning to the
  model's scale). With both set the smaller bound applies.

A norm bound is the usual first line against model poisoning by a few silos (Sun et al. 2019,
"Can You Really Backdoor Federated Learning?", norm bounding); a robust aggregator (FedMedian,
Krum, trimmed mean) is the second. Neither inspects what an update *means*: an update of ordinary
size that pulls the model in a bad direction passes both checks.

Under secure aggregation on remote sites the server sees no update: each site runs the same checks
on its own update before masking it and answers with a :func:`statement` of the verdict, signed
with its site identity; the server reads the verdicts back with :func:`verdict_from_statement`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedkit.errors import RoundFailedError

KINDS: tuple[str, ...] = ("shape", "dtype", "loss", "nonfinite", "norm", "statement")
"""Why an update can be rejected, as short codes (the ``kind`` of a rejection's :class:`Verdict`); ``statement``:
a remote site's signed statement of its own check is missing or does not verify (secure aggregation)."""


@dataclass(frozen=True)
class Verdict:
    """What validation decided about one silo's update in one round.

    ``norm`` is the update's L2 norm (None when it has none: wrong shape or non-finite values);
    ``kind`` is one of :data:`KINDS` and ``reason`` a sentence fragment about the silo ("its update
    ...") when the update is rejected; both are None when it is accepted.

    Parameters
    ----------
    silo
        The silo whose update it is.
    norm
        The update's L2 norm (None when it has none: wrong shape or non-finite values).
    kind
        Why it was rejected, one of :data:`KINDS` (None: accepted).
    reason
        Why it was rejected, as a sentence fragment about the silo ("its update ..."; None: accepted).
    """

    silo: str
    norm: float | None
    kind: str | None = None
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        """Whether the update goes into the aggregate."""
        return self.kind is None


def malformed(local: np.ndarray, reference: np.ndarray, loss: float | None) -> tuple[str, str] | None:
    """``(kind, reason)`` when ``local`` cannot be aggregated with ``reference``'s model, else None.

    Checks in order: shape, dtype, a finite local ``loss``, finite values.

    Parameters
    ----------
    local
        The silo's local parameters after its training.
    reference
        The global parameters it started from.
    loss
        Its mean local training loss (None when it was not computed: then not checked).
    """
    local = np.asarray(local)
    if local.shape != reference.shape:
        return "shape", f"its update has shape {local.shape} but the global model has shape {reference.shape}"
    if local.dtype != reference.dtype:
        return "dtype", f"its update has dtype {local.dtype} but the global model has dtype {reference.dtype}"
    if loss is not None and not np.isfinite(loss):
        return "loss", f"its local training loss is {loss} (not finite): the local training diverged"
    finite = np.isfinite(local)
    if not finite.all():
        n_nan = int(np.isnan(local).sum())
        n_inf = int((~finite).sum()) - n_nan
        return "nonfinite", (
            f"its update has {n_nan} NaN and {n_inf} infinite value(s) of {local.size}: the local training diverged"
        )
    return None


def update_norm(local: np.ndarray, reference: np.ndarray) -> float:
    """L2 norm of ``local - reference`` in float64 (no overflow for float32 parameters up to their maximum).

    Parameters
    ----------
    local
        The silo's local parameters.
    reference
        The global parameters it started from.
    """
    diff = (np.asarray(local, dtype=np.float64) - np.asarray(reference, dtype=np.float64)).ravel()
    return math.sqrt(diff.dot(diff))  # numpy.linalg.norm's own formula for a vector, without its checks


def norm_bound(
    norms: Sequence[float], max_update_norm: float | None = None, max_norm_ratio: float | None = None
) -> float | None:
    """The round's norm bound: the smaller of ``max_update_norm`` and ``max_norm_ratio`` x the median of ``norms``.

    None when neither is set (or the ratio is set and there are no norms).

    Parameters
    ----------
    norms
        The L2 norms of the round's well-formed updates.
    max_update_norm
        The absolute bound (None: none).
    max_norm_ratio
        The bound as a multiple of the median of ``norms`` (None: none).
    """
    bounds = [] if max_update_norm is None else [max_update_norm]
    if max_norm_ratio is not None and len(norms):
        bounds.append(max_norm_ratio * float(np.median(norms)))
    return min(bounds) if bounds else None


def _too_large(norm: float, max_update_norm: float | None, max_norm_ratio: float | None, median: float) -> str:
    if max_update_norm is not None and norm > max_update_norm:
        return f"its update's L2 norm {norm:.4g} exceeds max_update_norm={max_update_norm:g}"
    return (
        f"its update's L2 norm {norm:.4g} exceeds max_norm_ratio={max_norm_ratio:g} x the round's median "
        f"update norm {median:.4g}"
    )


def _checked(
    local_params: Sequence[np.ndarray], losses: Sequence[float | None], params: np.ndarray
) -> tuple[list[tuple[str, str] | None], list[float | None]]:
    """Each update's :func:`malformed` problem and, when well-formed, its :func:`update_norm`.

    When every update has the global model's shape and dtype, a finite loss and finite values (the usual
    round), this takes one pass over the stacked updates instead of one per update; the norms are the same
    floats (the same subtraction and dot product, row by row).
    """
    reference = np.asarray(params)
    usual = all(
        isinstance(p, np.ndarray) and p.shape == reference.shape and p.dtype == reference.dtype for p in local_params
    ) and all(loss is None or math.isfinite(loss) for loss in losses)
    if usual and local_params:
        stacked = np.stack(local_params)
        if np.isfinite(stacked).all():
            diffs = stacked.astype(np.float64).reshape(len(local_params), -1) - reference.astype(np.float64).ravel()
            return [None] * len(local_params), [math.sqrt(row.dot(row)) for row in diffs]
    problems = [malformed(p, params, loss) for p, loss in zip(local_params, losses, strict=True)]
    norms = [None if bad else update_norm(p, params) for p, bad in zip(local_params, problems, strict=True)]
    return problems, norms


def validate_updates(
    silos: Sequence[str],
    local_params: Sequence[np.ndarray],
    losses: Sequence[float | None],
    params: np.ndarray,
    *,
    max_update_norm: float | None = None,
    max_norm_ratio: float | None = None,
) -> list[Verdict]:
    """One :class:`Verdict` per silo for the local parameters it sent back from global ``params``.

    ``losses`` are the silos' mean local training losses. Malformed updates (see :func:`malformed`)
    are rejected first; the median of ``max_norm_ratio`` is taken over the well-formed ones only.
    Inputs are not modified.

    Parameters
    ----------
    silos
        The names of the silos that replied.
    local_params
        Each one's local parameters, in the same order.
    losses
        Each one's mean local training loss (None where it was not computed: not checked).
    params
        The global parameters the round started from.
    max_update_norm
        Reject an update whose L2 norm exceeds this (None: no absolute bound).
    max_norm_ratio
        Reject an update whose L2 norm exceeds this multiple of the median norm (None: no relative bound).
    """
    problems, norms = _checked(local_params, losses, params)
    good = [n for n in norms if n is not None]
    bound = norm_bound(good, max_update_norm, max_norm_ratio)
    verdicts = []
    for silo, norm, bad in zip(silos, norms, problems, strict=True):
        if bad is not None:
            verdicts.append(Verdict(silo, None, *bad))
        elif bound is not None and norm is not None and norm > bound:
            median = float(np.median(good))
            verdicts.append(Verdict(silo, norm, "norm", _too_large(norm, max_update_norm, max_norm_ratio, median)))
        else:
            verdicts.append(Verdict(silo, norm))
    return verdicts


def statement(run_id: str, server_round: int, silo: str, bound: float | None, verdict: Verdict) -> dict[str, Any]:
    """What a site signs about its own check of its update before masking it (secure aggregation, remote).

    "In round ``server_round`` of run ``run_id``, silo ``silo`` checked its update against the
    norm bound ``bound`` (None: none) and the shape, dtype and finiteness checks: accepted, or
    rejected for ``kind`` / ``reason``". No norm, not even in the reason of a rejection: the server
    learns none under secure aggregation.

    Parameters
    ----------
    run_id
        The run's id.
    server_round
        The round.
    silo
        The site's silo name.
    bound
        The absolute norm bound it checked against (``max_update_norm``), or None.
    verdict
        Its own :class:`Verdict` on its update (:func:`validate_updates` of its one update).
    """
    reason = verdict.reason
    if verdict.kind == "norm":
        reason = f"its update's L2 norm exceeds max_update_norm={bound:g} (checked on the site, before masking)"
    return {
        "run_id": run_id,
        "round": int(server_round),
        "silo": silo,
        "bound": None if bound is None else float(bound),
        "accepted": verdict.accepted,
        "kind": verdict.kind,
        "reason": reason,
    }


def verdict_from_statement(silo: str, signed: Mapping[str, Any] | None) -> Verdict:
    """The :class:`Verdict` a site's verified statement gives (a missing one rejects the update, kind ``statement``).

    Parameters
    ----------
    silo
        The silo whose reply it is.
    signed
        ``{"statement": ..., "signature": ...}`` as the engine checked it (:func:`statement`), or None.
    """
    said = (signed or {}).get("statement")
    if not said:
        return Verdict(silo, None, "statement", "it sent no signed statement of its own check of its update")
    if said["accepted"]:
        return Verdict(silo, None)
    return Verdict(silo, None, str(said["kind"]), str(said["reason"]))


def divergence_hint(lr: float, optimizer: str) -> str:
    """The likely cause and fix of a non-finite local update, for the messages that report one.

    Parameters
    ----------
    lr
        The run's local learning rate.
    optimizer
        The run's local optimizer.
    """
    return (
        f"likely cause: the local learning rate is too large for this model (lr={lr:g} with {optimizer}); "
        f"lower lr (e.g. lr={lr / 10:g}) or bound the updates with max_update_norm"
    )


def rejection_note(server_round: int, verdict: Verdict, kept: int, replied: int, hint: str) -> str:
    """The run's note about one rejected update: round, silo, reason, and how many updates the round kept.

    Parameters
    ----------
    server_round
        The round.
    verdict
        The rejected update's verdict.
    kept
        How many of the round's updates were accepted.
    replied
        How many silos replied.
    hint
        The likely cause and fix of a diverged update (:func:`divergence_hint`).
    """
    fix = f" ({hint})" if verdict.kind in ("loss", "nonfinite") else ""
    return (
        f"Round {server_round}: the update of silo {verdict.silo!r} was rejected: {verdict.reason}{fix}; "
        f"the round went on with {kept} of {replied} updates."
    )


def check_enough(server_round: int, verdicts: Sequence[Verdict], min_silos: int, hint: str) -> None:
    """Raise :class:`~fedkit.errors.RoundFailedError` when fewer than ``min_silos`` updates (or none) were accepted.

    The message names the round, every rejected silo and its reason, and the fix.

    Parameters
    ----------
    server_round
        The round.
    verdicts
        The round's verdicts, one per reply.
    min_silos
        The fewest accepted updates the round may aggregate.
    hint
        The likely cause and fix of a diverged update (:func:`divergence_hint`).
    """
    kept = sum(v.accepted for v in verdicts)
    if kept >= max(min_silos, 1):
        return
    rejected = [v for v in verdicts if not v.accepted]
    by_reason: dict[str, list[str]] = {}
    for v in rejected:
        by_reason.setdefault(str(v.reason), []).append(repr(v.silo))
    reasons = "; ".join(
        f"silo{'s' if len(names) > 1 else ''} {', '.join(names)}: {reason}" for reason, names in by_reason.items()
    )
    diverged = any(v.kind in ("loss", "nonfinite") for v in rejected)
    fix = hint if diverged else "check those silos' data and model, or relax max_update_norm / max_norm_ratio"
    raise RoundFailedError(
        f"Round {server_round}: only {kept} of {len(verdicts)} updates passed validation and the run needs "
        f"min_silos={min_silos}. Rejected: {reasons}. The run stopped; {fix}.",
        server_round=server_round,
        silos=tuple(v.silo for v in rejected),
    )


def check_global(server_round: int, params: np.ndarray, strategy: str) -> None:
    """Raise :class:`~fedkit.errors.RoundFailedError` when the aggregated global parameters are not all finite.

    Parameters
    ----------
    server_round
        The round.
    params
        The aggregated global parameters.
    strategy
        The strategy that aggregated them (named in the message).
    """
    if np.isfinite(params).all():
        return
    bad = int((~np.isfinite(params)).sum())
    raise RoundFailedError(
        f"Round {server_round}: the aggregated global model has {bad} non-finite value(s) of {params.size} although "
        f"every accepted update was finite: the server step of {strategy!r} diverged. Lower server_lr, or bound "
        "the updates with max_update_norm / max_norm_ratio.",
        server_round=server_round,
        silos=(),
    )
