"""Selection, encoding and standardization of UCI rows against hand-written expectations and FLamby's pandas code.

The reference for the "drop" policy is FLamby's own pipeline (flamby/datasets/fed_heart_disease/dataset.py):
``read_csv``, ``replace("?", NaN)``, drop columns 10-12 (slope, ca, thal), ``dropna``, then
``get_dummies(columns=[2, 6], drop_first=True)`` (cp and restecg).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedkit.data import uci
from fedkit.data.preprocess import (
    FEATURES,
    NUMERIC,
    combine,
    encode,
    mean_std,
    moments,
    select,
    standardize,
    unstandardize,
)

NAN = math.nan

# Eight hand-made rows in the processed files' format (age, sex, cp, trestbps, chol, fbs, restecg, thalach,
# exang, oldpeak, slope, ca, thal, num). Every cp and restecg level occurs among the complete rows, and no
# oldpeak equals a restecg level of its row, so a dummy built from the wrong column shows.
ROWS = """\
63,1,1,145,233,1,2,150,0,2.3,3,0,6,0
67,1,4,160,286,0,2,108,1,1.5,2,3,3,2
37,1,3,130,0,0,0,187,0,3.5,?,?,?,0
41,0,2,130,204,0,1,172,0,1.4,1,0,3,1
56,1,2,120,?,0,0,178,0,0.8,?,?,?,0
57,0,4,120,354,0,?,163,1,0.6,1,0,3,4
62,0,4,?,268,0,2,160,0,3.6,3,2,3,3
45,1,3,140,0,?,1,152,0,1,2,?,?,1
"""

# FEATURES order: age sex trestbps chol fbs thalach exang oldpeak | cp_2 cp_3 cp_4 | restecg_1 restecg_2
EXPECTED_X = np.array(
    [
        [63, 1, 145, 233, 1, 150, 0, 2.3, 0, 0, 0, 0, 1],
        [67, 1, 160, 286, 0, 108, 1, 1.5, 0, 0, 1, 0, 1],
        [37, 1, 130, 0, 0, 187, 0, 3.5, 0, 1, 0, 0, 0],
        [41, 0, 130, 204, 0, 172, 0, 1.4, 1, 0, 0, 1, 0],
        [56, 1, 120, NAN, 0, 178, 0, 0.8, 1, 0, 0, 0, 0],
        [57, 0, 120, 354, 0, 163, 1, 0.6, 0, 0, 1, NAN, NAN],
        [62, 0, NAN, 268, 0, 160, 0, 3.6, 0, 0, 1, 0, 1],
        [45, 1, 140, 0, NAN, 152, 0, 1.0, 0, 1, 0, 1, 0],
    ]
)
EXPECTED_Y = np.array([0, 1, 0, 1, 0, 1, 1, 1], dtype=float)  # num > 0
COMPLETE = [0, 1, 2, 3]  # rows without a missing value in a kept column
CHOL = FEATURES.index("chol")
CHOL_ZERO = [2, 7]


def _raw() -> np.ndarray:
    return uci.parse(ROWS.encode(), "hand-made rows")


def _flamby(text: str) -> pd.DataFrame:
    """FLamby's HeartDiseaseRaw feature pipeline on one file's text."""
    df = pd.read_csv(io.StringIO(text), header=None)
    df = df.replace("?", np.nan).drop([10, 11, 12], axis=1).dropna(axis=0)
    return pd.get_dummies(df.iloc[:, :-1], columns=[2, 6], drop_first=True)


@pytest.mark.parametrize("hospital", uci.HOSPITALS)
def test_drop_policy_encodes_the_complete_rows_into_the_expected_dummies(hospital: str) -> None:
    x, y = encode(select(_raw(), hospital, "drop"))
    assert np.array_equal(x, EXPECTED_X[COMPLETE])  # chol == 0 is kept as recorded, in every hospital
    assert np.array_equal(y, EXPECTED_Y[COMPLETE])


@pytest.mark.parametrize("hospital", uci.HOSPITALS)
def test_drop_policy_equals_flambys_get_dummies_with_drop_first(hospital: str) -> None:
    flamby = _flamby(ROWS)
    # get_dummies keeps the other columns in file order and appends cp then restecg levels 2.. / 1..
    names = [uci.COLUMNS[c] if isinstance(c, int) else c for c in flamby.columns]
    renamed = [n.replace("2_", "cp_").replace("6_", "restecg_").replace(".0", "") for n in map(str, names)]
    assert tuple(renamed) == FEATURES
    x, _ = encode(select(_raw(), hospital, "drop"))
    assert np.allclose(x, flamby.to_numpy(dtype=np.float64))


def test_impute_policy_keeps_every_row_and_measured_cholesterol_outside_switzerland_and_va() -> None:
    for hospital in ("cleveland", "hungarian"):
        x, y = encode(select(_raw(), hospital, "impute"))
        assert np.array_equal(x, EXPECTED_X, equal_nan=True), hospital  # chol == 0 stays 0 there
        assert np.array_equal(y, EXPECTED_Y)


@pytest.mark.parametrize("hospital", ["switzerland", "va"])
def test_impute_policy_marks_only_a_zero_cholesterol_missing_in_switzerland_and_va(hospital: str) -> None:
    x, y = encode(select(_raw(), hospital, "impute"))
    expected = EXPECTED_X.copy()
    expected[CHOL_ZERO, CHOL] = NAN
    assert np.array_equal(x, expected, equal_nan=True)  # non-zero values and the other columns untouched
    assert np.array_equal(y, EXPECTED_Y)


def test_a_missing_category_makes_only_its_own_dummies_missing() -> None:
    x, _ = encode(select(_raw(), "cleveland", "impute"))
    restecg = [FEATURES.index("restecg_1"), FEATURES.index("restecg_2")]
    assert np.isnan(x[5, restecg]).all()
    assert not np.isnan(np.delete(x[5], restecg)).any()


def test_select_keeps_the_ten_used_columns_and_the_label_in_order() -> None:
    table = select(_raw(), "cleveland", "impute")
    kept = [*NUMERIC, "cp", "restecg", "num"]
    assert np.array_equal(table, _raw()[:, [uci.COLUMNS.index(c) for c in kept]], equal_nan=True)


def test_select_does_not_modify_the_raw_rows() -> None:
    raw = _raw()
    before = raw.copy()
    select(raw, "va", "impute")
    assert np.array_equal(raw, before, equal_nan=True)


def test_real_files_encode_like_flambys_pipeline(data_dir) -> None:
    for hospital in uci.HOSPITALS:
        text = (data_dir / uci.file_name(hospital)).read_text()
        x, _ = encode(select(uci.parse(text.encode(), hospital), hospital, "drop"))
        flamby = _flamby(text).astype(np.float64)
        # One file at a time: FLamby dummies the pooled rows, where a column read with '?' is text in some files
        # and numbers in others; per file every level is one type. Each dummy FLamby makes must be fedkit's.
        assert len(x) == len(flamby), hospital
        numeric = flamby.iloc[:, : len(NUMERIC)].to_numpy()
        assert np.allclose(x[:, : len(NUMERIC)], numeric), hospital
        for column in flamby.columns[len(NUMERIC) :]:
            name = str(column).replace("2_", "cp_").replace("6_", "restecg_").replace(".0", "")
            assert np.array_equal(x[:, FEATURES.index(name)], flamby[column].to_numpy()), (hospital, name)


def test_moments_count_sum_and_square_only_the_present_values() -> None:
    x = np.array([[1.0, NAN, NAN, 5.0], [3.0, 2.0, NAN, NAN], [NAN, 4.0, NAN, NAN]])
    m = moments(x)
    assert np.array_equal(m.n, [2, 2, 0, 1])
    assert np.array_equal(m.total, [4, 6, 0, 5])
    assert np.array_equal(m.squares, [10, 20, 0, 25])
    mean, std = mean_std(m)
    assert np.allclose(mean, [2, 3, 0, 5])
    assert np.allclose(std, [math.sqrt(2), math.sqrt(2), 0, 0])  # ddof=1; 0 where fewer than 2 values


_columns = arrays(
    np.float64,
    st.tuples(st.integers(1, 12), st.integers(1, 4)),
    elements=st.one_of(st.just(NAN), st.integers(-50, 50).map(lambda v: v / 4.0)),
)


@settings(max_examples=100, deadline=None)
@given(x=_columns, cut=st.integers(0, 12))
def test_combined_moments_of_parts_give_numpys_nan_mean_and_std_of_the_whole(x: np.ndarray, cut: int) -> None:
    cut = min(cut, len(x))
    m = combine([moments(x[:cut]), moments(x[cut:])])
    assert np.array_equal(m.n, (~np.isnan(x)).sum(axis=0))
    mean, std = mean_std(m)
    for j in range(x.shape[1]):
        values = x[~np.isnan(x[:, j]), j]
        assert math.isclose(mean[j], values.mean() if len(values) else 0.0, abs_tol=1e-9)
        want = values.std(ddof=1) if len(values) > 1 else 0.0
        assert math.isclose(std[j], want, rel_tol=1e-6, abs_tol=1e-6)


def test_standardize_fills_missing_with_the_mean_and_divides_by_std_plus_eps() -> None:
    x = np.array([[1.0, NAN, 7.0], [5.0, 2.0, 7.0]])
    mean, std = np.array([3.0, 2.0, 7.0]), np.array([2.0, 1.0, 0.0])
    got = standardize(x, mean, std)
    assert np.allclose(got, [[-2 / (2 + 1e-9), 0.0, 0.0], [2 / (2 + 1e-9), 0.0, 0.0]], rtol=0, atol=1e-15)
    assert np.array_equal(standardize(x, mean, None), [[1.0, 2.0, 7.0], [5.0, 2.0, 7.0]])
    assert np.allclose(unstandardize(got, mean, std), [[1.0, 2.0, 7.0], [5.0, 2.0, 7.0]])
    assert np.array_equal(unstandardize(x[1:], mean, None), x[1:])


def test_unstandardize_restores_a_feature_that_was_constant_in_train() -> None:
    # std 0: standardize only centered the value, so the inverse only adds the mean back
    assert np.array_equal(unstandardize(np.array([[5.0]]), np.array([1.0]), np.array([0.0])), [[6.0]])


def test_unstandardize_multiplies_by_std_plus_eps_exactly_as_standardize_divided() -> None:
    mean, std = np.array([0.0]), np.array([1e-6])
    assert unstandardize(np.array([[1.0]]), mean, std)[0, 0] == 1e-6 + 1e-9
    x = np.array([[3e-6]])
    assert math.isclose(unstandardize(standardize(x, mean, std), mean, std)[0, 0], 3e-6, rel_tol=1e-12)
