"""The engine interface: how parameters reach the silos and come back. The round loop needs nothing else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedkit.evalstats import site_stats
from fedkit.intervals import grouped_intervals
from fedkit.metrics import METRICS, grouped_metrics
from fedkit.privacy.summation import Summation, UpdateSum
from fedkit.strategies.base import LocalTerm


@dataclass(frozen=True)
class SiloEvaluation:
    """One silo's evaluation of one model, computed on the silo: exact metrics and its test class counts.

    Aggregates only: the server can explain an undefined AUC without any label.

    Parameters
    ----------
    silo
        The silo's name.
    metrics
        The model's metrics (loss, auc, accuracy) on all its test rows.
    n
        Its test rows.
    positives
        The positives among them.
    intervals
        The 95% intervals of its AUC and accuracy (:mod:`fedkit.intervals`), when computed on the silo.
    """

    silo: str
    metrics: dict[str, float]
    n: int
    positives: int
    intervals: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """A model's evaluation over silos: each silo's own metrics, and the sum of their evaluation statistics.

    Pooled loss and accuracy are exact from ``pooled``, pooled AUC from its histograms.

    Parameters
    ----------
    silos
        Each silo's :class:`SiloEvaluation`.
    pooled
        The sum of the silos' :func:`fedkit.evalstats.site_stats` vectors (in the clear or under secure
        aggregation), else None (not summed).
    """

    silos: list[SiloEvaluation]
    pooled: np.ndarray | None = None


def evaluate_silos(
    names: Sequence[str],
    labels: Sequence[np.ndarray],
    logits: Sequence[np.ndarray],
    *,
    pooled: bool = True,
    summation: Summation | None = None,
) -> Evaluation:
    """Each silo's metrics in one grouped pass, and the pooled statistics: summed by ``summation`` or directly.

    Parameters
    ----------
    names, labels, logits
        Per silo: its name, test labels and a model's logits on its test rows.
    pooled
        Also sum the silos' statistics (not needed for the ``local`` models, scored per silo only).
    summation
        How the per-silo statistics are summed (secure aggregation); None sums the concatenated rows'
        statistics directly, which equals the sum of the silos' vectors (counts exactly).

    Returns
    -------
    Evaluation
        Per-silo :class:`SiloEvaluation` and the pooled statistics vector.
    """
    y, z = np.concatenate(labels), np.concatenate(logits)
    sizes = [len(v) for v in labels]
    group = np.repeat(np.arange(len(sizes)), sizes)
    values = grouped_metrics(y, z, group, len(sizes))
    bounds = grouped_intervals(y, z, group, len(sizes))
    positives = np.bincount(group, y, minlength=len(sizes)).astype(np.int64).tolist()
    columns = {m: np.asarray(values[m], dtype=np.float64).tolist() for m in METRICS}  # as float() of each
    limits = {k: np.asarray(v, dtype=np.float64).tolist() for k, v in bounds.items()}
    silos = [
        SiloEvaluation(
            name,
            {m: columns[m][i] for m in METRICS},
            sizes[i],
            positives[i],
            {k: v[i] for k, v in limits.items()},
        )
        for i, name in enumerate(names)
    ]
    if not pooled:
        return Evaluation(silos)
    if summation is None:
        return Evaluation(silos, site_stats(y, z))
    stats = {name: site_stats(yi, zi) for name, yi, zi in zip(names, labels, logits, strict=True)}
    return Evaluation(silos, summation(stats))


@dataclass(frozen=True)
class FitReply:
    """What one silo returns from a round.

    Parameters
    ----------
    silo
        The silo's name.
    params
        Its local parameters (personal coordinates replaced by the global ones; None when the engine
        sums them under secure aggregation, see :meth:`Engine.sum_updates`).
    n_train
        Its train size.
    train_loss
        Mean train loss over its steps.
    steps
        Step count.
    local_test
        Its local model's evaluation on its own test set (None when not asked for: a sweep that
        records only final evaluations).
    control_delta
        SCAFFOLD's change of its control variate, else None.
    attestation
        Remote sites under secure aggregation: the site's signed statement of its own check of its update
        (``{"statement": ..., "signature": ...}``, see :func:`fedkit.privacy.validation.statement`), as the
        engine verified it; None otherwise.
    """

    silo: str
    params: np.ndarray | None
    n_train: int
    train_loss: float
    steps: int
    local_test: SiloEvaluation | None
    control_delta: np.ndarray | None = None
    attestation: Mapping[str, Any] | None = None


class Engine(Protocol):
    """Moves parameters to silos and back; simulation runs them in-process, remote over a network.

    Besides training and scoring, an engine keeps ``notes`` (sentences about its silos that the run
    reports: dropouts, rejoins) and can export and re-import the state its silos keep between rounds
    (:meth:`state` / :meth:`restore`), which the round loop checkpoints after every round so that a
    killed run can be resumed exactly.
    """

    notes: list[str]
    """Sentences about the silos the run should report (dropouts, rejoins), appended as they happen."""

    @property
    def silos(self) -> tuple[str, ...]:
        """Names of all silos, in order."""
        ...

    def initial_params(self) -> np.ndarray:
        """The seeded initial global parameters."""
        ...

    def fit(
        self, params: np.ndarray, server_round: int, silos: Sequence[str], term: LocalTerm | None = None
    ) -> list[FitReply]:
        """Local training of ``silos`` from ``params`` in round ``server_round``, adding the strategy's local term.

        Parameters
        ----------
        params
            The global parameters of the round.
        server_round
            The round (1-based).
        silos
            Names of the silos that train this round.
        term
            The strategy's local term (None for server-only strategies).

        Returns
        -------
        list[FitReply]
            One reply per silo, in the order of ``silos``.
        """
        ...

    def evaluate(self, params: np.ndarray) -> Evaluation:
        """Evaluation of the global parameters on every silo's test set.

        Parameters
        ----------
        params
            The global parameters.
        """
        ...

    def evaluate_personal(self, params: np.ndarray, server_round: int) -> Evaluation:
        """Evaluation of each silo's own model on its own test set (asked when ``RunConfig.scored`` is personal).

        Parameters
        ----------
        params
            The global parameters.
        server_round
            The round (0 is the initial model).
        """
        ...

    def sum_updates(self, replies: Sequence[FitReply], params: np.ndarray) -> UpdateSum:
        """The sum of the replies' updates under secure aggregation (called only when the run asks for it).

        Parameters
        ----------
        replies
            The round's fit replies.
        params
            The global parameters the silos started the round from.
        """
        ...

    def state(self) -> dict[str, np.ndarray]:
        """The state the silos keep between rounds (control variates, personal parameters...), as named arrays.

        The round loop stores it with each round's checkpoint; it must hold everything :meth:`restore`
        needs so that the rounds after it run exactly as they would have. An engine whose silos keep
        their state themselves (remote sites) returns what identifies it (e.g. the round) and keeps the
        arrays on the sites.
        """
        ...

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Return the silos to a :meth:`state` this engine (or one built from the same config) exported.

        Parameters
        ----------
        state
            What :meth:`state` returned.
        """
        ...
