"""Aggregate-only evaluation: summed stats give the pooled loss and accuracy exactly and the pooled AUC within 1e-3."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

import fedkit
from fedkit.errors import ConfigError, DataError
from fedkit.evalstats import (
    BINS,
    HEADER,
    Bins,
    auc_error_bound,
    auc_from_histograms,
    check_stats,
    evaluate_on_site,
    layout,
    metrics_from_stats,
    site_stats,
    sum_stats,
)
from fedkit.metrics import binary_metrics, grouped_metrics

AUC_TOLERANCE = 1e-3


def _pooled_exact(silos: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Pooled metrics as the round loop computes them today: every row of every silo in one group."""
    y = np.concatenate([s[0] for s in silos])
    z = np.concatenate([s[1] for s in silos])
    values = grouped_metrics(y, z, np.zeros(len(y), dtype=np.int64), 1)
    return {m: float(v[0]) for m, v in values.items()}


def _random_silos(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """2–8 silos of 20–2000 rows; logits of a model of random skill and scale, with ±30 extremes and ties."""
    scale = 10 ** rng.uniform(-1.3, 1.3)  # spread from 0.05 to 20 logits
    shift = rng.uniform(-3, 3) * scale
    silos = []
    for _ in range(int(rng.integers(2, 9))):
        n = int(rng.integers(20, 2001))
        y = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(np.float64)
        z = shift + scale * (rng.standard_normal(n) + rng.uniform(0, 2) * (2 * y - 1) + rng.normal(0, 0.5))
        extreme = rng.random(n) < 0.05
        z[extreme] = rng.choice([-30.0, 30.0]) * rng.uniform(0.5, 1.2, int(extreme.sum()))
        saturated = rng.random(n) < 0.02
        z[saturated] = rng.choice([-30.0, 30.0], int(saturated.sum()))
        tied = rng.random(n) < 0.1
        z[tied] = np.round(z[tied], 1)
        silos.append((y, z))
    return silos


def test_summed_stats_give_pooled_loss_and_accuracy_of_grouped_metrics_to_1e_12() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        silos = _random_silos(rng)
        pooled = metrics_from_stats(sum_stats([site_stats(y, z) for y, z in silos]))
        exact = _pooled_exact(silos)
        assert pooled["loss"] == pytest.approx(exact["loss"], rel=1e-12, abs=1e-12)
        assert pooled["accuracy"] == pytest.approx(exact["accuracy"], rel=1e-12, abs=1e-12)
        for y, z in silos:  # one silo's own vector: its loss and accuracy exactly
            own = metrics_from_stats(site_stats(y, z))
            assert own["loss"] == pytest.approx(binary_metrics(y, z)["loss"], rel=1e-12)
            assert own["accuracy"] == binary_metrics(y, z)["accuracy"]


def test_pooled_auc_from_summed_histograms_is_within_1e_3_and_within_the_proved_bound() -> None:
    rng = np.random.default_rng(1)
    worst = 0.0
    for _ in range(300):
        silos = _random_silos(rng)
        summed = sum_stats([site_stats(y, z) for y, z in silos])
        exact = _pooled_exact(silos)["auc"]
        error = abs(metrics_from_stats(summed)["auc"] - exact)
        assert error <= auc_error_bound(summed) + 1e-15
        assert error <= AUC_TOLERANCE
        worst = max(worst, error)
    print(f"worst pooled AUC error over 300 random score sets: {worst:.2e}")


def test_the_bound_is_attained_when_every_pair_shares_a_bin_in_one_order() -> None:
    y = np.array([0.0, 0.0, 1.0, 1.0])
    z = np.array([5.0, 5.0001, 5.0002, 5.0003])  # one bin (0.24 % of 5 is 0.012 wide); exact AUC 1
    stats = site_stats(y, z)
    assert binary_metrics(y, z)["auc"] == 1.0
    assert metrics_from_stats(stats)["auc"] == 0.5 and auc_error_bound(stats) == 0.5
    ties = site_stats(y, np.full(4, 5.0))  # equal scores: the bound counts them, the error is 0
    assert metrics_from_stats(ties)["auc"] == binary_metrics(y, np.full(4, 5.0))["auc"] == 0.5


def test_auc_from_histograms_is_mann_whitney_on_bin_indices() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        bins = rng.integers(0, 20, 300)
        y = (rng.random(300) < 0.4).astype(float)
        histograms = [np.bincount(bins[y == c], minlength=20) for c in (1, 0)]
        exact = binary_metrics(y, bins.astype(float))["auc"]
        assert auc_from_histograms(*histograms) == pytest.approx(exact, abs=1e-15)
    assert np.isnan(auc_from_histograms(np.zeros(3), np.ones(3)))


RUNS = {
    "flamby fedavg": {"split": "flamby", "rounds": 15},
    "hospitals mlp fedper": {"split": "hospitals", "model": "mlp", "personalize": "fedper", "lr": 0.01, "rounds": 15},
    "hospitals finetune, raw features": {"split": "hospitals", "personalize": "finetune", "standardize": "none"},
}


@pytest.mark.parametrize("name", list(RUNS))
def test_real_runs_pooled_metrics_from_summed_site_stats(name: str, data_dir: object, monkeypatch) -> None:
    from fedkit.engines import simulation

    evaluations: list[list[tuple[np.ndarray, np.ndarray]]] = []
    original = simulation.evaluate_silos

    def recording(names: Any, labels: Any, logits: Any, **kwargs: Any) -> Any:  # every evaluation the engine makes
        evaluations.append(list(zip(labels, logits, strict=True)))
        return original(names, labels, logits, **kwargs)

    monkeypatch.setattr(simulation, "evaluate_silos", recording)
    config = fedkit.RunConfig(**RUNS[name])
    fedkit.run(config, trackers=[], progress=False)
    assert len(evaluations) >= config.rounds
    worst = 0.0
    for silos in evaluations:
        reports = [evaluate_on_site(y, z) for y, z in silos]
        for (y, z), report in zip(silos, reports, strict=True):  # per silo: exact, computed on the site
            expected = {**binary_metrics(y, z), "n": float(len(y))}
            assert report.metrics.keys() == expected.keys()
            for key, value in expected.items():
                assert report.metrics[key] == value or (np.isnan(report.metrics[key]) and np.isnan(value))
        pooled = metrics_from_stats(sum_stats([r.stats for r in reports]))
        exact = _pooled_exact(silos)
        assert pooled["loss"] == pytest.approx(exact["loss"], rel=1e-12)
        assert pooled["accuracy"] == pytest.approx(exact["accuracy"], abs=1e-12)
        if len(silos) > 1:
            worst = max(worst, abs(pooled["auc"] - exact["auc"]))
    assert worst <= AUC_TOLERANCE
    print(f"{name}: worst pooled AUC error {worst:.2e} over {len(evaluations)} evaluations")


def test_the_stats_vector_has_no_entry_per_patient() -> None:
    rng = np.random.default_rng(3)
    lengths = {len(site_stats(rng.integers(0, 2, n), rng.normal(size=n))) for n in (0, 1, 7, 254, 5000)}
    assert lengths == {BINS.length} == {len(HEADER) + 2 * BINS.count}
    vector = site_stats(np.array([1.0, 0.0]), np.array([0.3, -0.2]))
    print(f"one site's stats vector, per model per round: {vector.nbytes} bytes ({BINS.length} float64)")


def test_layout_fields_hold_what_the_docstring_says() -> None:
    y = np.array([1, 1, 0, 0, 1, 0], dtype=float)
    z = np.array([2.0, -1.0, -3.0, 0.5, 0.0, 1e6])
    v = check_stats(site_stats(y, z))
    f = layout()
    assert [v[f[name]][0] for name in HEADER] == [
        6,
        pytest.approx(np.sum(np.log1p(np.exp(z[:5])) - y[:5] * z[:5]) + 1e6),
        1,  # tp: z=2
        2,  # fp: z=0.5, 1e6
        1,  # tn: z=-3
        2,  # fn: z=-1 and z=0 (0 is not > 0)
        0,  # diverged: every logit is finite
    ]
    assert v[f["positive"]].sum() == 3 and v[f["negative"]].sum() == 3
    assert v[f["negative"]][-1] == 1  # beyond the limit: the end bin


def test_bins_are_ordered_intervals_and_validated() -> None:
    edges = BINS.edges
    assert len(edges) == BINS.count + 1 and (np.diff(edges) > 0).all()
    assert edges[0] == -1000.0 and edges[-1] == 1000.0
    assert np.diff(edges).min() == pytest.approx(2.418e-4, rel=1e-2)  # near 0: 0.1 × Δt
    z = np.sort(np.random.default_rng(4).normal(0, 50, 10_000))
    index = BINS.index(z)
    assert (np.diff(index) >= 0).all() and index.min() >= 0 and index.max() < BINS.count
    inside = (z >= -1000) & (z < 1000)
    assert ((edges[index[inside]] <= z[inside]) & (z[inside] < edges[index[inside] + 1])).all()
    with pytest.raises(ConfigError, match=r"The 'count' parameter of Bins must be an int in the range \[2, 65536\]"):
        Bins(count=1)
    with pytest.raises(ConfigError, match=r"'scale' parameter of Bins"):
        Bins(scale=0.0)


def test_malformed_stats_and_inputs_are_refused() -> None:
    good = site_stats(np.array([1.0, 0.0]), np.array([0.3, -0.2]))
    with pytest.raises(DataError, match=r"a stats vector on 8192 bins has 16391 entries; got shape \(10,\)"):
        check_stats(good[:10], where="site va")
    broken = good.copy()
    broken[2] += 1
    with pytest.raises(DataError, match=r"site va: counts disagree"):
        check_stats(broken, where="site va")
    broken = good.copy()
    broken[layout()["positive"].start] += 0.5
    with pytest.raises(DataError, match=r"counts must be whole numbers"):
        check_stats(broken)
    with pytest.raises(DataError, match=r"one logit per label; got 2 labels and 3 logits"):
        site_stats(np.array([1.0, 0.0]), np.zeros(3))
    with pytest.raises(DataError, match=r"labels must be 0 or 1; got .*2\.0"):
        site_stats(np.array([1.0, 2.0]), np.zeros(2))
    with pytest.raises(DataError, match=r"non-empty list"):
        sum_stats([])
    empty = evaluate_on_site(np.zeros(0), np.zeros(0))
    assert empty.metrics["n"] == 0 and np.isnan(empty.metrics["loss"]) and empty.stats.sum() == 0


def test_a_diverged_model_is_counted_and_its_metrics_are_null() -> None:
    """Rows with a non-finite logit are counted apart; any sum holding one gives null metrics, never a number."""
    y = np.array([1.0, 0.0, 1.0, 0.0])
    z = np.array([np.nan, 0.3, np.inf, -0.2])
    v = check_stats(site_stats(y, z), where="site va")  # still a well-formed vector (and a fixed-point input)
    f = layout()
    assert v[f["diverged"]][0] == 2 and v[f["n"]][0] == 2 and v[f["positive"]].sum() + v[f["negative"]].sum() == 2
    assert all(np.isnan(x) for x in metrics_from_stats(v).values())
    healthy = site_stats(y, np.array([0.1, 0.3, 0.2, -0.2]))
    assert all(np.isnan(x) for x in metrics_from_stats(sum_stats([healthy, v])).values())  # pooled: null
    assert not any(np.isnan(x) for x in metrics_from_stats(healthy).values())
    site = evaluate_on_site(y, z)
    assert all(np.isnan(site.metrics[m]) for m in ("loss", "auc", "accuracy")) and site.metrics["n"] == 4
