"""DP-SGD blocks: per-example gradients, clipping, noise and Poisson batches in the vectorized trainer's shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedkit.architectures import initial_params
from fedkit.engines import vectorized
from fedkit.errors import ConfigError
from fedkit.privacy import dpsgd

D, H = 13, 6


def _batch(model: str, seed: int, k: int = 3, b: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parameters (k, P) near fedkit's initialization, rows (k, b, d [+1]) and labels (k, b)."""
    rng = np.random.default_rng(seed)
    theta = np.stack([initial_params(model, D, hidden=H, seed=seed + i) for i in range(k)]).astype(np.float64)
    theta += rng.normal(scale=0.3, size=theta.shape)
    x = rng.normal(size=(k, b, D))
    if model == "logreg":
        x = np.concatenate([x, np.ones((k, b, 1))], axis=2)
    y = (rng.random((k, b)) < 0.5).astype(np.float64)
    return theta, x, y


def _loss(model: str, theta: np.ndarray, x: np.ndarray, y: float) -> float:
    """One example's BCE, written from the model's definition (independent of the gradient code)."""
    if model == "logreg":
        z = x @ theta
    else:
        o = H * D + H
        hid = np.maximum(theta[: H * D].reshape(H, D) @ x + theta[H * D : o], 0)
        z = hid @ theta[o : o + H] + theta[o + H]
    return float(np.logaddexp(0, z) - y * z)


@pytest.mark.parametrize("model", dpsgd.MODELS)
@pytest.mark.parametrize("seed", range(3))
def test_per_example_gradients_match_finite_differences(model: str, seed: int) -> None:
    theta, x, y = _batch(model, seed)
    before = (theta.copy(), x.copy(), y.copy())
    g = dpsgd.per_example_grads(model, theta, x, y, hidden=H)
    assert g.shape == (*y.shape, theta.shape[1])
    eps = 1e-6
    for k in range(len(theta)):
        for i in range(y.shape[1]):
            fd = np.empty(theta.shape[1])
            for p in range(theta.shape[1]):
                up, down = theta[k].copy(), theta[k].copy()
                up[p] += eps
                down[p] -= eps
                fd[p] = (_loss(model, up, x[k, i], y[k, i]) - _loss(model, down, x[k, i], y[k, i])) / (2 * eps)
            assert np.allclose(g[k, i], fd, atol=1e-6)
    for a, b in zip(before, (theta, x, y), strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("model", dpsgd.MODELS)
def test_the_mean_of_per_example_gradients_is_the_vectorized_trainers_batch_gradient(model: str) -> None:
    theta, x, y = _batch(model, 7)
    grad = (vectorized._logreg(D) if model == "logreg" else vectorized._mlp(D, H))[0]
    s = 1 - 2 * y  # the trainer's precomputed sign and per-row weight 1 / batch
    batch_grad, _ = grad(theta, x, s / y.shape[1], -s)
    assert np.allclose(dpsgd.per_example_grads(model, theta, x, y, hidden=H).mean(axis=1), batch_grad)


def test_private_gradient_without_noise_sums_clipped_examples_and_skips_padding() -> None:
    grads = np.array([[[3.0, 4.0], [0.3, 0.4], [100.0, 0.0]]])  # norms 5, 0.5, 100 (padding)
    valid = np.array([[True, True, False]])
    out = dpsgd.private_gradient(
        grads, valid, clip=1.0, noise_multiplier=0.0, expected_batch_size=4, rng=np.random.default_rng(0)
    )
    assert np.allclose(out, [[(0.6 + 0.3) / 4, (0.8 + 0.4) / 4]], atol=1e-6)


def test_private_gradient_noise_has_std_z_clip_over_the_expected_batch() -> None:
    z, clip, batch = 1.5, 0.7, 4
    out = dpsgd.private_gradient(
        np.zeros((4, 2, 50_000)),
        np.zeros((4, 2), dtype=bool),
        clip=clip,
        noise_multiplier=z,
        expected_batch_size=batch,
        rng=np.random.default_rng(1),
    )
    # 200000 draws: a relative tolerance of 6 / sqrt(2 * 200000) = 0.95%
    assert abs(out.std() / (z * clip / batch) - 1) < 6 / math.sqrt(2 * out.size)


def test_an_unknown_model_or_a_bad_batch_is_refused_naming_it() -> None:
    theta, x, y = _batch("logreg", 0)
    with pytest.raises(ConfigError, match="'model' parameter of per_example_grads must be one of 'logreg', 'mlp'"):
        dpsgd.per_example_grads("cnn", theta, x, y, hidden=H)
    with pytest.raises(ConfigError, match="'expected_batch_size' parameter of private_gradient"):
        dpsgd.private_gradient(
            np.zeros((1, 1, 2)),
            np.ones((1, 1)),
            clip=1.0,
            noise_multiplier=1.0,
            expected_batch_size=0,
            rng=np.random.default_rng(0),
        )


def test_poisson_batches_include_each_row_with_the_sampling_rate() -> None:
    sizes, rates, steps = [200, 30], [0.02, 4 / 30], [2000, 2000]
    plans = dpsgd.poisson_plans(sizes, rates, steps, seed=42, server_round=3, silos=[0, 2])
    assert plans[0].shape[1] == plans[1].shape[1]  # one width, so the trainer can stack them
    for plan, n, q in zip(plans, sizes, rates, strict=True):
        valid = plan >= 0
        assert plan.max() < n
        sizes_per_step = valid.sum(axis=1)
        # batch sizes are Binomial(n, q): mean n q within 6 standard errors over 2000 steps, variance n q (1 - q)
        assert abs(sizes_per_step.mean() - n * q) < 6 * math.sqrt(n * q * (1 - q) / len(plan))
        assert sizes_per_step.var() == pytest.approx(n * q * (1 - q), rel=0.15)
        counts = np.bincount(plan[valid], minlength=n)
        assert abs(counts.mean() / len(plan) - q) < 0.01
        for row in plan[:50]:  # no row twice in one step
            rows = row[row >= 0]
            assert len(np.unique(rows)) == len(rows)


def test_a_silos_poisson_batches_do_not_depend_on_who_else_trains() -> None:
    together = dpsgd.poisson_plans([50, 80], 0.1, [20, 20], seed=1, server_round=2, silos=[3, 5])
    alone = dpsgd.poisson_plans([80], 0.1, [20], seed=1, server_round=2, silos=[5])
    width = alone[0].shape[1]
    assert np.array_equal(together[1][:, :width], alone[0])
    assert np.all(together[1][:, width:] == -1)
    assert not np.array_equal(dpsgd.poisson_plans([80], 0.1, [20], seed=1, server_round=3, silos=[5])[0], alone[0])
