"""Aggregation strategies: hand-computed helpers, the papers' update rules, robustness, and one contract for all."""

from __future__ import annotations

import math
import sys
from dataclasses import fields, is_dataclass
from typing import get_type_hints

import numpy as np
import pytest

from fedkit import RunConfig
from fedkit.errors import ConfigError
from fedkit.strategies import HYPERPARAMETERS, REGISTRY, make_strategy, options_of
from fedkit.strategies.aggregate import coordinate_median, krum_select, trimmed_mean
from fedkit.strategies.base import Controls
from fedkit.strategies.fedavg import FedAvg
from fedkit.strategies.fedavgm import FedAvgM
from fedkit.strategies.fedmedian import FedMedian
from fedkit.strategies.fedopt import FedAdagrad
from fedkit.strategies.krum import Krum
from fedkit.strategies.trimmedmean import TrimmedMean

FLAMBY_TRAIN_SIZES = np.array([199.0, 172.0, 30.0, 85.0])


def test_coordinate_median_matches_a_hand_computation() -> None:
    updates = np.array([[1.0, 4.0], [3.0, -2.0], [2.0, 8.0], [10.0, 0.0]])
    before = updates.copy()
    # column 0 sorted: 1 2 3 10 -> (2 + 3) / 2 = 2.5 ; column 1 sorted: -2 0 4 8 -> (0 + 4) / 2 = 2
    assert np.array_equal(coordinate_median(updates), [2.5, 2.0])
    # odd count: the middle value; 10 and 8 do not pull it
    assert np.array_equal(coordinate_median(updates[1:]), [3.0, 0.0])
    assert np.array_equal(updates, before)


def test_trimmed_mean_matches_a_hand_computation() -> None:
    updates = np.array([[1.0, 0.0], [9.0, 0.0], [3.0, 6.0], [-50.0, 3.0], [4.0, 100.0]])
    before = updates.copy()
    # trim_beta 0.2 of 5 rows: floor(1.0) = 1 dropped at each end, per coordinate
    # column 0 sorted: -50 [1 3 4] 9 -> 8 / 3 ; column 1 sorted: 0 [0 3 6] 100 -> 9 / 3 = 3
    assert np.allclose(trimmed_mean(updates, 0.2), [8 / 3, 3.0])
    # trim_beta 0.1 of 5 rows: floor(0.5) = 0 dropped -> the plain mean: -33 / 5 ; 109 / 5
    assert np.allclose(trimmed_mean(updates, 0.1), [-6.6, 21.8])
    assert np.array_equal(updates, before)


def test_trimmed_mean_that_would_drop_everything_is_explained() -> None:
    # floor(0.5 * 4) = 2 at each end of 4 rows leaves nothing
    with pytest.raises(ConfigError, match=r"trim_beta=0\.5.*4 silos"):
        trimmed_mean(np.zeros((4, 2)), 0.5)


def test_krum_scores_match_a_hand_computation() -> None:
    updates = np.array([[0.0], [1.0], [3.0], [10.0]])
    before = updates.copy()
    # byzantine 0 -> each row scores its K - f - 2 = 2 nearest squared distances:
    #   0: 1 + 9 = 10 ; 1: 1 + 4 = 5 ; 3: 4 + 9 = 13 ; 10: 49 + 81 = 130
    assert krum_select(updates, 0, 1).tolist() == [1]
    assert krum_select(updates, 0, 4).tolist() == [1, 0, 2, 3]
    # byzantine 1 -> 1 nearest: 0: 1 ; 1: 1 ; 3: 4 ; 10: 49 (the tie goes to the lower index)
    assert krum_select(updates, 1, 2).tolist() == [0, 1]
    # Multi-Krum averages the kept rows with train-size weights: (1 * 1 + 3 * 0) / 4 = 0.25
    params = np.array([2.0], dtype=np.float32)
    new, _ = Krum(byzantine=1, krum_m=2).aggregate(updates, np.array([3.0, 1.0, 1.0, 1.0]), Krum().init(params), params)
    assert np.allclose(new, [2.25]) and new.dtype == np.float32
    assert np.array_equal(updates, before)


def test_krum_with_too_many_byzantine_silos_is_explained() -> None:
    with pytest.raises(ConfigError, match=r"byzantine=2.*at least byzantine \+ 3 = 5.*got 4 silos.*at most 1"):
        krum_select(np.zeros((4, 3)), 2, 1)
    with pytest.raises(ConfigError, match=r"krum_m=5.*4 silos"):
        krum_select(np.zeros((4, 3)), 0, 5)


def test_krum_with_too_many_byzantine_silos_is_rejected_up_front() -> None:
    # the flamby split has 4 silos; Krum needs byzantine + 3 of them per round
    with pytest.raises(ConfigError, match=r"byzantine \+ 3 silos per round; with byzantine=2 this run trains 4"):
        RunConfig(strategy="krum", byzantine=2)
    with pytest.raises(ConfigError, match=r"trains 2 silo\(s\) per round"):
        RunConfig(strategy="krum", split="iid", silos=4, fraction=0.5)
    RunConfig(strategy="krum", byzantine=1)


def test_fedavgm_matches_a_hand_computation() -> None:
    updates = np.array([[0.1, -0.2], [0.3, 0.0], [-0.1, 0.4]])
    weights = np.array([1.0, 2.0, 1.0])
    # delta = (1 * u0 + 2 * u1 + 1 * u2) / 4 = [0.6 / 4, 0.2 / 4] = [0.15, 0.05]
    strategy = FedAvgM(server_lr=2.0, server_momentum=0.5)
    params = np.array([1.0, 1.0])
    p1, s1 = strategy.aggregate(updates, weights, strategy.init(params), params)
    # m1 = 0.5 * 0 + delta = [0.15, 0.05] ; p1 = 1 + 2 * m1 = [1.3, 1.1]
    assert np.allclose(s1.momentum, [0.15, 0.05]) and np.allclose(p1, [1.3, 1.1])
    p2, s2 = strategy.aggregate(updates, weights, s1, p1)
    # m2 = 0.5 * m1 + delta = [0.225, 0.075] ; p2 = p1 + 2 * m2 = [1.75, 1.25]
    assert np.allclose(s2.momentum, [0.225, 0.075]) and np.allclose(p2, [1.75, 1.25])
    plain = FedAvgM(server_lr=1.0, server_momentum=0.0)
    assert np.allclose(plain.aggregate(updates, weights, plain.init(params), params)[0], [1.15, 1.05])


def reddi_algorithm_2(
    variant: str,
    rounds: list[tuple[list[list[float]], list[float]]],
    x: list[float],
    eta: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[list[float], list[float], list[float]]:
    """Reddi et al. 2021, Algorithm 2, one coordinate at a time in plain floats (v_{-1} = tau^2)."""
    x, m, v = list(x), [0.0] * len(x), [tau**2] * len(x)
    for updates, weights in rounds:
        for j in range(len(x)):
            delta = sum(w * u[j] for u, w in zip(updates, weights, strict=True)) / sum(weights)
            m[j] = beta1 * m[j] + (1 - beta1) * delta
            if variant == "fedadagrad":
                v[j] = v[j] + delta**2
            elif variant == "fedadam":
                v[j] = beta2 * v[j] + (1 - beta2) * delta**2
            else:
                gap = v[j] - delta**2
                v[j] = v[j] - (1 - beta2) * delta**2 * ((gap > 0) - (gap < 0))
            x[j] = x[j] + eta * m[j] / (math.sqrt(v[j]) + tau)
    return x, m, v


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_adaptive_strategies_follow_reddi_algorithm_2_over_two_rounds(name: str) -> None:
    rounds = [
        ([[0.1, -0.2, 0.0], [0.3, 0.0, 0.5], [-0.1, 0.4, 0.0]], [1.0, 2.0, 1.0]),
        ([[-0.2, 0.1, 0.3], [0.0, 0.05, -0.1], [0.4, -0.3, 0.2]], [5.0, 1.0, 4.0]),
    ]
    hyper = {"server_lr": 0.1, "beta1": 0.8, "beta2": 0.9, "tau": 1e-2}
    strategy = make_strategy(name, **{k: v for k, v in hyper.items() if k in options_of(name)})
    params = np.array([1.0, -1.0, 0.5])
    state = strategy.init(params)
    for updates, weights in rounds:
        params, state = strategy.aggregate(np.array(updates), np.array(weights), state, params)
    x, m, v = reddi_algorithm_2(name, rounds, [1.0, -1.0, 0.5], 0.1, 0.8, 0.9, 1e-2)
    assert np.allclose(params, x, rtol=0, atol=1e-12)
    assert np.allclose(state.m, m, rtol=0, atol=1e-12) and np.allclose(state.v, v, rtol=0, atol=1e-12)


def test_fedadagrad_first_step_is_about_server_lr_times_one_minus_beta1_per_coordinate() -> None:
    # m = 0.1 * delta, v = tau^2 + delta^2 ~ delta^2 -> step = 0.316228 * 0.1 * sign(delta)
    params = np.zeros(2)
    strategy = FedAdagrad()
    new, _ = strategy.aggregate(np.array([[0.15, -0.002]]), np.array([1.0]), strategy.init(params), params)
    assert np.allclose(new, [0.0316228, -0.0316228], rtol=1e-5)


def honest_and_one_outlier() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    honest = rng.normal(1.0, 0.01, size=(5, 3))
    return np.vstack([honest, np.full((1, 3), 1e6)]), np.array([50.0, 60.0, 70.0, 80.0, 90.0, 500.0])


@pytest.mark.parametrize(
    "strategy",
    [FedMedian(), TrimmedMean(trim_beta=0.2), Krum(byzantine=1), Krum(byzantine=1, krum_m=3)],
    ids=["fedmedian", "trimmedmean", "krum", "multikrum"],
)
def test_robust_strategies_ignore_one_huge_outlier(strategy) -> None:
    updates, weights = honest_and_one_outlier()
    params = np.zeros(3)
    new, _ = strategy.aggregate(updates, weights, strategy.init(params), params)
    assert np.allclose(new, updates[:5].mean(axis=0), atol=0.03)
    fedavg, _ = FedAvg().aggregate(updates, weights, FedAvg().init(params), params)
    assert (fedavg > 1e5).all()  # the same outlier does move the plain weighted mean


def declared_state(strategy) -> type:
    return get_type_hints(type(strategy).aggregate)["state"]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_strategy_keeps_the_contract(name: str) -> None:
    cls = REGISTRY[name]
    assert is_dataclass(cls) and cls.__dataclass_params__.frozen
    first, *hyper = fields(cls)
    assert first.name == "name" and first.default == name
    assert {f.name for f in hyper} <= set(HYPERPARAMETERS)
    assert cls.__doc__ and sys.modules[cls.__module__].__doc__
    strategy = make_strategy(name)  # default hyperparameters
    rng = np.random.default_rng(1)
    params = rng.normal(size=7).astype(np.float32)
    state = strategy.init(params)
    assert isinstance(state, declared_state(strategy)) and isinstance(state, tuple) and hasattr(state, "_fields")
    for _ in range(2):
        updates = rng.normal(scale=0.1, size=(4, 7)).astype(np.float32)
        controls = Controls(rng.normal(scale=0.1, size=(4, 7)), n_silos=6)  # every strategy takes them
        copies = (params.copy(), updates.copy(), FLAMBY_TRAIN_SIZES.copy(), [np.copy(a) for a in state])
        deltas = controls.deltas.copy()
        new, new_state = strategy.aggregate(updates, FLAMBY_TRAIN_SIZES, state, params, controls)
        assert np.array_equal(controls.deltas, deltas)
        assert new.shape == params.shape and new.dtype == params.dtype and np.isfinite(new).all()
        assert type(new_state) is type(state)
        assert all(np.isfinite(a).all() for a in new_state)
        arrays = [a for a in (*state, *new_state) if isinstance(a, np.ndarray)]
        assert all(a.dtype == np.float64 for a in arrays)  # state in float64 whatever the params' dtype
        assert np.array_equal(params, copies[0]) and np.array_equal(updates, copies[1])
        assert np.array_equal(FLAMBY_TRAIN_SIZES, copies[2])
        assert all(np.array_equal(a, b) for a, b in zip(state, copies[3], strict=True))
        assert not np.array_equal(new, params)
        params, state = new, new_state


VALID = {
    "server_lr": 0.5,
    "server_momentum": 0.5,
    "beta1": 0.5,
    "beta2": 0.5,
    "tau": 0.01,
    "trim_beta": 0.2,
    "byzantine": 1,
    "krum_m": 2,
    "mu": 0.1,
}


@pytest.mark.parametrize("name", list(REGISTRY))
def test_run_config_hyperparameters_reach_the_strategy(name: str) -> None:
    options = {k: VALID[k] for k in options_of(name)}
    config = RunConfig(strategy=name, **options)
    strategy = make_strategy(name, **config.strategy_options)
    assert {k: getattr(strategy, k) for k in options} == options


def test_invalid_server_lr_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'server_lr' parameter of RunConfig must be a float in the range \(0"):
        RunConfig(strategy="fedadam", server_lr=0.0)


def test_hyperparameter_of_another_strategy_is_rejected_naming_who_takes_it() -> None:
    with pytest.raises(
        ConfigError, match=r"'server_lr'.*only applies to strategy .*fedavgm / scaffold / fedadam / fedyogi"
    ) as e:
        RunConfig(strategy="fedavg", server_lr=0.1)
    assert "fedadagrad" in str(e.value) and "strategy='fedavg'" in str(e.value)
    with pytest.raises(ConfigError, match=r"'byzantine'.*only applies to strategy krum"):
        RunConfig(strategy="fedmedian", byzantine=1)
