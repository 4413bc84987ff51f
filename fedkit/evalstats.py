"""Aggregate-only evaluation: the sufficient statistics a site sends instead of per-patient scores.

Per model and per round a site computes, on its own test rows, one flat float64 vector whose
length does not depend on how many rows it has (:func:`site_stats`)::

    index        name       meaning
    0            n          rows scored
    1            loss_sum   sum over rows of the binary cross-entropy from logits,
                            log(1 + exp(z)) - y z (the formula of fedkit.metrics.grouped_metrics)
    2, 3, 4, 5   tp fp tn fn  confusion counts at probability 0.5 (predicted positive iff z > 0)
    6            diverged   rows whose logit is not finite (a diverged model); they are in no other entry
    7 .. 7+B-1   positive   histogram of the logits of the rows with label 1 on the fixed bins
    7+B .. 7+2B-1 negative  histogram of the logits of the rows with label 0

Counts are whole numbers stored as float64 (exact up to 2**53). Vectors add up: the server, or
secure aggregation, sums them (:func:`sum_stats`) and :func:`metrics_from_stats` gives the pooled
loss and accuracy exactly and the pooled ROC AUC from the summed histograms. Per-silo metrics are
computed on the site from its own labels and logits, exactly (:func:`evaluate_on_site`). A sum with any
``diverged`` row gives null (NaN) metrics, as a silo's own metrics are then: a number computed from
non-finite scores would mean nothing.

**Bins.** :data:`BINS`: 8192 bins, uniform in ``asinh(z / 0.1)`` between ``±asinh(1000 / 0.1)``
(logits beyond ±1000 fall in the end bins). A bin is about 2.4e-4 logits wide near 0 and 0.24 % of
``|z|`` beyond ``|z| ≈ 0.1``: fine where fedkit's scores crowd (a fresh model's logits spread
over ±0.5) and still relative at the ±20–130 of unstandardized features. Edges are explicit logits
and a score's bin is found by ``searchsorted``, so a higher bin always holds higher scores.

**AUC bound.** For a positive i and a negative j, the exact AUC counts 1 if z_i > z_j, 1/2 if
equal, 0 otherwise; the histogram AUC counts 1 if bin(i) > bin(j), 1/2 if the bins are equal, 0
otherwise. Bins are ordered intervals, so when the bins differ both count the same. When they
share a bin, they differ by at most 1/2, and not at all when z_i == z_j. Averaging over the P·N
pairs::

    |AUC_hist - AUC| <= 0.5 × (pairs sharing a bin with different scores) / (P·N)
                     <= 0.5 × Σ_b pos_b · neg_b / (P·N)   (:func:`auc_error_bound`, from the sums alone)

Measured with these bins: worst ``|AUC_hist - AUC|`` 4.9e-4 over every pooled evaluation (global,
local and personal models, every round) of eight fedkit runs (flamby FedAvg; hospitals
fine-tuning; MLP FedPer; local baselines; Dirichlet 20 silos MLP/Adam; FedAdam with federated
standardization; standardize="none" logreg and MLP), and 1.7e-4 over 1000 seeded random pooled
score sets (2–8 silos of 20–2000 rows, spreads 0.05–20 logits, ±30 and ±1000 extremes, ties).
The bound computed from the sums, ties included, stays under 4.8e-4 for every run with
standardized features, so there the 1e-3 guarantee holds by proof, not only by measurement. With
standardize="none" the scores sit far from 0 relative to their spread: the bound reaches 1.3e-3
without ties (4.9e-3 counting the MLP's tied scores, which cause no error) while the measured
error stays at 4.9e-4. The server can report the bound of every round (:func:`auc_error_bound`).

**Privacy.** Bins this fine are finer than the spacing of a site's scores: one site's histogram
is its list of per-patient scores (to 0.24 %) with their labels, only unordered. Under secure
aggregation the server sees only the sum over sites, i.e. the pooled scores without their site
(with two sites, each can subtract its own from the sum). Without secure aggregation the
server learns each site's scores and labels to the bin width, about what the old per-patient
logits revealed; coarser bins would blur that only at the cost of the 1e-3 AUC guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from fedkit._validation import Interval, validate_params
from fedkit.errors import DataError
from fedkit.metrics import METRICS, binary_metrics

HEADER: tuple[str, ...] = ("n", "loss_sum", "tp", "fp", "tn", "fn", "diverged")

BINS_CONSTRAINTS = {
    "count": [Interval(int, 2, 65_536)],
    "scale": [Interval(float, 0, None, closed="neither")],
    "limit": [Interval(float, 0, None, closed="neither")],
}


@dataclass(frozen=True)
class Bins:
    """``count`` score bins uniform in ``asinh(z / scale)`` over ``[-limit, limit]`` logits; the end bins run to ±inf.

    Every site of a federation must use the same bins (they fix the stats vector's layout).

    Parameters
    ----------
    count
        Number of bins.
    scale
        Logit scale of the asinh spacing (smaller = finer near 0).
    limit
        Largest logit magnitude the inner bins cover.
    """

    count: int = 8192
    scale: float = 0.1
    limit: float = 1000.0

    def __post_init__(self) -> None:
        validate_params({"count": self.count, "scale": self.scale, "limit": self.limit}, BINS_CONSTRAINTS, "Bins")

    @cached_property
    def edges(self) -> np.ndarray:
        """The ``count + 1`` bin edges in logits, increasing, from ``-limit`` to ``limit``."""
        top = math.asinh(self.limit / self.scale)
        edges = self.scale * np.sinh(np.linspace(-top, top, self.count + 1))
        edges[0], edges[-1] = -self.limit, self.limit
        return edges

    def index(self, logits: np.ndarray) -> np.ndarray:
        """The bin of each logit: ``k`` when ``edges[k] <= z < edges[k + 1]``; the end bins take what lies beyond.

        Parameters
        ----------
        logits
            The logits to place.
        """
        return np.searchsorted(self.edges[1:-1], logits, side="right")

    @property
    def length(self) -> int:
        """Length of a stats vector on these bins: ``6 + 2 * count``."""
        return len(HEADER) + 2 * self.count


BINS = Bins()
"""The bins fedkit uses (module docstring: why 8192, the AUC bound and what was measured)."""


def layout(bins: Bins = BINS) -> dict[str, slice]:
    """Where each field sits in a stats vector: the header fields (``HEADER``), ``positive`` and ``negative``.

    Parameters
    ----------
    bins
        The score bins of the federation.
    """
    fields = {name: slice(i, i + 1) for i, name in enumerate(HEADER)}
    start = len(HEADER)
    fields["positive"] = slice(start, start + bins.count)
    fields["negative"] = slice(start + bins.count, start + 2 * bins.count)
    return fields


def _labels_logits(labels: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    z = np.asarray(logits, dtype=np.float64).ravel()
    if y.shape != z.shape:
        raise DataError(f"Evaluation needs one logit per label; got {len(y)} labels and {len(z)} logits.")
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError("Evaluation labels must be 0 or 1; got " + ", ".join(map(str, np.unique(y)[:5])) + ".")
    return y, z


def site_stats(labels: np.ndarray, logits: np.ndarray, bins: Bins = BINS) -> np.ndarray:
    """One site's stats vector (layout in the module docstring) for 0/1 ``labels`` and ``logits`` of one model.

    Parameters
    ----------
    labels
        The site's 0/1 test labels.
    logits
        The model's logits on the same rows.
    bins
        The score bins of the federation.
    """
    y, z = _labels_logits(labels, logits)
    finite = np.isfinite(z)
    out = np.zeros(bins.length)
    out[HEADER.index("diverged")] = np.sum(~finite)
    y, z = y[finite], z[finite]
    positive, predicted = y == 1, z > 0
    out[0] = len(y)
    out[1] = np.sum(np.logaddexp(0.0, z) - y * z)
    out[2:6] = [
        np.sum(positive & predicted),
        np.sum(~positive & predicted),
        np.sum(~positive & ~predicted),
        np.sum(positive & ~predicted),
    ]
    index = bins.index(z)
    where = layout(bins)
    out[where["positive"]] = np.bincount(index[positive], minlength=bins.count)
    out[where["negative"]] = np.bincount(index[~positive], minlength=bins.count)
    return out


def sum_stats(vectors: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """The sum of several sites' stats vectors: what the server (or secure aggregation) computes.

    Parameters
    ----------
    vectors
        The sites' stats vectors, one per site (or stacked in rows).
    """
    stacked = np.asarray(vectors, dtype=np.float64)
    if stacked.ndim != 2 or len(stacked) == 0:
        raise DataError(f"sum_stats needs a non-empty list of equal-length stats vectors; got shape {stacked.shape}.")
    return stacked.sum(axis=0)


def check_stats(stats: np.ndarray, bins: Bins = BINS, where: str = "stats") -> np.ndarray:
    """``stats`` as float64 if it is a well-formed stats vector on ``bins``; DataError naming the broken rule.

    The server's boundary check of a site's reply (after unmasking, for secure aggregation):
    length, finite, whole non-negative counts that agree with each other.

    Parameters
    ----------
    stats
        A site's stats vector.
    bins
        The score bins of the federation.
    where
        What the vector is, for the error message (e.g. the site's name).

    Raises
    ------
    DataError
        When a rule is broken; the message names it.
    """
    v = np.asarray(stats, dtype=np.float64)
    if v.shape != (bins.length,):
        raise DataError(f"{where}: a stats vector on {bins.count} bins has {bins.length} entries; got shape {v.shape}.")
    if not np.isfinite(v).all():
        raise DataError(f"{where}: holds non-finite values.")
    f = layout(bins)
    counts = np.concatenate([v[[0, 2, 3, 4, 5, 6]], v[f["positive"]], v[f["negative"]]])
    if (counts < 0).any() or (counts != np.round(counts)).any():
        raise DataError(f"{where}: counts must be whole numbers >= 0.")
    n, loss_sum, tp, fp, tn, fn, _diverged = v[: len(HEADER)]
    if n != tp + fp + tn + fn or v[f["positive"]].sum() != tp + fn or v[f["negative"]].sum() != fp + tn:
        pos, neg = v[f["positive"]].sum(), v[f["negative"]].sum()
        raise DataError(
            f"{where}: counts disagree (n={n:g}, tp+fp+tn+fn={tp + fp + tn + fn:g}, positives in the histogram "
            f"{pos:g} vs tp+fn={tp + fn:g}, negatives {neg:g} vs fp+tn={fp + tn:g})."
        )
    if loss_sum < 0:
        raise DataError(f"{where}: loss_sum {loss_sum:g} is negative; a sum of cross-entropies is >= 0.")
    return v


def auc_from_histograms(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC from class-conditional histograms on the same ordered bins; pairs in one bin count 1/2.

    NaN when one class is empty. Exact in float64 while P·N < 2**53.

    Parameters
    ----------
    positive
        Counts of the positive rows per bin.
    negative
        Counts of the negative rows per bin, on the same bins.
    """
    positive = np.asarray(positive, dtype=np.float64)
    negative = np.asarray(negative, dtype=np.float64)
    p, n = positive.sum(), negative.sum()
    if p == 0 or n == 0:
        return math.nan
    below = np.cumsum(negative) - negative
    return float(np.sum(positive * (below + 0.5 * negative)) / (p * n))


def auc_error_bound(stats: np.ndarray, bins: Bins = BINS) -> float:
    """Bound on ``|AUC from the histograms - exact AUC|``: ``0.5 × Σ_b pos_b · neg_b / (P·N)`` (NaN with one class).

    Parameters
    ----------
    stats
        A (summed) stats vector.
    bins
        The score bins of the federation.
    """
    f = layout(bins)
    positive, negative = stats[f["positive"]], stats[f["negative"]]
    p, n = positive.sum(), negative.sum()
    if p == 0 or n == 0:
        return math.nan
    return float(0.5 * np.sum(positive * negative) / (p * n))


def metrics_from_stats(stats: np.ndarray, bins: Bins = BINS) -> dict[str, float]:
    """``{"loss", "auc", "accuracy"}`` of a (summed) stats vector: loss and accuracy exact, AUC from the histograms.

    All three are NaN when the vector counts a ``diverged`` row.

    Parameters
    ----------
    stats
        A (summed) stats vector.
    bins
        The score bins of the federation.
    """
    f = layout(bins)
    n, loss_sum, tp, _fp, tn, _fn, diverged = stats[: len(HEADER)]
    if diverged:
        return dict.fromkeys(METRICS, math.nan)
    return {
        "loss": float(loss_sum / n) if n else math.nan,
        "auc": auc_from_histograms(stats[f["positive"]], stats[f["negative"]]),
        "accuracy": float((tp + tn) / n) if n else math.nan,
    }


class SiteEvaluation(NamedTuple):
    """What a site reports for one model: its exact metrics (with ``n``) and its stats vector for pooling.

    Parameters
    ----------
    metrics
        The site's exact ``loss``, ``auc``, ``accuracy`` and ``n``.
    stats
        Its stats vector, to pool with the other sites'.
    """

    metrics: dict[str, float]
    stats: np.ndarray


def evaluate_on_site(labels: np.ndarray, logits: np.ndarray, bins: Bins = BINS) -> SiteEvaluation:
    """A site's evaluation of one model on its own test rows: exact loss, AUC, accuracy and n, plus :func:`site_stats`.

    The exact per-silo metrics are :func:`fedkit.metrics.binary_metrics` computed here, on the
    site; only they and the fixed-length stats vector leave it.

    Parameters
    ----------
    labels
        The site's 0/1 test labels.
    logits
        The model's logits on the same rows.
    bins
        The score bins of the federation.
    """
    y, z = _labels_logits(labels, logits)
    exact = binary_metrics(y, z) if len(y) else dict.fromkeys(METRICS, math.nan)
    return SiteEvaluation({**exact, "n": float(len(y))}, site_stats(y, z, bins))
