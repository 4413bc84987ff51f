"""Metrics and the final block at their edges: no test rows, every silo dropped out of the last round."""

from __future__ import annotations

import math
import warnings

import numpy as np

from fedkit.metrics import METRICS, binary_metrics, grouped_metrics
from fedkit.result import POOLED, final_metrics


def test_no_rows_score_nan_instead_of_raising() -> None:
    assert all(math.isnan(v) for v in binary_metrics(np.zeros(0), np.zeros(0)).values())
    values = grouped_metrics(np.zeros(0), np.zeros(0), np.zeros(0, dtype=int), 3)
    assert set(values) == set(METRICS) and all(np.isnan(v).all() and len(v) == 3 for v in values.values())


def test_a_last_round_without_silo_rows_has_no_average_and_no_warning() -> None:
    rows = [
        {"round": 1, "silo": s, "model": "global", "split": "test", "metric": m, "value": 0.5}
        for s in ("a", "b", POOLED)
        for m in METRICS
    ]
    last = {"round": 2, "silo": POOLED, "model": "global", "split": "test"}
    rows += [{**last, "metric": m, "value": 0.0} for m in METRICS]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # np.mean([]) would warn "Mean of empty slice"
        final = final_metrics(rows, {"a": 3, "b": 4, POOLED: 7})
    assert final["round"] == 2 and final["silos"] == {} and final["avg_accuracy"] is None
    assert final[POOLED]["auc"] == 0.0 and final[POOLED]["n_test"] == 7
