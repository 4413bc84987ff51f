"""Client-level DP-FedAvg: clipping bounds every contribution, the noise has the stated std, shares add up."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedkit import seeding
from fedkit.errors import ConfigError
from fedkit.privacy import dp

SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(7,), (5, 7), (3, 4, 7)])
def test_clipping_bounds_every_vector_and_keeps_short_ones(seed: int, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * rng.lognormal(0, 2, size=(*shape[:-1], 1))  # norms spread over decades
    clip = float(rng.uniform(0.1, 5))
    before = x.copy()
    out = dp.clip_to_norm(x, clip)
    norms, out_norms = np.linalg.norm(x, axis=-1), np.linalg.norm(out, axis=-1)
    assert np.all(out_norms <= clip)
    long = norms > clip
    # long vectors land on the sphere (up to Opacus's 1e-6 in the divisor), in their own direction
    assert np.allclose(out_norms[long], clip * norms[long] / (norms[long] + dp.CLIP_EPS))
    assert np.allclose(out[long] * norms[long][:, None] / out_norms[long][:, None], x[long])
    # short ones are kept, up to the factor clip / (norm + 1e-6) when that is below 1
    assert np.allclose(out[~long], x[~long], rtol=1e-5)
    assert np.array_equal(x, before)


def test_a_zero_update_stays_zero() -> None:
    assert np.array_equal(dp.clip_to_norm(np.zeros((2, 3)), 1.0), np.zeros((2, 3)))


@pytest.mark.parametrize("clip", [0, -1.0, math.inf, math.nan])
def test_a_non_positive_clip_is_refused_naming_it(clip: float) -> None:
    with pytest.raises(ConfigError, match=r"'clip' parameter of clip_to_norm must be a float in the range \(0, inf\)"):
        dp.clip_to_norm(np.ones(3), clip)


def test_silo_weights_are_bounded_by_one_and_follow_the_cap() -> None:
    n = [199, 172, 30, 85]
    assert dp.silo_weights(n).tolist() == [1.0, 1.0, 1.0, 1.0]
    # McMahan et al.'s min(n_k / cap, 1): cap = max n keeps FedAvg's proportions
    assert np.allclose(dp.silo_weights(n, cap=199), np.array(n) / 199)
    assert dp.silo_weights(n, cap=100).tolist() == [1.0, 1.0, 0.3, 0.85]
    with pytest.raises(ConfigError, match="'cap' parameter of silo_weights"):
        dp.silo_weights(n, cap=0)


def test_weights_outside_zero_one_are_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match=r"one weight in \[0, 1\] per update.*silo_weights"):
        dp.private_sum(
            np.ones((2, 3)), np.array([199.0, 30.0]), clip=1.0, noise_multiplier=1.0, rng=np.random.default_rng(0)
        )


def test_private_sum_without_noise_is_the_weighted_sum_of_clipped_updates() -> None:
    updates = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, -10.0]])  # norms 5, 0.5, 10
    weights = np.array([1.0, 0.5, 0.2])
    before = updates.copy()
    out = dp.private_sum(updates, weights, clip=1.0, noise_multiplier=0.0, rng=np.random.default_rng(0))
    expected = 1.0 * np.array([0.6, 0.8]) + 0.5 * np.array([0.3, 0.4]) + 0.2 * np.array([0.0, -1.0])
    assert np.allclose(out, expected, atol=1e-6)
    assert np.array_equal(updates, before)


def test_one_silo_moves_the_clipped_sum_by_at_most_its_weight_times_the_clip() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        updates = rng.normal(size=(4, 20)) * rng.lognormal(0, 2, size=(4, 1))
        weights = rng.uniform(0, 1, size=4)
        clip = float(rng.uniform(0.1, 3))
        with_all = dp.private_sum(updates, weights, clip=clip, noise_multiplier=0.0, rng=rng)
        without_last = dp.private_sum(updates[:3], weights[:3], clip=clip, noise_multiplier=0.0, rng=rng)
        assert np.linalg.norm(with_all - without_last) <= weights[3] * clip + 1e-12


def _std_tolerance(n: int) -> float:
    """Six standard errors of a sample std (relative SE = 1 / sqrt(2 n) for Gaussian samples)."""
    return 6 / math.sqrt(2 * n)


@pytest.mark.parametrize(("z", "clip"), [(1.0, 1.0), (0.7, 2.5), (4.0, 0.1)])
def test_central_noise_has_std_z_times_clip(z: float, clip: float) -> None:
    draws = 200_000
    out = dp.private_sum(
        np.zeros((3, draws)), np.ones(3), clip=clip, noise_multiplier=z, rng=dp.central_noise_stream(42, 1)
    )
    # relative tolerance 6 / sqrt(2 * 200000) = 0.95%: a true std off by 1% fails
    assert abs(out.std() / (z * clip) - 1) < _std_tolerance(draws)
    assert abs(out.mean()) < 6 * z * clip / math.sqrt(draws)


@pytest.mark.parametrize("shares", [1, 3, 4, 10])
def test_distributed_shares_sum_to_std_z_times_clip(shares: int) -> None:
    draws, z, clip = 100_000, 1.3, 0.8
    total = sum(
        dp.noise_share(draws, clip=clip, noise_multiplier=z, shares=shares, rng=dp.silo_noise_stream(7, 2, silo))
        for silo in range(shares)
    )
    assert abs(total.std() / (z * clip) - 1) < _std_tolerance(draws)


def test_dropouts_leave_less_noise_in_the_sum_and_a_threshold_restores_it() -> None:
    draws, z, clip, n = 100_000, 1.0, 1.0, 4
    survivors = 3
    # shares sized for all 4 silos, one drops: std z*C*sqrt(3/4)
    total = sum(
        dp.noise_share(draws, clip=clip, noise_multiplier=z, shares=n, rng=dp.silo_noise_stream(0, 1, s))
        for s in range(survivors)
    )
    assert abs(total.std() / (z * clip * math.sqrt(survivors / n)) - 1) < _std_tolerance(draws)
    # shares sized for the threshold t = 3: any 3 survivors carry at least z*C
    total = sum(
        dp.noise_share(draws, clip=clip, noise_multiplier=z, shares=survivors, rng=dp.silo_noise_stream(0, 1, s))
        for s in range(survivors)
    )
    assert abs(total.std() / (z * clip) - 1) < _std_tolerance(draws)


def test_distributed_contributions_add_up_to_the_central_clipped_sum() -> None:
    rng = np.random.default_rng(3)
    updates = rng.normal(size=(4, 10)) * 3
    weights = dp.silo_weights([199, 172, 30, 85], cap=100)
    sent = [
        dp.silo_contribution(u, w, clip=1.0, noise_multiplier=0.0, shares=4, rng=dp.silo_noise_stream(0, 1, k))
        for k, (u, w) in enumerate(zip(updates, weights, strict=True))
    ]
    central = dp.private_sum(updates, weights, clip=1.0, noise_multiplier=0.0, rng=dp.central_noise_stream(0, 1))
    assert np.allclose(np.sum(sent, axis=0), central)


def test_noise_is_reproducible_from_the_seed_and_apart_from_other_streams() -> None:
    a = dp.private_sum(np.zeros((1, 50)), np.ones(1), clip=1.0, noise_multiplier=1.0, rng=dp.central_noise_stream(5, 3))
    b = dp.private_sum(np.zeros((1, 50)), np.ones(1), clip=1.0, noise_multiplier=1.0, rng=dp.central_noise_stream(5, 3))
    assert np.array_equal(a, b)
    other_round = dp.central_noise_stream(5, 4).standard_normal(50)
    silo_0 = dp.silo_noise_stream(5, 3, 0).standard_normal(50)  # a trailing 0 key must not fall back on the server's
    silo_1 = dp.silo_noise_stream(5, 3, 1).standard_normal(50)
    sampling = seeding.stream(5, seeding.SAMPLING, 3).standard_normal(50)
    assert not np.allclose(silo_0, silo_1)
    for other in (other_round, silo_0, silo_1, sampling):
        assert not np.allclose(a, other)


def test_private_mean_divides_by_the_fixed_expected_total_weight() -> None:
    weights = dp.silo_weights([199, 172, 30, 85])
    denominator = dp.expected_total_weight(weights, 0.5)
    assert denominator == 2.0  # q * W = 0.5 * 4, whichever silos report
    assert np.allclose(dp.private_mean(np.array([1.0, -4.0]), denominator), [0.5, -2.0])
    with pytest.raises(ConfigError, match="'sampling_rate' parameter of expected_total_weight"):
        dp.expected_total_weight(weights, 0.0)
