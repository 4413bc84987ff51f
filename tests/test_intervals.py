"""95% intervals of per-silo AUC (DeLong) and accuracy (Wilson): published values, the definition, coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fedkit
from fedkit.intervals import delong, delong_from_counts, metric_intervals, wilson
from fedkit.metrics import binary_metrics


@pytest.mark.parametrize(
    ("correct", "n", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_newcombe_1998_table_ii(correct: int, n: int, low: float, high: float) -> None:
    got = wilson(correct, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def _delong_by_pairs(y: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) from the definition: psi over every (positive, negative) pair; AUC and variance."""
    pos, neg = z[y == 1], z[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    auc = psi.mean()
    variance = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
    return float(auc), float(variance)


@pytest.mark.parametrize("seed", range(20))
def test_delong_equals_the_pairwise_definition_and_the_metrics_auc(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 120))
    y = (rng.random(n) < rng.uniform(0.2, 0.8)).astype(float)
    y[:2], y[2:4] = 1, 0  # two rows of each class at least
    z = np.round(rng.normal(y * rng.uniform(0, 2), 1.0), int(rng.integers(0, 3)))  # rounding makes ties
    auc, low, high = delong(y, z)
    expected_auc, variance = _delong_by_pairs(y, z)
    assert auc == pytest.approx(expected_auc, abs=1e-12) == binary_metrics(y, z)["auc"]
    half = 1.959963984540054 * math.sqrt(variance)
    assert (low, high) == pytest.approx((max(0.0, auc - half), min(1.0, auc + half)), abs=1e-12)


def test_delong_covers_the_true_auc_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    shift = 1.0
    true_auc = 0.5 * math.erfc(-shift / 2)  # binormal: Phi(shift / sqrt(2))
    hits = 0
    reps = 400
    for _ in range(reps):
        y = np.r_[np.ones(60), np.zeros(60)]
        z = rng.normal(shift * y, 1.0)
        _, low, high = delong(y, z)
        hits += low <= true_auc <= high
    assert 0.92 <= hits / reps <= 0.98


def test_counts_on_histogram_bins_give_the_raw_interval_when_each_bin_holds_one_level() -> None:
    y = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1], dtype=float)
    z = np.array([0.3, -0.2, 0.3, 1.2, 0.5, -0.7, -1.0, 0.1, 0.9, 0.0])
    levels = np.unique(z)
    positives = np.array([np.sum((z == v) & (y == 1)) for v in levels])
    negatives = np.array([np.sum((z == v) & (y == 0)) for v in levels])
    assert delong_from_counts(positives, negatives) == pytest.approx(delong(y, z))


def test_one_row_of_a_class_gives_the_whole_range_and_one_class_gives_none() -> None:
    y = np.r_[np.ones(15), 0.0]
    z = np.linspace(-1, 1, 16)
    assert delong(y, z)[1:] == (0.0, 1.0)
    assert all(math.isnan(v) for v in delong(np.ones(5), np.arange(5.0)))
    assert all(math.isnan(v) for v in metric_intervals(np.zeros(0), np.zeros(0)).values())


def test_switzerlands_auc_on_one_negative_shows_as_the_widest_interval(data_dir) -> None:
    result = fedkit.run(fedkit.RunConfig(rounds=3, local_steps=10), progress=False, trackers=[])
    table = result.table()
    assert (table.loc["switzerland", "n_test"], table.loc["switzerland", "auc_low"]) == (16, 0.0)
    assert table.loc["switzerland", "auc_high"] == 1.0
    assert table.loc["cleveland", "auc_high"] - table.loc["cleveland", "auc_low"] < 0.3
    for silo, row in table.iterrows():
        assert row["accuracy_low"] < row["accuracy"] < row["accuracy_high"], silo
    assert any("'switzerland' rests on 1 negative among 16" in note for note in result.notes)


def test_grouped_intervals_equal_each_groups_own() -> None:
    from fedkit.intervals import grouped_intervals

    rng = np.random.default_rng(3)
    sizes = [1, 2, 5, 16, 40, 0, 90]
    group = np.repeat(np.arange(len(sizes)), sizes)
    y = (rng.random(len(group)) < 0.6).astype(float)
    z = np.round(rng.normal(y, 1.0), 1)  # ties within and across groups
    together = grouped_intervals(y, z, group, len(sizes))
    for g in range(len(sizes)):
        alone = metric_intervals(y[group == g], z[group == g])
        assert {k: v[g] for k, v in together.items()} == pytest.approx(alone, nan_ok=True), g


def test_the_pooled_interval_from_summed_statistics_is_the_rows_interval() -> None:
    from fedkit.evalstats import site_stats, sum_stats
    from fedkit.intervals import intervals_from_stats

    rng = np.random.default_rng(5)
    parts = [(rng.random(n) < 0.5).astype(float) for n in (30, 80, 16)]
    logits = [rng.normal(y, 1.0) for y in parts]
    summed = sum_stats([site_stats(y, z) for y, z in zip(parts, logits, strict=True)])
    pooled = metric_intervals(np.concatenate(parts), np.concatenate(logits))
    assert intervals_from_stats(summed) == pytest.approx(pooled, abs=2e-3)  # bins for score levels, as the AUC
