"""Privacy accounting: ε at δ of the sampled Gaussian mechanism, through Google's ``dp-accounting``.

Both of fedkit's mechanisms are compositions of the Poisson-sampled Gaussian mechanism (Mironov
et al. 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism") under the
add-or-remove-one neighbouring relation:

- client-level DP-FedAvg (:mod:`fedkit.privacy.dp`): one composition per round, sampling rate
  ``q`` = the rate at which silos are selected, noise multiplier ``z`` = noise std / (max weight ×
  clip). With every silo in every round (``fraction = 1``, the FLamby protocol) ``q = 1`` and the
  accounting is exact. A rate ``q < 1`` is valid only if each silo is selected independently with
  probability ``q`` (Poisson); fedkit's default selection draws exactly ``round(fraction * K)``
  silos, for which the conservative account is ``q = 1`` (every round counted in full): see
  :func:`client_level_epsilon`.
- record-level DP-SGD (:mod:`fedkit.privacy.dpsgd`): inside silo k, one composition per local
  step, ``q_k = batch_size / n_k`` (Poisson batches), ``steps_k = local steps × the rounds silo k
  trains in`` (the selection depends on the seed only, so counting the rounds it was actually
  selected is exact; counting every round is the conservative bound before the run). The silos'
  record sets are disjoint, so the federation's ε is the largest silo's (parallel composition).

Two accountants: ``"rdp"`` (Rényi DP, dp-accounting's default orders; the standard bound) and
``"pld"`` (privacy loss distributions, tighter, slower). Both give upper bounds on the true ε.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from fedkit._validation import Interval, Options, validate_params
from fedkit.errors import ConfigError
from fedkit.result import accountant_label

if TYPE_CHECKING:
    import dp_accounting

Accountant = Literal["rdp", "pld"]
ACCOUNTANTS: tuple[str, ...] = ("rdp", "pld")
NOISE_TOL = 1e-4
"""Absolute tolerance of :func:`noise_multiplier_for`: its ``z`` is within this of the smallest meeting the target."""
PLD_DISCRETIZATION = 1e-4
"""Value discretization interval of the PLD accountant (dp-accounting's default)."""
MIN_NOISE = 0.05
"""The smallest noise multiplier :func:`noise_multiplier_for` searches: below it RDP's bounds are meaningless."""

_Z = Interval(float, 0, None, closed="left")
_Q = Interval(float, 0, 1, closed="right")
_STEPS = Interval(int, 0, None)
_EPS = Interval(float, 0, None, closed="neither")
_ACCOUNTANT = Options(ACCOUNTANTS)


class PrivacySpent(NamedTuple):
    """What a run reports as ``final.privacy`` (and ε at δ after every round).

    Parameters
    ----------
    mechanism
        ``"dp-fedavg"`` (client level) or ``"dp-sgd"`` (record level).
    epsilon
        The ε spent.
    delta
        The δ of (ε, δ)-DP.
    noise_multiplier
        The noise multiplier z (noise std over the clip norm).
    clip
        The L2 clipping norm C.
    accountant
        The accountant that computed ε (:func:`accountant_name`).
    """

    mechanism: str
    """``"central"`` or ``"distributed"`` (client-level DP-FedAvg) or ``"dpsgd"`` (record-level)."""
    epsilon: float
    delta: float
    noise_multiplier: float
    clip: float
    accountant: str
    """e.g. ``"dp-accounting 0.6.0 rdp"``: the library, its version and the method."""


def accountant_name(accountant: Accountant = "rdp") -> str:
    """``"dp-accounting <version> <method>"``, for the run summary.

    Parameters
    ----------
    accountant
        ``"rdp"`` (Rényi DP) or ``"pld"`` (privacy loss distributions), as dp-accounting computes them.
    """
    return accountant_label(accountant)


@contextmanager
def _quiet() -> Iterator[None]:
    """Hold back dp-accounting's absl warnings that an RDP order failed to converge and was left out.

    Leaving an order out keeps the bound valid (slightly looser); at small z the solver's first guesses
    produce screens of these warnings, which tell a user nothing to do.
    """
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _fresh(accountant: Accountant) -> dp_accounting.PrivacyAccountant:
    """A new, empty accountant of the given kind (add-or-remove-one relation)."""
    import dp_accounting

    if accountant == "rdp":
        return dp_accounting.rdp.RdpAccountant()
    return dp_accounting.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)


def sampled_gaussian_event(noise_multiplier: float, sampling_rate: float, steps: int) -> dp_accounting.DpEvent:
    """``steps`` compositions of the Gaussian mechanism with noise multiplier ``z``, Poisson-sampled at rate ``q``.

    Parameters
    ----------
    noise_multiplier
        The noise multiplier z (noise std over the clip norm).
    sampling_rate
        The Poisson sampling rate q; ``q = 1`` is the plain Gaussian mechanism (no sampling, no amplification).
    steps
        The number of compositions, one for all or one per silo.
    """
    import dp_accounting

    event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1:
        event = dp_accounting.PoissonSampledDpEvent(sampling_rate, event)
    return dp_accounting.SelfComposedDpEvent(event, steps)


def _epsilon(noise_multiplier: float, delta: float, sampling_rate: float, steps: int, accountant: Accountant) -> float:
    """ε of one silo's composition, unvalidated (0 for no steps, inf for no noise)."""
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    event = sampled_gaussian_event(noise_multiplier, sampling_rate, steps)
    with _quiet():
        return float(_fresh(accountant).compose(event).get_epsilon(delta))


def _check(caller: str, **params: object) -> None:
    """Validate the named parameters against this module's constraints."""
    constraints = {
        "noise_multiplier": [_Z],
        "sampling_rate": [_Q],
        "steps": [_STEPS],
        "target_epsilon": [_EPS],
        "accountant": [_ACCOUNTANT],
        "delta": [Interval(float, 0, 1, closed="neither")],
    }
    validate_params(params, {name: constraints[name] for name in params}, caller)


def _check_delta(delta: float, n: int, unit: str, caller: str) -> None:
    """δ must be in (0, 1/n): a δ of 1/n or more allows a mechanism that publishes one of n rows (or silos) outright."""
    validate_params(
        {"delta": delta}, {"delta": [Interval(float, 0, 1 / n, closed="neither")]}, f"{caller} with n = {n} {unit}"
    )


def _per_silo(
    sampling_rate: float | Sequence[float], steps: int | Sequence[int], caller: str
) -> list[tuple[float, int]]:
    """Validated pairs ``(q_k, steps_k)``, one per silo; a scalar stands for every silo."""
    qs = [sampling_rate] if np.isscalar(sampling_rate) else list(sampling_rate)  # type: ignore[list-item]
    ts = [steps] if np.isscalar(steps) else list(steps)  # type: ignore[list-item]
    if len(qs) == 1 and len(ts) > 1:
        qs = qs * len(ts)
    if len(ts) == 1 and len(qs) > 1:
        ts = ts * len(qs)
    if len(qs) != len(ts) or not qs:
        raise ConfigError(
            f"The 'sampling_rate' ({len(qs)} values) and 'steps' ({len(ts)} values) parameters of {caller} "
            "must give one value per silo, or one for all silos."
        )
    for q, t in zip(qs, ts, strict=True):
        _check(caller, sampling_rate=q, steps=t)
    return list(zip(qs, ts, strict=True))


def epsilon(
    noise_multiplier: float,
    delta: float,
    sampling_rate: float | Sequence[float],
    steps: int | Sequence[int],
    *,
    accountant: Accountant = "rdp",
) -> float:
    """ε at ``delta`` after ``steps`` compositions of the ``sampling_rate``-sampled Gaussian mechanism.

    0 for no steps; ``inf`` for ``noise_multiplier = 0``.

    Parameters
    ----------
    noise_multiplier
        The noise multiplier z (noise std over the clip norm).
    delta
        The δ of (ε, δ)-DP.
    sampling_rate
        The Poisson sampling rate q, one for all or one per silo (disjoint data: the largest silo ε, parallel
        composition).
    steps
        The number of compositions, one for all or one per silo.
    accountant
        ``"rdp"`` (Rényi DP) or ``"pld"`` (privacy loss distributions), as dp-accounting computes them.
    """
    _check("epsilon", noise_multiplier=noise_multiplier, delta=delta, accountant=accountant)
    pairs = _per_silo(sampling_rate, steps, "epsilon")
    return max(_epsilon(noise_multiplier, delta, q, t, accountant) for q, t in pairs)


def noise_multiplier_for(
    target_epsilon: float,
    delta: float,
    sampling_rate: float | Sequence[float],
    steps: int | Sequence[int],
    *,
    accountant: Accountant = "rdp",
    tol: float = NOISE_TOL,
) -> float:
    """The smallest noise multiplier (within ``tol``) whose :func:`epsilon` is at or below ``target_epsilon``.

    Root finding on the accountant itself: dp-accounting's ``calibrate_dp_mechanism`` (Brent's
    method on a bracket, then one step of ``tol`` up if needed, so the answer always lands at or
    below the target) for each distinct silo ``(q_k, steps_k)``, and the largest of those ``z``:
    ε falls as ``z`` grows, so the worst silo meets the target exactly when all do. The search
    starts at :data:`MIN_NOISE`, returned when even that meets the target.

    Parameters
    ----------
    target_epsilon
        The ε to meet.
    delta
        The δ of (ε, δ)-DP.
    sampling_rate
        The Poisson sampling rate q, one for all or one per silo.
    steps
        The number of compositions, one for all or one per silo.
    accountant
        ``"rdp"`` (Rényi DP) or ``"pld"`` (privacy loss distributions), as dp-accounting computes them.
    tol
        Tolerance of the noise multiplier.
    """
    import dp_accounting

    _check("noise_multiplier_for", target_epsilon=target_epsilon, delta=delta, accountant=accountant)
    pairs = _per_silo(sampling_rate, steps, "noise_multiplier_for")
    validate_params({"tol": tol}, {"tol": [Interval(float, 0, 1, closed="neither")]}, "noise_multiplier_for")

    def solve(q: float, t: int) -> float:
        if _epsilon(MIN_NOISE, delta, q, t, "rdp") <= target_epsilon:
            return MIN_NOISE  # RDP bounds PLD from above: PLD meets the target there too
        bracket: dp_accounting.mechanism_calibration.BracketInterval = dp_accounting.LowerEndpointAndGuess(
            MIN_NOISE, 1.0
        )
        if accountant == "pld":  # PLD is slow at small z: bracket it from the RDP answer, which it rarely exceeds
            high = solve_rdp(q, t)
            if _epsilon(high, delta, q, t, "pld") > target_epsilon:
                bracket = dp_accounting.LowerEndpointAndGuess(high, 2 * high)
            else:
                low = max(MIN_NOISE, high / 2)
                while low > MIN_NOISE and _epsilon(low, delta, q, t, "pld") <= target_epsilon:
                    high, low = low, max(MIN_NOISE, low / 2)
                if _epsilon(low, delta, q, t, "pld") <= target_epsilon:
                    return low
                bracket = dp_accounting.ExplicitBracketInterval(low, high)
        with _quiet():
            z = dp_accounting.calibrate_dp_mechanism(
                lambda: _fresh(accountant),
                lambda z: sampled_gaussian_event(z, q, t),
                target_epsilon,
                delta,
                bracket,
                tol=tol,
            )
        return float(z)

    def solve_rdp(q: float, t: int) -> float:
        return noise_multiplier_for(target_epsilon, delta, q, t, accountant="rdp", tol=tol)

    return max(solve(q, t) for q, t in sorted(set(pairs)))


def epsilon_of_rounds(
    noise_multipliers: Sequence[float],
    delta: float,
    *,
    sampling_rate: float = 1.0,
    steps: int = 1,
    accountant: Accountant = "rdp",
) -> float:
    """ε at ``delta`` of rounds with their own noise multipliers, each ``steps`` sampled Gaussian compositions.

    Round i is ``steps`` compositions of the Gaussian mechanism with noise multiplier
    ``noise_multipliers[i]``, Poisson-sampled at ``sampling_rate``; equal multipliers are grouped into
    one self-composed event, so rounds that all have ``z`` give exactly :func:`epsilon` of ``z``. 0
    for no rounds; ``inf`` when a multiplier is 0.

    Parameters
    ----------
    noise_multipliers
        Each round's noise multiplier (e.g. a distributed round in which only m of t noise shares reached the
        sum has ``z * sqrt(m / t)``).
    delta
        The δ of (ε, δ)-DP.
    sampling_rate
        The Poisson sampling rate q of every composition.
    steps
        Compositions per round.
    accountant
        ``"rdp"`` (Rényi DP) or ``"pld"`` (privacy loss distributions), as dp-accounting computes them.
    """
    import dp_accounting

    _check("epsilon_of_rounds", delta=delta, sampling_rate=sampling_rate, steps=steps, accountant=accountant)
    for z in noise_multipliers:
        _check("epsilon_of_rounds", noise_multiplier=z)
    counts: dict[float, int] = {}
    for z in noise_multipliers:
        counts[float(z)] = counts.get(float(z), 0) + steps
    if not counts or steps == 0:
        return 0.0
    if 0.0 in counts:
        return math.inf
    events = [sampled_gaussian_event(z, sampling_rate, count) for z, count in sorted(counts.items())]
    event = events[0] if len(events) == 1 else dp_accounting.ComposedDpEvent(events)
    with _quiet():
        return float(_fresh(accountant).compose(event).get_epsilon(delta))


def client_level_epsilon(
    noise_multiplier: float,
    delta: float,
    *,
    rounds: int,
    n_silos: int,
    sampling_rate: float = 1.0,
    accountant: Accountant = "rdp",
) -> float:
    """ε at ``delta`` of client-level DP-FedAvg after ``rounds`` rounds over ``n_silos`` silos.

    Parameters
    ----------
    noise_multiplier
        The noise multiplier z (noise std over the clip norm).
    delta
        The δ of (ε, δ)-DP, below ``1 / n_silos``.
    rounds
        The rounds run.
    n_silos
        The silos of the federation.
    sampling_rate
        The Poisson silo-selection rate; leave it at 1 when silos are drawn as a fixed-size sample (fedkit's
        ``select_silos``) or all train every round.
    accountant
        ``"rdp"`` (Rényi DP) or ``"pld"`` (privacy loss distributions), as dp-accounting computes them.

    Raises
    ------
    ConfigError
        When ``delta`` is not below ``1 / n_silos``.
    """
    _check_delta(delta, n_silos, "silos", "client_level_epsilon")
    return epsilon(noise_multiplier, delta, sampling_rate, rounds, accountant=accountant)


def dpsgd_sampling_rates(batch_size: int, n_train: Sequence[int]) -> list[float]:
    """Each silo's Poisson sampling rate ``batch_size / n_k`` (1 when the batch exceeds the silo).

    Parameters
    ----------
    batch_size
        The expected batch size.
    n_train
        Each silo's train rows.
    """
    validate_params({"batch_size": batch_size}, {"batch_size": [Interval(int, 1, None)]}, "dpsgd_sampling_rates")
    return [min(1.0, batch_size / n) for n in n_train]


def record_level_epsilons(
    noise_multiplier: float,
    delta: float,
    *,
    batch_size: int,
    n_train: Sequence[int],
    steps: Sequence[int],
    accountant: Accountant = "rdp",
) -> list[float]:
    """ε at ``delta`` of DP-SGD in each silo: ``steps[k]`` Poisson-sampled steps at rate ``batch_size / n_train[k]``.

    ``steps[k]`` = local steps per round × the rounds silo k has trained in so far. The federation's ε is the
    largest (disjoint records: parallel composition).

    Parameters
    ----------
    noise_multiplier
        The noise multiplier z (noise std over the clip norm).
    delta
        The δ of (ε, δ)-DP, below ``1 / min(n_train)``.
    batch_size
        The expected batch size.
    n_train
        Each silo's train rows.
    steps
        Each silo's DP-SGD steps so far.
    accountant
        ``"rdp"`` (Rényi DP) or ``"pld"`` (privacy loss distributions), as dp-accounting computes them.
    """
    _check_delta(delta, min(n_train), "rows in the smallest silo", "record_level_epsilons")
    rates = dpsgd_sampling_rates(batch_size, n_train)
    return [epsilon(noise_multiplier, delta, q, t, accountant=accountant) for q, t in zip(rates, steps, strict=True)]
