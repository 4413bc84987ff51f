"""fedkit.metrics against scikit-learn, group by group: the reference is sklearn, never fedkit's other path."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from fedkit.metrics import binary_metrics, grouped_metrics, roc_auc


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _reference(y: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """scikit-learn's loss, AUC and accuracy at probability 0.5 (FLamby's ``y_pred > 0.5``) for one group."""
    p = _sigmoid(z)
    auc = roc_auc_score(y, z) if len(np.unique(y)) == 2 else math.nan
    return {
        "loss": log_loss(y, p, labels=[0, 1]),
        "auc": auc,
        "accuracy": accuracy_score(y, (p > 0.5).astype(int)),
    }


# Logits on a coarse grid: many ties within a group, z = 0 (probability exactly 0.5) common, |z| <= 6
# so sklearn's probability clipping never matters.
_rows = st.lists(
    st.tuples(st.integers(0, 1), st.integers(-12, 12).map(lambda k: k / 2.0), st.integers(0, 4)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(rows=_rows)
def test_grouped_metrics_equal_scikit_learn_in_every_group(rows: list[tuple[int, float, int]]) -> None:
    y = np.array([r[0] for r in rows], dtype=float)
    z = np.array([r[1] for r in rows])
    group = np.array([r[2] for r in rows])
    present = np.unique(group)
    with np.errstate(invalid="ignore"):  # groups without rows score NaN
        got = grouped_metrics(y, z, group, 5)
    for g in present:
        want = _reference(y[group == g], z[group == g])
        for metric, value in want.items():
            assert math.isclose(got[metric][g], value, rel_tol=1e-9, abs_tol=1e-12) or (
                math.isnan(value) and math.isnan(got[metric][g])
            ), (metric, g, got[metric][g], value)


def test_auc_of_every_group_not_only_the_first_equals_scikit_learn() -> None:
    # Three interleaved groups with different AUCs, and ties across groups at the same logit.
    y = np.array([1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1], dtype=float)
    z = np.array([2, 0, 0, 1, -1, 0, 0, 2, 1, 1, 0, 0, 0, 3, 0], dtype=float)
    group = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 1, 2, 2])
    auc = grouped_metrics(y, z, group, 3)["auc"]
    for g in range(3):
        assert math.isclose(auc[g], roc_auc_score(y[group == g], z[group == g])), g
    assert len(set(np.round(auc, 6))) == 3  # the groups really differ, so a shifted rank would show


def test_loss_is_the_binary_cross_entropy_with_no_constant_offset() -> None:
    # z = 0 gives log 2 whatever the label; large |z| right gives ~0, wrong gives ~|z|.
    y = np.array([0.0, 1.0, 1.0, 0.0])
    z = np.array([0.0, 0.0, 30.0, 30.0])
    loss = grouped_metrics(y, z, np.array([0, 1, 2, 3]), 4)["loss"]
    assert np.allclose(loss, [math.log(2), math.log(2), 0.0, 30.0], atol=1e-12)


def test_a_logit_of_exactly_zero_predicts_the_negative_class() -> None:
    # probability 0.5 is not > 0.5 (FLamby's accuracy): a positive at z = 0 is wrong, a negative right
    got = binary_metrics(np.array([1.0, 0.0]), np.array([0.0, 0.0]))
    assert got["accuracy"] == 0.5
    assert binary_metrics(np.array([1.0]), np.array([0.0]))["accuracy"] == 0.0
    assert binary_metrics(np.array([0.0]), np.array([0.0]))["accuracy"] == 1.0


def test_a_group_with_one_class_has_no_auc_but_the_others_keep_theirs() -> None:
    y = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    z = np.array([0.5, -0.5, 0.1, 0.2, -1.0, 3.0])
    group = np.array([0, 0, 1, 1, 2, 2])
    got = grouped_metrics(y, z, group, 3)
    assert math.isnan(got["auc"][0]) and math.isnan(got["auc"][2])
    assert got["auc"][1] == roc_auc_score([0, 1], [0.1, 0.2]) == 1.0
    assert math.isnan(roc_auc(np.zeros(3), np.arange(3.0)))


@pytest.mark.parametrize("n_groups", [1, 2, 7])
def test_metrics_do_not_depend_on_the_order_of_rows(n_groups: int) -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 80).astype(float)
    z = rng.integers(-3, 4, 80).astype(float)
    group = rng.integers(0, n_groups, 80)
    perm = rng.permutation(80)
    a, b = grouped_metrics(y, z, group, n_groups), grouped_metrics(y[perm], z[perm], group[perm], n_groups)
    for metric in a:
        assert np.allclose(a[metric], b[metric], equal_nan=True)


def test_float32_logits_and_integer_labels_are_scored_in_float64() -> None:
    # a model's float32 logits: the loss is computed on their float64 values, not in float32
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 50)
    z32 = rng.normal(scale=3, size=50).astype(np.float32)
    group = rng.integers(0, 3, 50)
    got = grouped_metrics(y, z32, group, 3)
    want = grouped_metrics(y.astype(np.float64), z32.astype(np.float64), group, 3)
    for metric in got:
        assert np.array_equal(got[metric], want[metric]), metric


def test_group_ids_may_come_as_floats() -> None:
    # e.g. a pandas column of silo ids read back as float
    rng = np.random.default_rng(4)
    y, z, group = rng.integers(0, 2, 30).astype(float), rng.normal(size=30), rng.integers(0, 3, 30)
    got, want = grouped_metrics(y, z, group.astype(float), 3), grouped_metrics(y, z, group, 3)
    for metric in got:
        assert np.array_equal(got[metric], want[metric]), metric


def test_a_single_class_group_scores_nan_auc_without_a_runtime_warning() -> None:
    # common in label-skewed splits (and switzerland's test set): NaN is the answer, not a numpy warning
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    z = np.array([0.3, -0.2, 0.1, 0.5, 2.0, -1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auc = grouped_metrics(y, z, np.array([0, 0, 1, 1, 2, 2]), 3)["auc"]
    assert math.isnan(auc[0]) and math.isnan(auc[1]) and auc[2] == 1.0


@pytest.mark.parametrize("blown", [math.inf, -math.inf, math.nan])
def test_one_non_finite_logit_blanks_its_group_only_and_the_others_equal_scikit_learn(blown: float) -> None:
    # a diverged model's logits: a single inf/nan in group 0 makes all three of its metrics NaN (a number
    # computed from it would be meaningless); group 1, scored in the same call, keeps scikit-learn's values
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    z = np.array([blown, 0.4, -0.3, 1.5, -2.0, 0.7, 0.1, -0.6, 2.2])
    group = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = grouped_metrics(y, z, group, 2)
    want = _reference(y[group == 1], z[group == 1])
    for metric, value in want.items():
        assert math.isnan(got[metric][0]), metric
        assert math.isclose(got[metric][1], value, rel_tol=1e-9), metric
