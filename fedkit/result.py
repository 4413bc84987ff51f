"""What a run produces: a :class:`RoundEvent` after each round, and the :class:`RunResult` at the end."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkit.metrics import METRICS

if TYPE_CHECKING:
    import pandas as pd

POOLED = "pooled"


def _json_float(value: float) -> float | None:
    """A metric value as JSON carries it: NaN and infinities (never a meaningful score) as null."""
    return None if value is None or not math.isfinite(value) else float(value)


def final_metrics(
    history: list[dict[str, Any]],
    n_test: dict[str, int],
    model: str = "global",
    intervals: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """The ``final`` block of a summary: test metrics of ``model`` ("global"/"personal") at the last round.

    Parameters
    ----------
    history
        The run's metric rows.
    n_test
        Test rows per silo and pooled.
    model
        The model the run is scored with.
    intervals
        Per silo (and pooled), the 95% interval bounds of its final AUC and accuracy
        (:func:`fedkit.intervals.metric_intervals`); they join the silo's block when given.
    """
    rows = [r for r in history if r["model"] == model and r["split"] == "test"]
    if not rows:
        return {"model": model, "silos": {}, POOLED: None, "avg_accuracy": None}
    last = max(r["round"] for r in rows)
    values = {(r["silo"], r["metric"]): r["value"] for r in rows if r["round"] == last}
    intervals = intervals or {}

    def block(silo: str) -> dict[str, Any]:
        bounds = {k: _json_float(v) for k, v in intervals.get(silo, {}).items()}
        return {**{m: _json_float(values[(silo, m)]) for m in sorted(METRICS)}, **bounds, "n_test": n_test[silo]}

    silos = {s: block(s) for s in n_test if s != POOLED and (s, "accuracy") in values}  # a dropped silo is absent
    accuracies = [b["accuracy"] for b in silos.values()]
    return {
        "model": model,
        "round": last,
        "silos": silos,
        POOLED: block(POOLED) if (POOLED, "accuracy") in values else None,
        # None when every silo dropped out of the last round, or when one diverged (its accuracy is null)
        "avg_accuracy": None if not accuracies or None in accuracies else float(np.mean(accuracies)),
    }


def accountant_label(method: str = "rdp") -> str:
    """``"dp-accounting <version> <method>"``: the privacy accountant (Google's dp-accounting) a run's ε comes from.

    Parameters
    ----------
    method
        ``"rdp"`` (Rényi DP) or ``"pld"`` (privacy loss distributions).
    """
    from importlib import metadata

    return f"dp-accounting {metadata.version('dp-accounting')} {method}"


def privacy_summary(config: Mapping[str, Any], history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``final.privacy`` block of a DP run: mechanism, ε, δ, noise multiplier, clip, accountant; None without DP.

    ε and the noise multiplier are the last round's ``privacy`` rows of silo ``pooled``
    (:mod:`fedkit.privacy.budget`); ε is null before any round is recorded.

    Parameters
    ----------
    config
        The run's RunConfig fields.
    history
        The run's metric rows.
    """
    mechanism = config.get("dp", "none")
    if mechanism == "none":
        return None
    rows = [r for r in history if r["split"] == "privacy" and r["silo"] == POOLED]
    last = max((r["round"] for r in rows), default=None)
    values = {r["metric"]: r["value"] for r in rows if r["round"] == last}
    return {
        "mechanism": mechanism,
        "epsilon": _json_float(values.get("epsilon", math.nan)),
        "delta": config["dp_delta"],
        "noise_multiplier": _json_float(values.get("noise_multiplier", math.nan)),
        "clip": config["dp_clip"],
        "accountant": accountant_label(),
    }


TABLE_COLUMNS: tuple[str, ...] = (
    "n_test",
    "loss",
    "auc",
    "auc_low",
    "auc_high",
    "accuracy",
    "accuracy_low",
    "accuracy_high",
)
"""The columns of a final table (:meth:`RunResult.table`): ``*_low`` / ``*_high`` bound a 95% interval."""


def final_table(final: Mapping[str, Any]) -> pd.DataFrame:
    """A summary's ``final`` block as a table: one row per silo plus pooled, :data:`TABLE_COLUMNS`.

    Parameters
    ----------
    final
        The ``final`` block of a run summary (:func:`final_metrics`); a block recorded before the
        intervals existed gives empty interval columns.
    """
    import pandas as pd

    rows = [{"silo": s, **m} for s, m in final["silos"].items()]
    if final.get(POOLED):
        rows.append({"silo": POOLED, **final[POOLED]})
    return pd.DataFrame(rows, columns=["silo", *TABLE_COLUMNS]).set_index("silo")


ClassCounts = Mapping[str, tuple[int, int]]
"""Per silo, its test rows and the positives among them: all the server needs besides the metrics."""


def class_counts(labels: Mapping[str, np.ndarray]) -> dict[str, tuple[int, int]]:
    """:data:`ClassCounts` from each silo's 0/1 test labels.

    Parameters
    ----------
    labels
        Each silo's test labels, by silo name.
    """
    return {silo: (len(y), int(np.sum(np.asarray(y) == 1))) for silo, y in labels.items()}


def n_test_by_silo(counts: ClassCounts) -> dict[str, int]:
    """Test rows per silo, and of all silos together under ``pooled``, from each silo's class counts.

    Parameters
    ----------
    counts
        Each silo's test rows and positives, by silo name.
    """
    sizes = {silo: int(n) for silo, (n, _) in counts.items()}
    return {**sizes, POOLED: sum(sizes.values())}


def undefined_auc_notes(history: list[dict[str, Any]], counts: ClassCounts) -> list[str]:
    """A sentence for every test set whose AUC is undefined (one class only), so null never goes unexplained.

    Parameters
    ----------
    history
        The run's metric rows.
    counts
        Each silo's test rows and positives, by silo name.
    """
    notes = []
    for silo, (n, positives) in counts.items():
        if positives in (0, n):
            kind = "positive" if positives else "negative"
            notes.append(
                f"AUC of {silo!r} is null: its test set has a single class ({n} rows, all {kind}), "
                "so ROC AUC is undefined; accuracy and loss are reported."
            )
    return notes


def thin_class_notes(counts: Mapping[str, tuple[int, int]]) -> list[str]:
    """A sentence for every test set whose AUC rests on a single row of one class (its interval is ``[0, 1]``).

    Parameters
    ----------
    counts
        Per silo, its test rows and the positives among them.
    """
    notes = []
    for silo, (n, positives) in counts.items():
        for kind, count in (("negative", n - positives), ("positive", positives)):
            if count == 1 and n > 1:
                notes.append(
                    f"AUC of {silo!r} rests on 1 {kind} among {n} test rows: it is that row's rank, so its "
                    "95% interval is [0, 1] (DeLong's variance needs two rows of each class)."
                )
    return notes


@dataclass(frozen=True)
class RoundEvent:
    """What the round loop emits after each round: the round, its metric rows, and the new global parameters.

    Parameters
    ----------
    run_id
        The run's id.
    round
        The round just done (0 is the initial model).
    rounds
        The run's number of rounds.
    rows
        The round's metric rows.
    params
        The new global parameters.
    notes
        The run's notes that this round added: rejected updates, dropouts, rejoins.
    """

    run_id: str
    round: int
    rounds: int
    rows: list[dict[str, Any]]
    params: np.ndarray
    notes: tuple[str, ...] = ()


@dataclass
class RunResult:
    """The outcome of :func:`fedkit.run`: status, config, history rows, final parameters.

    Parameters
    ----------
    run_id
        The run's id.
    status
        ``finished``, ``stopped`` or ``failed``.
    config
        The run's RunConfig fields.
    records
        Every metric row, in long format (one value per round, model, split, silo and metric).
    params
        The final global parameters.
    n_test
        Test rows per silo (and ``pooled``).
    data
        What the run's data was (files, checksums, split).
    notes
        Sentences that explain the numbers (e.g. an undefined AUC).
    scored
        The model the run is scored with: ``"global"`` or ``"personal"``.
    rejected
        Every update validation rejected: ``{"round", "silo", "kind", "reason"}``
        (:mod:`fedkit.privacy.validation`).
    intervals
        Per silo and pooled: the 95% interval bounds of the final AUC and accuracy (:mod:`fedkit.intervals`).
    """

    run_id: str
    status: str
    config: dict[str, Any]
    records: list[dict[str, Any]]
    params: np.ndarray
    n_test: dict[str, int]
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    scored: str = "global"
    rejected: list[dict[str, Any]] = field(default_factory=list)
    intervals: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per silo and pooled: the 95% interval bounds of the final AUC and accuracy (:mod:`fedkit.intervals`)."""

    @property
    def history(self) -> pd.DataFrame:
        """Per-round metrics as a long DataFrame: round, silo, model, split, metric, value."""
        import pandas as pd

        return pd.DataFrame(self.records, columns=["round", "silo", "model", "split", "metric", "value"])

    @property
    def final(self) -> dict[str, Any]:
        """Final test metrics per silo and pooled, and their unweighted mean accuracy.

        Scored with the model each silo would use: the global model, or its own personalized model
        (``personalize`` / the ``local`` baseline), as ``final["model"]`` says. A DP run's also holds
        ``privacy`` (:func:`privacy_summary`).
        """
        final = final_metrics(self.records, self.n_test, self.scored, self.intervals)
        privacy = privacy_summary(self.config, self.records)
        return final if privacy is None else {**final, "privacy": privacy}

    def table(self) -> pd.DataFrame:
        """The final per-silo table (plus pooled), one row per silo: n_test, loss, AUC and accuracy with the
        bounds of their 95% intervals (:data:`TABLE_COLUMNS`)."""
        return final_table(self.final)

    def summary(self) -> dict[str, Any]:
        """Exactly what ``fedkit run --json`` prints: run id, config, final metrics, history, notes, rejections."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "config": dict(self.config),
            "data": self.data,
            "final": self.final,
            "history": [{**r, "value": _json_float(r["value"])} for r in self.records],
            "notes": list(self.notes),
            "rejected": [dict(r) for r in self.rejected],
        }
