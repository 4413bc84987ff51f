"""Privacy accounting: ε equals dp-accounting's own computation, moves the right way, the solver lands under target."""

from __future__ import annotations

import math
from importlib import metadata

import dp_accounting
import pytest

from fedkit.errors import ConfigError, ConfigTypeError
from fedkit.privacy import accounting

FLAMBY_TRAIN = [199, 172, 30, 85]
CASES = [(1.1, 1.0, 15, 1e-3), (0.8, 0.5, 40, 1e-5), (2.0, 4 / 199, 1500, 1e-3), (5.0, 4 / 30, 300, 1e-2)]


def _library_epsilon(z: float, q: float, steps: int, delta: float, accountant: str) -> float:
    """dp-accounting used directly, as its README shows."""
    event = (
        dp_accounting.GaussianDpEvent(z)
        if q == 1
        else dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    )
    fresh = dp_accounting.rdp.RdpAccountant() if accountant == "rdp" else dp_accounting.pld.PLDAccountant()
    return fresh.compose(event, steps).get_epsilon(delta)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
@pytest.mark.parametrize(("z", "q", "steps", "delta"), CASES)
def test_epsilon_equals_the_library_computation(z: float, q: float, steps: int, delta: float, accountant: str) -> None:
    ours = accounting.epsilon(z, delta, q, steps, accountant=accountant)
    assert ours == pytest.approx(_library_epsilon(z, q, steps, delta, accountant), rel=1e-9)


@pytest.mark.parametrize(("z", "steps"), [(1.0, 1), (1.1, 15), (3.0, 100), (10.0, 15)])
def test_unsampled_rounds_agree_with_the_exact_gaussian_mechanism(z: float, steps: int) -> None:
    # T Gaussian releases with noise multiplier z are one Gaussian release with z / sqrt(T); its exact ε
    # (Balle & Wang 2018, analytic Gaussian) is an independent reference: RDP bounds it from above, PLD is tight.
    delta = 1e-5
    exact = dp_accounting.get_epsilon_gaussian(z / math.sqrt(steps), delta)
    rdp = accounting.epsilon(z, delta, 1.0, steps)
    pld = accounting.epsilon(z, delta, 1.0, steps, accountant="pld")
    assert exact <= rdp <= 1.5 * exact + 0.1
    assert pld == pytest.approx(exact, rel=0.01, abs=1e-3)


def test_epsilon_grows_with_steps_and_sampling_and_shrinks_with_noise() -> None:
    delta = 1e-3
    by_steps = [accounting.epsilon(1.2, delta, 0.05, t) for t in (1, 10, 100, 1000)]
    by_noise = [accounting.epsilon(z, delta, 0.05, 100) for z in (0.6, 1.0, 2.0, 8.0)]
    by_rate = [accounting.epsilon(1.2, delta, q, 100) for q in (0.01, 0.1, 0.5, 1.0)]
    assert by_steps == sorted(by_steps) and len(set(by_steps)) == 4
    assert by_noise == sorted(by_noise, reverse=True) and len(set(by_noise)) == 4
    assert by_rate == sorted(by_rate) and len(set(by_rate)) == 4


def test_no_steps_cost_nothing_and_no_noise_costs_everything() -> None:
    assert accounting.epsilon(1.0, 1e-3, 1.0, 0) == 0.0
    assert accounting.epsilon(0.0, 1e-3, 1.0, 1) == math.inf


@pytest.mark.parametrize("target", [0.5, 1.0, 2.0, 4.0, 8.0])
def test_client_level_solve_lands_at_or_below_the_target(target: float) -> None:
    z = accounting.noise_multiplier_for(target, 1e-3, 1.0, 15)
    assert accounting.epsilon(z, 1e-3, 1.0, 15) <= target
    # within the tolerance of the smallest such z: a little less noise overshoots
    assert accounting.epsilon(z - 2 * accounting.NOISE_TOL, 1e-3, 1.0, 15) > target


def test_dpsgd_solve_covers_the_worst_silo() -> None:
    target = 1.0
    rates = accounting.dpsgd_sampling_rates(4, FLAMBY_TRAIN)
    z = accounting.noise_multiplier_for(target, 1e-3, rates, 1500)
    per_silo = accounting.record_level_epsilons(z, 1e-3, batch_size=4, n_train=FLAMBY_TRAIN, steps=[1500] * 4)
    assert max(per_silo) <= target
    # the smallest silo (switzerland, 30 rows: the largest rate) is the one that binds
    assert per_silo.index(max(per_silo)) == 2
    assert max(per_silo) > target - 0.05 * target
    assert accounting.epsilon(z, 1e-3, rates, 1500) == max(per_silo)


def test_pld_solve_lands_at_or_below_the_target() -> None:
    z = accounting.noise_multiplier_for(2.0, 1e-3, 1.0, 15, accountant="pld", tol=1e-2)
    assert accounting.epsilon(z, 1e-3, 1.0, 15, accountant="pld") <= 2.0
    assert accounting.epsilon(z - 2e-2, 1e-3, 1.0, 15, accountant="pld") > 2.0
    # PLD is tighter than RDP: it needs less noise
    assert z < accounting.noise_multiplier_for(2.0, 1e-3, 1.0, 15)


def test_a_target_met_by_the_least_noise_searched_returns_it() -> None:
    assert accounting.noise_multiplier_for(1e4, 1e-3, 1.0, 1) == accounting.MIN_NOISE


def test_record_level_epsilon_counts_each_silos_own_steps() -> None:
    # a silo selected in fewer rounds has taken fewer steps and spent less
    eps = accounting.record_level_epsilons(2.0, 1e-3, batch_size=4, n_train=[100, 100], steps=[1500, 500])
    assert eps[0] > eps[1]
    assert eps[1] == accounting.epsilon(2.0, 1e-3, 0.04, 500)


@pytest.mark.parametrize("delta", [0.25, 0.5, 1.0])
def test_client_level_delta_of_one_over_the_silos_or_more_is_refused(delta: float) -> None:
    with pytest.raises(
        ConfigError,
        match=r"'delta' parameter of client_level_epsilon with n = 4 silos must be a float in the range \(0, 0\.25\)",
    ):
        accounting.client_level_epsilon(1.0, delta, rounds=15, n_silos=4)
    assert accounting.client_level_epsilon(1.0, 0.2, rounds=15, n_silos=4) > 0


def test_record_level_delta_is_bounded_by_the_smallest_silo() -> None:
    with pytest.raises(ConfigError, match=r"'delta' parameter of record_level_epsilons with n = 30 rows"):
        accounting.record_level_epsilons(1.0, 1 / 30, batch_size=4, n_train=FLAMBY_TRAIN, steps=[10] * 4)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (
            lambda: accounting.noise_multiplier_for(0.0, 1e-3, 1.0, 15),
            "'target_epsilon' parameter of noise_multiplier_for",
        ),
        (
            lambda: accounting.noise_multiplier_for(-1.0, 1e-3, 1.0, 15),
            "'target_epsilon' parameter of noise_multiplier_for",
        ),
        (lambda: accounting.epsilon(-0.5, 1e-3, 1.0, 15), "'noise_multiplier' parameter of epsilon"),
        (lambda: accounting.epsilon(1.0, 0.0, 1.0, 15), "'delta' parameter of epsilon"),
        (lambda: accounting.epsilon(1.0, 1e-3, 0.0, 15), "'sampling_rate' parameter of epsilon"),
        (lambda: accounting.epsilon(1.0, 1e-3, 1.5, 15), "'sampling_rate' parameter of epsilon"),
        (lambda: accounting.epsilon(1.0, 1e-3, 1.0, -1), "'steps' parameter of epsilon"),
        (
            lambda: accounting.epsilon(1.0, 1e-3, 1.0, 15, accountant="prv"),
            "'accountant' parameter of epsilon must be one of 'rdp', 'pld'",
        ),
        (lambda: accounting.epsilon(1.0, 1e-3, [0.1, 0.2], [1, 2, 3]), "one value per silo"),
    ],
)
def test_bad_parameters_are_refused_naming_them(call, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        call()


def test_a_float_step_count_is_a_type_error() -> None:
    with pytest.raises(ConfigTypeError, match="'steps' parameter of epsilon must be an int"):
        accounting.epsilon(1.0, 1e-3, 1.0, 1.5)


def test_the_accountant_is_named_with_its_version() -> None:
    assert accounting.accountant_name("pld") == f"dp-accounting {metadata.version('dp-accounting')} pld"
