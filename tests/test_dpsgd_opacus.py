"""The numpy DP-SGD blocks against Opacus: per-example gradients, clipped sums, noise, and the accountants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedkit.privacy import accounting, dpsgd

opacus = pytest.importorskip("opacus", reason="Opacus is in the dp extra")
torch = pytest.importorskip("torch")

from opacus.accountants import PRVAccountant, RDPAccountant  # noqa: E402
from opacus.optimizers import DPOptimizer  # noqa: E402

from fedkit.models import build_model, get_flat  # noqa: E402

D, H, B = 13, 8, 6
# Opacus hooks the modules; torch notes that the inputs need no gradient, which is the case here
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _opacus_step(model_name: str, hidden: int, z: float, clip: float, seed: int):
    """One Opacus step on a fedkit model: per-example grads, the clipped sum, and the final (noisy, averaged) grad."""
    rng = np.random.default_rng(seed)
    model = build_model(model_name, D, hidden=hidden, seed=seed)
    x = rng.normal(size=(B, D)).astype(np.float32)
    y = (rng.random(B) < 0.5).astype(np.float32)
    gsm = opacus.GradSampleModule(model)
    optimizer = DPOptimizer(
        torch.optim.SGD(gsm.parameters(), lr=0.0),
        noise_multiplier=z,
        max_grad_norm=clip,
        expected_batch_size=B,
        generator=torch.Generator().manual_seed(seed),
    )
    loss = torch.nn.functional.binary_cross_entropy_with_logits(gsm(torch.as_tensor(x)), torch.as_tensor(y))
    loss.backward()
    samples = torch.cat([p.grad_sample.reshape(B, -1) for p in gsm.parameters()], dim=1).numpy().astype(np.float64)
    optimizer.pre_step()
    summed = torch.cat([p.summed_grad.flatten() for p in gsm.parameters()]).numpy().astype(np.float64)
    grad = torch.cat([p.grad.flatten() for p in gsm.parameters()]).numpy().astype(np.float64)
    return get_flat(model).astype(np.float64), x.astype(np.float64), y.astype(np.float64), samples, summed, grad


@pytest.mark.parametrize("model", dpsgd.MODELS)
@pytest.mark.parametrize("seed", range(3))
def test_clipped_gradient_sum_equals_opacus(model: str, seed: int) -> None:
    theta, x, y, samples, _, _ = _opacus_step(model, H, 0.0, 1.0, seed)
    xb = np.concatenate([x, np.ones((B, 1))], axis=1) if model == "logreg" else x
    ours = dpsgd.per_example_grads(model, theta[None], xb[None], y[None], hidden=H)[0]
    assert np.allclose(ours, samples, rtol=1e-4, atol=1e-6)
    clip = float(np.median(np.linalg.norm(samples, axis=1)))  # half the examples clipped, half kept
    _, _, _, _, summed, grad = _opacus_step(model, H, 0.0, clip, seed)
    mean = dpsgd.private_gradient(
        ours[None],
        np.ones((1, B), dtype=bool),
        clip=clip,
        noise_multiplier=0.0,
        expected_batch_size=B,
        rng=np.random.default_rng(0),
    )[0]
    assert np.allclose(mean * B, summed, rtol=1e-4, atol=1e-6)
    assert np.allclose(mean, grad, rtol=1e-4, atol=1e-6)


def test_noise_std_equals_opacus() -> None:
    z, clip, hidden = 1.3, 0.5, 2000  # 30k parameters a draw
    opacus_noise, our_noise = [], []
    for seed in range(5):
        *_, samples, summed, grad = _opacus_step("mlp", hidden, z, clip, seed)
        opacus_noise.append(grad * B - summed)
        ours = dpsgd.private_gradient(
            samples[None],
            np.ones((1, B), dtype=bool),
            clip=clip,
            noise_multiplier=z,
            expected_batch_size=B,
            rng=np.random.default_rng(seed),
        )[0]
        clipped_sum = dpsgd.private_gradient(
            samples[None],
            np.ones((1, B), dtype=bool),
            clip=clip,
            noise_multiplier=0.0,
            expected_batch_size=1,
            rng=np.random.default_rng(0),
        )[0]
        our_noise.append(ours * B - clipped_sum)
    n = sum(len(a) for a in opacus_noise)
    tolerance = 6 / math.sqrt(2 * n)  # six standard errors of a sample std: 1.1% here
    assert abs(np.concatenate(opacus_noise).std() / (z * clip) - 1) < tolerance
    assert abs(np.concatenate(our_noise).std() / (z * clip) - 1) < tolerance


@pytest.mark.parametrize(("z", "q", "steps"), [(1.1, 4 / 199, 1500), (2.0, 4 / 30, 300), (0.9, 0.05, 100)])
def test_epsilon_agrees_with_opacus_accountants(z: float, q: float, steps: int) -> None:
    delta = 1e-3
    rdp, prv = RDPAccountant(), PRVAccountant()
    for accountant in (rdp, prv):
        accountant.history = [(z, q, steps)]
    # both RDP bounds; Opacus searches other orders, so they differ by a little
    assert accounting.epsilon(z, delta, q, steps) == pytest.approx(rdp.get_epsilon(delta), rel=0.005)
    # PRV and PLD both approximate the exact ε numerically, each to about 1%
    assert accounting.epsilon(z, delta, q, steps, accountant="pld") == pytest.approx(prv.get_epsilon(delta), rel=0.01)
