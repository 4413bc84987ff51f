"""Record-level DP-SGD for the vectorized numpy trainer: Abadi et al. 2016, "Deep Learning with Differential Privacy".

One private step of every selected silo, in the shapes of :mod:`fedkit.engines.vectorized`
(parameters stacked (silos, parameters), a step's rows (silos, batch, features), ``-1`` padding
in the batch plans):

1. :func:`poisson_plans`: each row joins each step's batch independently with probability
   ``q = batch_size / n_k`` (Poisson sampling, what the accountant assumes), padded with ``-1``;
2. :func:`per_example_grads`: the gradient of each example's own BCE loss, written out for the
   built-in models (logistic regression: ``(sigmoid(z_i) - y_i) * x_i``; the MLP: per-example
   backpropagation through Linear → ReLU → Linear), in torch's flat parameter order;
3. :func:`private_gradient`: each example clipped to L2 norm C, summed, Gaussian noise of std
   ``z * C`` added, divided by the *expected* batch size ``q * n_k`` (Opacus's convention for
   ``loss_reduction="mean"``: a fixed divisor, so the actual batch size, which depends on the data,
   never scales the step).

The result replaces the batch-mean gradient in the trainer's optimizer step; proximal terms,
weight decay and the optimizer then act on it as on any gradient (post-processing).
tests/test_dpsgd_opacus.py checks the clipped sums and the noise against Opacus.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedkit import seeding
from fedkit._validation import Interval, Options, validate_params
from fedkit.privacy.dp import _scale_to_norm, noise_std

MODELS: tuple[str, ...] = ("logreg", "mlp")
_STEPS = 3
"""The key of DP-SGD's noise streams after ``DP_NOISE`` and the round (1 and 2 are :mod:`fedkit.privacy.dp`'s)."""


def _residual(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``sigmoid(z) - y`` for 0/1 labels, as ``s / (1 + exp(-s*z))`` with ``s = 1 - 2y`` (no cancellation at y = 1)."""
    s = 1.0 - 2.0 * y
    with np.errstate(over="ignore"):  # exp overflowing to inf for confident right answers gives the right 0
        return s / (1.0 + np.exp(-s * z))


def logreg_example_grads(theta: np.ndarray, xb: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example gradients of logistic regression, shape (silos, batch, d + 1).

    Parameters
    ----------
    theta
        Each silo's ``[weight, bias]``, shape (silos, d + 1).
    xb
        The batches with the trailing column of ones the vectorized trainer appends, shape (silos, batch, d + 1).
    y
        The 0/1 labels, shape (silos, batch).
    """
    return _logreg_grads(theta, xb, y)[0]


def _logreg_grads(theta: np.ndarray, xb: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-example gradients of logistic regression and the logits."""
    z = np.einsum("kbd,kd->kb", xb, theta)
    return _residual(z, y)[:, :, None] * xb, z


def mlp_example_grads(theta: np.ndarray, xb: np.ndarray, y: np.ndarray, hidden: int) -> np.ndarray:
    """Per-example gradients of Linear(d, h) → ReLU → Linear(h, 1), shape (silos, batch, parameters).

    Parameters
    ----------
    theta
        Each silo's parameters, shape (silos, h*d + h + h + 1), in torch's order (hidden weight row-major, hidden
        bias, output weight, output bias).
    xb
        The batches, shape (silos, batch, d).
    y
        The 0/1 labels, shape (silos, batch).
    hidden
        Hidden units h.
    """
    return _mlp_grads(theta, xb, y, hidden)[0]


def _mlp_grads(theta: np.ndarray, xb: np.ndarray, y: np.ndarray, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-example gradients of the MLP and the logits."""
    k, b, d = xb.shape
    h, o = hidden, hidden * d + hidden
    w1 = theta[:, : h * d].reshape(k, h, d)
    a = np.einsum("kbd,khd->kbh", xb, w1) + theta[:, None, h * d : o]
    hid = np.maximum(a, 0)
    z = np.einsum("kbh,kh->kb", hid, theta[:, o : o + h]) + theta[:, o + h, None]
    r = _residual(z, y)
    g = np.empty((k, b, theta.shape[1]), dtype=np.result_type(theta, xb))
    dh = r[:, :, None] * theta[:, None, o : o + h] * (a > 0)  # (k, b, h)
    g[:, :, : h * d] = (dh[:, :, :, None] * xb[:, :, None, :]).reshape(k, b, h * d)
    g[:, :, h * d : o] = dh
    g[:, :, o : o + h] = r[:, :, None] * hid
    g[:, :, o + h] = r
    return g, z


def per_example_grads(model: str, theta: np.ndarray, xb: np.ndarray, y: np.ndarray, *, hidden: int) -> np.ndarray:
    """Per-example gradients of ``model`` ("logreg" or "mlp"), shape (silos, batch, parameters); inputs untouched.

    Parameters
    ----------
    model
        ``"logreg"`` or ``"mlp"``.
    theta
        Each silo's flat parameters, shape (silos, parameters).
    xb
        The batches as the vectorized trainer holds them, shape (silos, batch, features).
    y
        The 0/1 labels, shape (silos, batch).
    hidden
        Hidden units (``mlp`` only).
    """
    return example_grads_and_logits(model, theta, xb, y, hidden=hidden)[0]


def example_grads_and_logits(
    model: str, theta: np.ndarray, xb: np.ndarray, y: np.ndarray, *, hidden: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`per_example_grads` and the logits of the batch (silos, batch), in one pass.

    Parameters
    ----------
    model
        ``"logreg"`` or ``"mlp"``.
    theta
        Each silo's flat parameters, shape (silos, parameters).
    xb
        The batches as the vectorized trainer holds them, shape (silos, batch, features).
    y
        The 0/1 labels, shape (silos, batch).
    hidden
        Hidden units (``mlp`` only).
    """
    validate_params({"model": model}, {"model": [Options(MODELS)]}, "per_example_grads")
    if model == "logreg":
        return _logreg_grads(theta, xb, y)
    return _mlp_grads(theta, xb, y, hidden)


def private_gradient(
    grads: np.ndarray,
    valid: np.ndarray,
    *,
    clip: float,
    noise_multiplier: float,
    expected_batch_size: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """``(sum_i clip(g_i) + N(0, (z*C)^2 I)) / expected_batch_size`` per silo, float64 of shape (silos, parameters).

    One standard normal per silo and parameter is drawn from ``rng``, silo by silo.

    Parameters
    ----------
    grads
        Per-example gradients, shape (silos, batch, parameters).
    valid
        Marks the real examples, shape (silos, batch) (False for padding: an empty Poisson batch still gets its
        noise).
    clip
        The L2 clipping norm C.
    noise_multiplier
        The noise multiplier z (noise std over the clip norm).
    expected_batch_size
        The expected batch size the noisy sum is divided by.
    rng
        The generator the noise is drawn from.
    """
    std = noise_std(noise_multiplier, clip)
    validate_params(
        {"expected_batch_size": expected_batch_size},
        {"expected_batch_size": [Interval(float, 0, None, closed="neither")]},
        "private_gradient",
    )
    normals = rng.standard_normal((grads.shape[0], grads.shape[2]))
    return noisy_mean(
        grads, valid, clip=clip, std_normal=normals, noise_std=std, expected_batch_size=expected_batch_size
    )


def noisy_mean(
    grads: np.ndarray,
    valid: np.ndarray,
    *,
    clip: float,
    std_normal: np.ndarray,
    noise_std: float | np.ndarray,
    expected_batch_size: float | np.ndarray,
) -> np.ndarray:
    """``(sum_i clip(g_i) + noise_std * std_normal) / expected_batch_size`` per silo, float64 (silos, parameters).

    The arithmetic of :func:`private_gradient` with the standard normals drawn by the caller (the trainer
    draws each silo's from its own stream, :func:`step_noise_stream`); unvalidated.

    Parameters
    ----------
    grads
        Per-example gradients, shape (silos, batch, parameters).
    valid
        Marks the real examples, shape (silos, batch).
    clip
        The L2 clipping norm C.
    std_normal
        Standard normal draws, shape (silos, parameters).
    noise_std
        The noise std ``z * C``, one for all silos or one per silo.
    expected_batch_size
        The divisor, one for all silos or one per silo.
    """
    clipped = _scale_to_norm(grads, clip) * np.asarray(valid, dtype=np.float64)[:, :, None]
    total = clipped.sum(axis=1)
    std = np.reshape(np.asarray(noise_std, dtype=np.float64), (-1, 1))
    divisor = np.reshape(np.asarray(expected_batch_size, dtype=np.float64), (-1, 1))
    return (total + std * std_normal) / divisor


def step_noise_stream(seed: int, server_round: int, silo: int) -> np.random.Generator:
    """Silo ``silo``'s DP-SGD noise in ``server_round``: ``seeding.stream(seed, DP_NOISE, server_round, 3, silo)``.

    One standard normal per parameter and step, in step order, whichever engine trains the silo.

    Parameters
    ----------
    seed
        The run's seed.
    server_round
        The round.
    silo
        The silo's index in the federation.
    """
    return seeding.stream(seed, seeding.DP_NOISE, server_round, _STEPS, silo)


def poisson_plans(
    sizes: Sequence[int],
    sampling_rate: float | Sequence[float],
    steps: Sequence[int],
    *,
    seed: int,
    server_round: int,
    silos: Sequence[int],
) -> list[np.ndarray]:
    """Each silo's Poisson batches for a server_round: row indices of shape (steps, width), ``-1`` padding.

    Row r of silo ``silos[i]`` joins step t's batch when its key from :func:`fedkit.seeding.uniform` (kind
    ``SAMPLING``, counter ``t * sizes[i] + r``) is below the silo's rate, so a silo's batches are the same
    computed alone or with others. Every plan has the same width (the largest batch of the round, at least 1) so
    the trainer can stack them; a step may have no rows at all.

    Parameters
    ----------
    sizes
        Each silo's train rows.
    sampling_rate
        The Poisson sampling rate, one for all or one per silo.
    steps
        Steps each silo takes.
    seed
        The run's seed.
    server_round
        The round.
    silos
        The silos' indices in the federation.
    """
    rates = [sampling_rate] * len(sizes) if np.isscalar(sampling_rate) else list(sampling_rate)  # type: ignore[list-item]
    for q in rates:
        validate_params(
            {"sampling_rate": q}, {"sampling_rate": [Interval(float, 0, 1, closed="right")]}, "poisson_plans"
        )
    masks = []
    for silo, n, q, t in zip(silos, sizes, rates, steps, strict=True):
        keys = seeding.uniform(seed, seeding.SAMPLING, server_round, [silo], t * n)[0].reshape(t, n)
        masks.append(keys < q)
    width = max([1, *(int(m.sum(axis=1).max(initial=0)) for m in masks)])
    plans = []
    for m in masks:
        plan = np.full((len(m), width), -1, dtype=np.int64)
        step, row = np.nonzero(m)
        slot = np.arange(len(step)) - np.searchsorted(step, step)  # position of each row within its step
        plan[step, slot] = row
        plans.append(plan)
    return plans
