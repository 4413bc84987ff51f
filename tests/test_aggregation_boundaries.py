"""The shared aggregation maths at its boundaries, against scipy and brute-force references.

Trimmed mean at the largest valid trim, Krum with ties on more rows than numpy's small-array sort
(16), where only a stable sort keeps the documented "ties go to the lower index".
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import trim_mean

from fedkit.errors import ConfigError
from fedkit.strategies.aggregate import coordinate_median, krum_select, trimmed_mean, weighted_mean


@pytest.mark.parametrize(("count", "trim_beta"), [(5, 0.4), (3, 0.34), (7, 0.43), (9, 0.49)])
def test_trimmed_mean_at_the_largest_valid_trim_keeps_the_middle_row(count: int, trim_beta: float) -> None:
    # floor(beta * K) = (K - 1) / 2 rows dropped at each end: one row is left, the median
    rows = np.random.default_rng(count).normal(size=(count, 6))
    assert np.allclose(trimmed_mean(rows, trim_beta), np.median(rows, axis=0))


@pytest.mark.parametrize(("count", "trim_beta"), [(4, 0.5), (2, 0.5), (6, 0.5), (3, 0.67)])
def test_trimmed_mean_that_leaves_no_row_is_refused(count: int, trim_beta: float) -> None:
    with pytest.raises(ConfigError, match=f"trim_beta={trim_beta}"):
        trimmed_mean(np.ones((count, 2)), trim_beta)


@settings(max_examples=200, deadline=None)
@given(
    rows=arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(1, 3)), elements=st.integers(-9, 9)),
    trim_beta=st.floats(0, 0.5, exclude_max=True),
)
def test_trimmed_mean_equals_scipys_trim_mean(rows: np.ndarray, trim_beta: float) -> None:
    cut = math.floor(trim_beta * len(rows))
    if 2 * cut >= len(rows):
        with pytest.raises(ConfigError):
            trimmed_mean(rows, trim_beta)
        return
    assert np.allclose(trimmed_mean(rows, trim_beta), trim_mean(rows, trim_beta, axis=0))


def _krum_reference(rows: np.ndarray, byzantine: int, krum_m: int) -> list[int]:
    """Blanchard et al. 2017 by brute force: squared distances to the K - f - 2 nearest others, ties by index."""
    count = len(rows)
    scores = []
    for i in range(count):
        distances = sorted(float(((rows[i] - rows[j]) ** 2).sum()) for j in range(count) if j != i)
        scores.append(sum(distances[: count - byzantine - 2]))
    return sorted(range(count), key=lambda i: (scores[i], i))[:krum_m]


def test_krum_ties_on_more_than_sixteen_rows_go_to_the_lower_index() -> None:
    # 20 identical honest rows tie exactly; two far-away rows score worst
    rows = np.vstack([np.zeros((10, 3)), [[50.0, 50.0, 50.0]], np.zeros((10, 3)), [[-40.0, 0.0, 0.0]]])
    assert krum_select(rows, byzantine=2, krum_m=22).tolist() == [*range(10), *range(11, 21), 21, 10]
    assert krum_select(rows, byzantine=2, krum_m=22).tolist() == _krum_reference(rows, 2, 22)


@settings(max_examples=100, deadline=None)
@given(
    rows=arrays(np.float64, st.tuples(st.integers(3, 30), st.integers(1, 3)), elements=st.integers(-2, 2)),
    byzantine=st.integers(0, 5),
    data=st.data(),
)
def test_krum_equals_a_brute_force_reference_with_ties(rows: np.ndarray, byzantine: int, data) -> None:
    count = len(rows)
    byzantine = min(byzantine, count - 3)
    krum_m = data.draw(st.integers(1, count))
    assert krum_select(rows, byzantine, krum_m).tolist() == _krum_reference(rows, byzantine, krum_m)


def test_krum_that_would_average_more_rows_than_it_has_is_refused() -> None:
    with pytest.raises(ConfigError, match="krum_m=5"):
        krum_select(np.zeros((4, 2)), byzantine=0, krum_m=5)
    assert len(krum_select(np.zeros((4, 2)), byzantine=1, krum_m=4)) == 4  # byzantine + 3 silos is enough


@settings(max_examples=100, deadline=None)
@given(
    rows=arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(1, 4)), elements=st.integers(-100, 100)),
    data=st.data(),
)
def test_weighted_mean_and_median_equal_numpy(rows: np.ndarray, data) -> None:
    weights = np.array(data.draw(st.lists(st.integers(1, 50), min_size=len(rows), max_size=len(rows))), float)
    assert np.allclose(weighted_mean(rows, weights), np.average(rows, axis=0, weights=weights))
    assert np.allclose(coordinate_median(rows), np.median(rows, axis=0))


def test_aggregation_leaves_its_inputs_untouched() -> None:
    rows = np.arange(20.0).reshape(5, 4)[::-1].copy()
    before = rows.copy()
    for fn in (lambda r: trimmed_mean(r, 0.2), coordinate_median, lambda r: krum_select(r, 1, 2)):
        fn(rows)
        assert np.array_equal(rows, before)


def test_median_of_float32_updates_is_computed_in_float64() -> None:
    # the mean of the two middle values, 1 + 2**-24, is not a float32: only float64 arithmetic gets it exactly
    rows = np.array([[1.0], [1.0 + 2**-23], [0.0], [5.0]], dtype=np.float32)
    got = coordinate_median(rows)
    assert got.dtype == np.float64 and got[0] == 1.0 + 2**-24


def test_krum_scores_float32_updates_in_float64_so_large_updates_do_not_overflow() -> None:
    # squared distances of 1e20-sized float32 rows overflow float32 (max 3.4e38) and would all tie at inf
    rows = np.array([[0.0], [1e20], [3e20], [-2e20], [7e20], [2e20]], dtype=np.float32)
    want = _krum_reference(rows.astype(np.float64), 1, 6)
    assert krum_select(rows, 1, 6).tolist() == want
    assert want != list(range(6))  # the float64 order is not the index order an all-inf tie would give


def test_trimmed_mean_of_float32_updates_is_computed_in_float64() -> None:
    # (1 + (1 + 2**-23)) / 2 = 1 + 2**-24 is exact in float64; float32 arithmetic rounds it to 1
    rows = np.array([[1.0], [1.0 + 2**-23]], dtype=np.float32)
    got = trimmed_mean(rows, 0.0)
    assert got.dtype == np.float64 and got[0] == 1.0 + 2**-24


def test_krum_that_lacks_silos_says_how_many_byzantine_it_can_take() -> None:
    message = (
        "krum with byzantine=1 needs at least byzantine + 3 = 4 silos per round; got 2 silos this round. "
        "Lower byzantine to at most 0 or use more silos (or a larger fraction)."
    )
    with pytest.raises(ConfigError) as error:
        krum_select(np.zeros((2, 3)), 1, 1)
    assert str(error.value) == message


def test_fedyogi_leaves_v_unchanged_where_delta_squared_equals_v() -> None:
    # Reddi et al. 2021: v - (1 - beta2) delta^2 sign(v - delta^2); the sign is 0 when v = delta^2 (here tau^2)
    from fedkit.strategies.fedopt import FedYogi

    strategy = FedYogi(tau=1e-8)
    params = np.zeros(2)
    state = strategy.init(params)
    new, state = strategy.aggregate(np.array([[1e-8, 0.0]]), np.array([1.0]), state, params)
    assert state.v[0] == 1e-8**2 and np.isfinite(new).all()


@pytest.mark.parametrize(("count", "trim_beta", "limit"), [(4, 0.5, "0.5"), (5, 0.6, "0.6")])
def test_trimmed_mean_that_leaves_no_row_names_the_largest_trim_that_works(count, trim_beta, limit) -> None:
    # below (floor((K - 1) / 2) + 1) / K the trim keeps at least one row: 4 rows up to 0.5, 5 rows up to 0.6
    cut = math.floor(trim_beta * count)
    message = (
        f"trimmedmean with trim_beta={trim_beta} drops {cut} updates at each end of the {count} silos of this round, "
        f"leaving none; set trim_beta below {limit} or use more silos."
    )
    with pytest.raises(ConfigError) as error:
        trimmed_mean(np.zeros((count, 1)), trim_beta)
    assert str(error.value) == message
    assert np.isfinite(trimmed_mean(np.zeros((count, 1)), float(limit) - 1e-9)).all()


def test_weighted_mean_normalizes_float32_weights_in_float64() -> None:
    # 1/7 and 3/7 in float32 differ from float64 in the 8th digit; the mean is documented as float64
    rows = np.array([[1.0, -2.0], [0.5, 4.0], [3.0, 0.25]])
    weights = np.array([1.0, 3.0, 3.0], dtype=np.float32)
    assert np.array_equal(weighted_mean(rows, weights), weighted_mean(rows, weights.astype(np.float64)))
