"""Client-level DP-FedAvg: McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models".

One round releases the fixed-denominator estimator of the paper (its f̃_f)::

    mean = (sum_k w_k * clip(delta_k, C) + N(0, (z*C)^2 I)) / (q * W)

where ``clip`` scales silo k's update to L2 norm at most C, ``w_k`` in (0, 1] is the silo's public
weight, ``q`` the silo sampling rate and ``W = sum_k w_k`` over every silo of the federation, so
``q * W`` is the *expected* total weight: a public constant, not the weight of the silos that
happened to report. Adding or removing one silo's data moves the weighted sum by at most
``max_k w_k * C <= C``, so with noise std ``z*C`` each round is the Gaussian mechanism with noise
multiplier ``z`` (the accountant, :mod:`fedkit.privacy.accounting`, composes the rounds), and the
division is post-processing.

Weights. FedAvg weighs silos by train size; unbounded, that raises the sensitivity to ``max_k n_k * C``.
:func:`silo_weights` gives the paper's bounded weights ``w_k = min(n_k / cap, 1)``; without a cap
every silo weighs 1 (uniform), the choice of TensorFlow Federated's DP aggregator and the one under
which Flower's ``DifferentialPrivacyServerSideFixedClipping`` / ``ClientSideFixedClipping`` are
exact (they add std ``z*C/m`` to the inner strategy's average of m clipped updates, which bounds
the sensitivity only when the inner average is unweighted). fedkit follows the paper: weighted sum,
sensitivity ``max w * C`` with ``max w <= 1``, fixed denominator. ``cap = max n_k`` keeps FedAvg's
proportional weights at the price of a smaller denominator (more noise on the mean); the train
sizes are treated as public (the server knows them in every fedkit run).

Where the noise comes from. ``central``: the server adds ``N(0, (z*C)^2)`` to the sum, drawn from
:func:`central_noise_stream` (``seeding.DP_NOISE``, its own stream). ``distributed``: each of the
silos adds a share ``N(0, (z*C)^2 / t)`` to its weighted clipped update before masking (secure
aggregation), so that any ``t`` or more shares sum to a noise of std at least ``z*C``. With ``t``
equal to the number of silos that report, the sum carries exactly ``z*C``; if silos drop out after
drawing their shares, fewer shares reach the sum and it carries ``z*C*sqrt(survivors/t)`` only. Set
``t`` to the fewest survivors the round accepts — the secure-aggregation threshold, below which the
server learns nothing — and the guarantee holds for every round the server can decode, at the cost
of ``sqrt(n/t)`` times more noise when all n report. A silo's noise is only private if the server
cannot regenerate it: :func:`silo_noise_stream` (from the run seed) makes simulation and loopback
runs reproducible; a deployment must key each silo's stream with a secret the server never sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedkit import seeding
from fedkit._validation import NONE, Interval, validate_params
from fedkit.errors import ConfigError

CLIP_EPS = 1e-6
"""Added to a norm before dividing by it (Opacus's value): a zero vector stays zero, never NaN."""

_CENTRAL, _SHARE = 1, 2
"""Keys that tell the server's stream from the silos' (numpy's SeedSequence ignores trailing zero keys:
``stream(seed, kind, round)`` equals ``stream(seed, kind, round, 0)``, so a silo index may never end a key
that another stream's key is a prefix of)."""

POSITIVE = Interval(float, 0, None, closed="neither")
NON_NEGATIVE = Interval(float, 0, None, closed="left")


def _scale_to_norm(x: np.ndarray, clip: float) -> np.ndarray:
    """``x`` with each vector along the last axis scaled by ``min(1, clip / (norm + CLIP_EPS))``, in float64."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x * np.minimum(1.0, clip / (norms + CLIP_EPS))


def clip_to_norm(x: np.ndarray, clip: float) -> np.ndarray:
    """Each vector along the last axis of ``x`` scaled down to L2 norm at most ``clip``; a new float64 array.

    Vectors already inside the ball are kept (up to the factor ``clip / (norm + 1e-6)`` when the norm is within
    1e-6 of ``clip``), as McMahan et al. 2018 (FlatClip) and Opacus do.

    Parameters
    ----------
    x
        One update (parameters,), stacked updates (silos, parameters) or per-example gradients (silos, examples,
        parameters); not modified.
    clip
        The L2 clipping norm C.
    """
    validate_params({"clip": clip}, {"clip": [POSITIVE]}, "clip_to_norm")
    return _scale_to_norm(x, clip)


def silo_weights(n_train: Sequence[int] | np.ndarray, cap: float | None = None) -> np.ndarray:
    """McMahan et al. 2018's bounded silo weights ``w_k = min(n_k / cap, 1)``; uniform ones without a cap.

    Every weight is in (0, 1], so one silo moves the weighted sum of clipped updates by at most ``clip``.

    Parameters
    ----------
    n_train
        Each silo's train rows.
    cap
        ``max(n_train)`` gives FedAvg's proportional weights; ``cap <= min(n_train)`` (or None) gives uniform
        weights, the smallest noise on the mean for a given ``z``.
    """
    validate_params({"cap": cap}, {"cap": [POSITIVE, NONE]}, "silo_weights")
    n = np.asarray(n_train, dtype=np.float64)
    if cap is None:
        return np.ones_like(n)
    return np.minimum(n / cap, 1.0)


def expected_total_weight(weights: Sequence[float] | np.ndarray, sampling_rate: float) -> float:
    """The fixed denominator ``q * W``: the sampling rate times the weights of *every* silo of the federation.

    Parameters
    ----------
    weights
        The weight of every silo of the federation.
    sampling_rate
        The silo sampling rate q.
    """
    validate_params(
        {"sampling_rate": sampling_rate},
        {"sampling_rate": [Interval(float, 0, 1, closed="right")]},
        "expected_total_weight",
    )
    return float(sampling_rate * np.sum(weights, dtype=np.float64))


def noise_std(noise_multiplier: float, clip: float) -> float:
    """Std of the Gaussian noise on the sum of clipped contributions: ``z * C``.

    Parameters
    ----------
    noise_multiplier
        The noise multiplier z (noise std over the clip norm).
    clip
        The L2 clipping norm C.
    """
    validate_params(
        {"noise_multiplier": noise_multiplier, "clip": clip},
        {"noise_multiplier": [NON_NEGATIVE], "clip": [POSITIVE]},
        "noise_std",
    )
    return noise_multiplier * clip


def central_noise_stream(seed: int, server_round: int) -> np.random.Generator:
    """The generator of the server's noise in ``server_round``: ``seeding.stream(seed, DP_NOISE, server_round, 1)``.

    Parameters
    ----------
    seed
        The run's seed.
    server_round
        The round.
    """
    return seeding.stream(seed, seeding.DP_NOISE, server_round, _CENTRAL)


def silo_noise_stream(seed: int, server_round: int, silo: int) -> np.random.Generator:
    """Silo ``silo``'s noise-share generator: ``seeding.stream(seed, DP_NOISE, server_round, 2, silo)``.

    Reproducible from the run seed, so a simulation and a loopback remote run add the same shares; in a
    deployment the server must not know the key, or it can subtract the noise.

    Parameters
    ----------
    seed
        The run's seed.
    server_round
        The round.
    silo
        The silo's index in the federation.
    """
    return seeding.stream(seed, seeding.DP_NOISE, server_round, _SHARE, silo)


def private_sum(
    updates: np.ndarray, weights: np.ndarray, *, clip: float, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """Central DP: ``sum_k w_k * clip(updates[k]) + N(0, (z*C)^2 I)``, float64 of shape (parameters,).

    The noise is drawn from ``rng`` after nothing else (use :func:`central_noise_stream`), one standard normal
    per parameter.

    Parameters
    ----------
    updates
        The silos' updates, shape (silos, parameters); not modified.
    weights
        One weight per silo, in [0, 1] (see :func:`silo_weights`); not modified.
    clip
        The L2 clipping norm C.
    noise_multiplier
        The noise multiplier z (noise std over the clip norm).
    rng
        The generator the noise is drawn from.
    """
    std = noise_std(noise_multiplier, clip)
    _check_weights(weights, len(updates), "private_sum")
    total = np.asarray(weights, dtype=np.float64) @ _scale_to_norm(updates, clip)
    return total + std * rng.standard_normal(total.shape)


def noise_share(
    size: int, *, clip: float, noise_multiplier: float, shares: int, rng: np.random.Generator
) -> np.ndarray:
    """Distributed DP: one silo's share ``N(0, (z*C)^2 / shares)`` of the noise, float64 of shape (size,).

    Any ``shares`` independent shares sum to noise of std ``z*C``; more survivors give more noise, fewer give
    less (see the module docstring for choosing ``shares``).

    Parameters
    ----------
    size
        The number of parameters.
    clip
        The L2 clipping norm C.
    noise_multiplier
        The noise multiplier z (noise std over the clip norm).
    shares
        How many shares make the whole noise.
    rng
        The generator the noise is drawn from.
    """
    std = noise_std(noise_multiplier, clip)
    validate_params({"shares": shares}, {"shares": [Interval(int, 1, None)]}, "noise_share")
    return (std / math.sqrt(shares)) * rng.standard_normal(size)


def silo_contribution(
    update: np.ndarray, weight: float, *, clip: float, noise_multiplier: float, shares: int, rng: np.random.Generator
) -> np.ndarray:
    """What a silo sends under distributed DP: ``weight * clip(update) + noise_share``, float64.

    The sum over the silos that report equals :func:`private_sum`'s weighted clipped sum plus noise of std
    ``z*C*sqrt(reporting / shares)``.

    Parameters
    ----------
    update
        The silo's update; not modified.
    weight
        Its weight, in [0, 1].
    clip
        The L2 clipping norm C.
    noise_multiplier
        The noise multiplier z (noise std over the clip norm).
    shares
        How many shares make the whole noise.
    rng
        The generator the noise is drawn from.
    """
    _check_weights(np.array([weight]), 1, "silo_contribution")
    clipped = weight * clip_to_norm(update, clip)
    return clipped + noise_share(clipped.size, clip=clip, noise_multiplier=noise_multiplier, shares=shares, rng=rng)


def private_mean(noisy_sum: np.ndarray, denominator: float) -> np.ndarray:
    """The DP-FedAvg server update: the noisy weighted sum over the fixed denominator ``q * W``.

    Hand it to any sum-based strategy as the only update with weight 1: FedAvg adds it to the global parameters,
    FedAdam/Yogi/Adagrad and FedAvgM use it as the pseudo-gradient (all post-processing, so the round's ε is
    unchanged).

    Parameters
    ----------
    noisy_sum
        The noisy weighted sum of the clipped updates.
    denominator
        The fixed ``q * W`` (:func:`expected_total_weight`).
    """
    validate_params({"denominator": denominator}, {"denominator": [POSITIVE]}, "private_mean")
    return np.asarray(noisy_sum, dtype=np.float64) / denominator


def _check_weights(weights: np.ndarray, n: int, caller: str) -> None:
    """Weights are one per update and in [0, 1], or the noise would not cover one silo's contribution."""
    w = np.asarray(weights, dtype=np.float64)
    ok = w.shape == (n,) and bool(np.all(np.isfinite(w))) and bool(np.all((w >= 0) & (w <= 1)))
    if not ok:
        raise ConfigError(
            f"The 'weights' parameter of {caller} must hold one weight in [0, 1] per update ({n}); "
            f"got {w.tolist()!r}. Bounded weights keep one silo's contribution within the clip: "
            "use fedkit.privacy.dp.silo_weights."
        )
