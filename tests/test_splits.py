"""Silo splits: the FLamby protocol sizes, partition invariants, seeding, skew, standardization."""

from __future__ import annotations

import numpy as np
import pytest

from fedkit.data import holdout, load_silos, partition, preprocess
from fedkit.errors import ConfigError

FLAMBY_SIZES = {"cleveland": (199, 104), "hungarian": (172, 89), "switzerland": (30, 16), "va": (85, 45)}


def test_flamby_protocol_sizes_features_and_seed_independence(data_dir) -> None:
    for seed in (0, 42):
        fed = load_silos("flamby", seed=seed)
        assert {s.name: (s.n_train, s.n_test) for s in fed.silos} == FLAMBY_SIZES
        assert len(fed.features) == 13 and all(s.x_train.shape[1] == 13 for s in fed.silos)
    switzerland = fed.silos[2]
    assert 0 < switzerland.y_test.sum() < switzerland.n_test  # both classes, so AUC is defined


def test_flamby_standardizes_each_center_with_its_own_train_statistics(data_dir) -> None:
    for silo in load_silos("flamby").silos:
        std = silo.x_train.std(axis=0, ddof=1)
        assert np.allclose(silo.x_train.mean(axis=0), 0, atol=1e-5)
        assert np.allclose(std[std > 0], 1, atol=1e-4)


def test_hospitals_split_keeps_every_patient_with_imputation(data_dir) -> None:
    fed = load_silos("hospitals")
    assert sum(s.n_train + s.n_test for s in fed.silos) == 920
    assert not any(np.isnan(s.x_train).any() or np.isnan(s.x_test).any() for s in fed.silos)
    dropped = load_silos("hospitals", missing="drop")
    assert sum(s.n_train + s.n_test for s in dropped.silos) == 740


@pytest.mark.parametrize("split", ["iid", "dirichlet", "quantity"])
def test_synthetic_splits_hold_every_row_once_and_are_seeded(data_dir, split: str) -> None:
    a = load_silos(split, silos=7, seed=3)
    b = load_silos(split, silos=7, seed=3)
    c = load_silos(split, silos=7, seed=4)
    assert len(a.silos) == 7
    assert sum(s.n_train + s.n_test for s in a.silos) == 920
    for s, t in zip(a.silos, b.silos, strict=True):
        assert np.array_equal(s.x_train, t.x_train) and np.array_equal(s.y_test, t.y_test)
    assert any(
        s.n_train != t.n_train or not np.array_equal(s.y_train, t.y_train)
        for s, t in zip(a.silos, c.silos, strict=True)
    )


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "quantity"])
def test_partitions_are_a_cover_without_overlap(kind: str) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    parts = {
        "iid": lambda: partition.iid(500, 9, rng),
        "dirichlet": lambda: partition.dirichlet(labels, 9, 0.3, rng, min_size=5),
        "quantity": lambda: partition.quantity(500, 9, 0.3, rng, min_size=5),
    }[kind]()
    everything = np.concatenate(parts)
    assert len(everything) == 500 and np.array_equal(np.sort(everything), np.arange(500))
    assert min(len(p) for p in parts) >= (1 if kind == "iid" else 5)


def _label_skew(alpha: float) -> float:
    """Mean over seeds of the mean absolute gap between each silo's positive rate and the global rate."""
    labels = np.r_[np.zeros(400, int), np.ones(400, int)]
    gaps = []
    for seed in range(20):
        parts = partition.dirichlet(labels, 8, alpha, np.random.default_rng(seed), min_size=1)
        gaps.append(np.mean([abs(labels[p].mean() - 0.5) for p in parts]))
    return float(np.mean(gaps))


def test_smaller_alpha_gives_more_label_skew() -> None:
    skews = [_label_skew(a) for a in (0.1, 1.0, 100.0)]
    assert skews[0] > skews[1] > skews[2]
    assert skews[2] < 0.05 < 0.25 < skews[0]


def test_smaller_alpha_gives_more_size_skew() -> None:
    def spread(alpha: float) -> float:
        sizes = [len(p) for s in range(20) for p in partition.quantity(800, 8, alpha, np.random.default_rng(s))]
        return float(np.std(sizes))

    assert spread(0.2) > spread(2.0) > spread(200.0)


def test_too_many_silos_is_a_clear_error(data_dir) -> None:
    with pytest.raises(
        ConfigError, match=r"Cannot split 920 rows into 200 silos of at least 6 rows each .*at most 153"
    ):
        load_silos("iid", silos=200)


def test_federated_standardization_equals_pooled_train_statistics(data_dir) -> None:
    raw = load_silos("hospitals", missing="drop", standardize="none")
    fed = load_silos("hospitals", missing="drop", standardize="federated")
    pooled = np.concatenate([s.x_train for s in raw.silos]).astype(np.float64)
    mean, std = pooled.mean(axis=0), pooled.std(axis=0, ddof=1)
    for r, f in zip(raw.silos, fed.silos, strict=True):
        assert np.allclose(f.x_train, (r.x_train - mean) / (std + preprocess.STD_EPS), atol=1e-4)
    m = preprocess.combine([preprocess.moments(s.x_train.astype(np.float64)) for s in raw.silos])
    assert np.allclose(preprocess.mean_std(m)[0], mean) and np.allclose(preprocess.mean_std(m)[1], std)


def test_flamby_split_rejects_imputation_and_other_silo_counts(data_dir) -> None:
    with pytest.raises(ConfigError, match="'missing' parameter of load_silos must be 'drop'"):
        load_silos("flamby", missing="impute")
    with pytest.raises(ConfigError, match="'silos' parameter of load_silos must be None or 4"):
        load_silos("hospitals", silos=3)


def test_a_feature_constant_in_train_is_centered_not_blown_up() -> None:
    x_train = np.array([[1.0, 0.0], [3.0, 0.0]])
    mean, std = preprocess.mean_std(preprocess.moments(x_train))
    out = preprocess.standardize(np.array([[2.0, 1.0]]), mean, std)
    assert np.allclose(out, [[0.0, 1.0]], atol=1e-6)


@pytest.mark.parametrize("stratify", [True, False])
def test_holdout_draws_exactly_what_scikit_learn_draws(stratify: bool) -> None:
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(0)
    for case in range(300):
        n = int(rng.integers(6, 400))
        classes = int(rng.integers(2, 5)) if case % 3 else 2  # several classes exercise approximate_mode's ties
        labels = rng.integers(0, classes, n)
        labels[:classes] = np.arange(classes)
        labels[classes : 2 * classes] = np.arange(classes)  # every class has >= 2 rows
        state = int(rng.integers(2**31 - 1))
        expected = train_test_split(
            np.arange(n),
            test_size=1.0 - 0.66,
            train_size=0.66,
            random_state=state,
            shuffle=True,
            stratify=labels if stratify else None,
        )
        found = holdout.split(labels, 0.66, state, stratify=stratify)
        assert [a.tolist() for a in found] == [sorted(a.tolist()) for a in expected], (n, classes, state)


def test_the_uci_files_parsed_once_give_equal_federations_whose_rows_no_caller_can_change() -> None:
    from fedkit.data.silos import read_uci_bytes
    from fedkit.paths import data_dir

    first, second = load_silos("flamby"), load_silos("flamby")
    assert read_uci_bytes.cache_info().hits >= 4  # the second load parsed nothing
    for a, b in zip(first.silos, second.silos, strict=True):
        np.testing.assert_array_equal(a.x_train, b.x_train)
        np.testing.assert_array_equal(a.y_test, b.y_test)
        a.x_train[:] = 0  # a federation's own arrays stay the caller's to change...
    third = load_silos("flamby")
    np.testing.assert_array_equal(third.silos[0].x_train, second.silos[0].x_train)  # ...and reach no other load
    raw = (data_dir() / "processed.va.data").read_bytes()
    site = read_uci_bytes("va", raw, "va.data", "drop")
    with pytest.raises(ValueError, match="read-only"):
        site.x[0, 0] = 1.0
