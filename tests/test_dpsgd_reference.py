"""The vectorized trainer's DP-SGD against DP-SGD written out here in plain torch, step by step.

The reference (Abadi et al. 2016, with Opacus's conventions) uses torch alone: each example's gradient by
autograd on its own BCE loss (nn.Linear / nn.Sequential, one example at a time), scaled to L2 norm at most C
by ``min(1, C / (norm + 1e-6))``, summed over the step's real rows, plus ``z * C`` times one standard normal per
parameter from the silo's own numpy stream (step after step), divided by the silo's expected batch size; then
torch.optim's SGD / Adam / AdamW step. An empty Poisson batch still takes its step, with the noise alone.
Nothing of fedkit's DP-SGD code (fedkit.privacy.dpsgd, fedkit.engines.per_silo) is used.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_vectorized_optimizers import HIDDEN, D, torch_start
from torch import nn

from fedkit.data import Federation, Provenance, Silo
from fedkit.engines import vectorized
from fedkit.engines.vectorized import VectorizedTrainer, train_many
from fedkit.training import LocalTraining, PrivateSteps, TrainJob

ATOL = 1e-5  # float32 parameters in both; the same maths in another order
CLIP = 0.8
SIZES = [9, 6, 11]
SILOS = [2, 0, 1]  # the rows train silos in this order: streams and settings go by row, not by silo index
NOISE = (0.0, 0.6, 1.7)  # one silo without noise: each row's own std
EXPECTED = (2.0, 3.5, 1.25)  # each row's own divisor
STEPS = [7, 4, 7]  # unequal: a row that has finished stays where it is
WIDTHS = [4, 3, 5]  # unequal widths, padded with -1 to the widest
EMPTY = {0: [2], 1: [0, 3], 2: []}  # steps whose batch has no rows at all (still a noisy step)


def _federation(seed: int = 1) -> Federation:
    rng = np.random.default_rng(seed)
    silos = []
    for i, n in enumerate(sorted(SIZES)):  # silo i's size differs from its row's, so a wrong silo shows
        x = rng.normal(size=(n, D)).astype(np.float32)
        y = (rng.random(n) < 0.5).astype(np.float32)
        silos.append(Silo(f"s{i}", x, y, x[:2], y[:2]))
    return Federation(tuple(silos), tuple(f"f{j}" for j in range(D)), "test", Provenance("memory", {}, False))


def _poisson_like_plan(n: int, steps: int, width: int, empty: list[int], rng: np.random.Generator) -> np.ndarray:
    """Each step a random set of distinct rows (1 to ``width``; none at the ``empty`` steps), ``-1`` padding."""
    plan = np.full((steps, width), -1, dtype=np.int64)
    for t in range(steps):
        if t not in empty:
            k = int(rng.integers(1, width + 1))
            plan[t, :k] = rng.choice(n, size=k, replace=False)
    return plan


def _n_params(model: str) -> int:
    return D + 1 if model == "logreg" else HIDDEN * D + HIDDEN + HIDDEN + 1


def _streams(seed: int) -> tuple[np.random.Generator, ...]:
    return tuple(np.random.default_rng([seed, row]) for row in range(len(SILOS)))


def _setup(model: str, seed: int = 3):
    federation = _federation()
    rng = np.random.default_rng(seed)
    sizes = [federation.silos[s].n_train for s in SILOS]
    plans = [
        _poisson_like_plan(n, t, w, EMPTY[j], rng) for j, (n, t, w) in enumerate(zip(sizes, STEPS, WIDTHS, strict=True))
    ]
    starts = rng.normal(scale=0.5, size=(len(SILOS), _n_params(model))).astype(np.float32)
    return federation, plans, starts


def _set_grad(params: list[nn.Parameter], flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).to(torch.float32).clone()
        offset += p.numel()


def _reference(
    silo: Silo, start: np.ndarray, plan: np.ndarray, case: dict, z: float, expected: float, stream
) -> tuple[np.ndarray, float, list[int]]:
    """One silo's DP-SGD in torch: final flat parameters, mean batch BCE over the planned steps, clipped/kept counts."""
    net, opt = torch_start(case["model"], start, case)
    params = list(net.parameters())
    mu = case.get("prox_mu", 0.0)
    anchor = torch.tensor(case["anchor"], dtype=torch.float64) if mu else None
    x, y = torch.from_numpy(silo.x_train), torch.from_numpy(silo.y_train)
    n_params = sum(p.numel() for p in params)
    losses, clipped = [], [0, 0]
    for rows in plan:
        total = torch.zeros(n_params, dtype=torch.float64)
        batch_losses = []
        for r in rows[rows >= 0]:
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(net(x[r : r + 1])[:, 0], y[r : r + 1])
            loss.backward()
            g = torch.cat([p.grad.reshape(-1) for p in params]).to(torch.float64)
            norm = torch.linalg.vector_norm(g)
            clipped[int(norm > CLIP)] += 1
            total += g * min(1.0, CLIP / (float(norm) + 1e-6))
            batch_losses.append(loss.item())
        losses.append(float(np.mean(batch_losses)) if batch_losses else 0.0)  # an empty batch: no loss, a step
        noise = torch.from_numpy(stream.standard_normal(n_params))  # one normal per parameter, step after step
        grad = (total + z * CLIP * noise) / expected
        if anchor is not None:  # FedProx's term on the private gradient (post-processing)
            grad += mu * (nn.utils.parameters_to_vector(params).detach().to(torch.float64) - anchor)
        _set_grad(params, grad)
        opt.step()
    return nn.utils.parameters_to_vector(params).detach().numpy(), float(np.mean(losses)), clipped


def _references(federation: Federation, starts, plans, case: dict, seed: int):
    streams = _streams(seed)
    out = [
        _reference(federation.silos[s], starts[j], plans[j], case, NOISE[j], EXPECTED[j], streams[j])
        for j, s in enumerate(SILOS)
    ]
    return np.stack([o[0] for o in out]), np.array([o[1] for o in out]), [o[2] for o in out]


def _hp(case: dict) -> LocalTraining:
    return LocalTraining(
        optimizer=case["optimizer"],
        lr=case["lr"],
        batch_size=max(WIDTHS),
        local_steps=max(STEPS),
        momentum=case.get("momentum", 0.0),
        weight_decay=case.get("weight_decay", 0.0),
    )


def _private(seed: int) -> PrivateSteps:
    return PrivateSteps(CLIP, NOISE, EXPECTED, _streams(seed))


CASES = {
    "sgd-plain": {"optimizer": "sgd", "lr": 0.3},
    "sgd-momentum-weight-decay-fedprox": {
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 0.2,
        "prox_mu": 0.5,
    },
    "adam-l2-weight-decay": {"optimizer": "adam", "lr": 0.05, "weight_decay": 0.1},
    "adamw-decoupled-decay": {"optimizer": "adamw", "lr": 0.05, "weight_decay": 0.2},
}


def _train(model: str, name: str, seed: int = 11):
    federation, plans, starts = _setup(model)
    case = {"model": model, **CASES[name]}
    anchor = None
    if case.get("prox_mu"):
        anchor = np.random.default_rng(5).normal(scale=0.3, size=starts.shape[1]).astype(np.float32)
        case["anchor"] = anchor
    trainer = VectorizedTrainer(federation, model, HIDDEN)
    got = trainer.train(
        SILOS, starts, plans, _hp(case), prox_mu=case.get("prox_mu", 0.0), anchor=anchor, private=_private(seed)
    )
    return got, _references(federation, starts, plans, case, seed), plans


@pytest.mark.parametrize("model", ["logreg", "mlp"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_vectorized_dpsgd_equals_clipped_noisy_steps_written_in_torch(model: str, name: str) -> None:
    """Every row's parameters after its DP-SGD steps equal torch's: clipped per-example sums, its own noise
    (std z_j C from its own stream) over its own expected batch size, then the optimizer; empty batches step too."""
    (theta, loss, steps), (ref_theta, ref_loss, clipped), plans = _train(model, name)
    kept, cut = np.sum(clipped, axis=0)
    assert kept > 0 and cut > 0  # the clip norm scales some examples and leaves others
    assert not np.allclose(theta, np.asarray(_setup(model)[2]), atol=1e-3)  # every row moved
    np.testing.assert_allclose(theta, ref_theta, atol=ATOL, rtol=0)
    np.testing.assert_allclose(loss, ref_loss, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(steps, [len(p) for p in plans])


def test_the_private_mean_batch_loss_counts_an_empty_batch_as_zero_over_the_planned_steps() -> None:
    """The loss the private branch reports is the mean over planned steps of each batch's mean BCE (0 for an
    empty batch), and the step count is the plan's length, empty steps included."""
    (_, loss, steps), (_, ref_loss, _), _ = _train("logreg", "sgd-plain")
    np.testing.assert_array_equal(steps, STEPS)
    np.testing.assert_allclose(loss, ref_loss, atol=ATOL, rtol=0)
    assert loss.dtype == np.float64 and np.all(np.isfinite(loss)) and np.all(loss > 0)


def test_a_row_of_empty_batches_moves_by_its_noise_alone() -> None:
    """With no rows at all, SGD's step is -lr * z C / expected batch size times the stream's normals, step by
    step, and the mean batch loss is 0; a row without noise (z = 0) stays where it is."""
    federation = _federation()
    trainer = VectorizedTrainer(federation, "mlp", HIDDEN)
    p = _n_params("mlp")
    plans = [np.full((4, 2), -1, dtype=np.int64) for _ in SILOS]
    starts = np.random.default_rng(0).normal(size=(len(SILOS), p)).astype(np.float32)
    hp = LocalTraining(lr=0.7, batch_size=2, local_steps=4)
    theta, loss, steps = trainer.train(SILOS, starts, plans, hp, private=_private(9))
    for j, stream in enumerate(_streams(9)):
        moved = -0.7 * NOISE[j] * CLIP / EXPECTED[j] * sum(stream.standard_normal(p) for _ in range(4))
        np.testing.assert_allclose(theta[j] - starts[j], moved, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(loss, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(steps, [4, 4, 4])


def test_dpsgd_in_several_blocks_continues_each_rows_noise_stream(monkeypatch) -> None:
    """When the steps go in blocks (here of 2), each block draws the next normals of every row's stream, and each
    row's step count and loss still hold: the result equals the torch reference."""
    monkeypatch.setattr(vectorized, "BLOCK_ENTRIES", len(SILOS) * max(WIDTHS) * 2)
    for model in ("logreg", "mlp"):
        (theta, loss, steps), (ref_theta, ref_loss, _), plans = _train(model, "sgd-momentum-weight-decay-fedprox")
        np.testing.assert_allclose(theta, ref_theta, atol=ATOL, rtol=0)
        np.testing.assert_allclose(loss, ref_loss, atol=ATOL, rtol=0)
        np.testing.assert_array_equal(steps, [len(p) for p in plans])


def _jobs(model: str, seed: int):
    """A DP job, a plain job of the same shape, batch size and step count, and a second DP job (other noise)."""
    federation, plans, starts = _setup(model)
    trainer = VectorizedTrainer(federation, model, HIDDEN)
    hp = _hp({"model": model, **CASES["sgd-momentum-weight-decay-fedprox"]})
    dp_a = TrainJob(list(SILOS), starts, plans, hp, private=_private(seed))
    plain = TrainJob(list(SILOS), starts, plans, hp)
    dp_b = TrainJob(list(SILOS), starts + 0.1, plans, hp, private=_private(seed + 1))
    return trainer, dp_a, plain, dp_b


@pytest.mark.parametrize("model", ["logreg", "mlp"])
@pytest.mark.parametrize("order", ["dp-first", "plain-first"])
def test_train_many_runs_a_dp_job_alone_with_its_private_steps(model: str, order: str) -> None:
    """A DP job in train_many (beside a plain job and another DP job it could otherwise stack with) equals
    trainer.train with its private steps, and the torch reference; the plain job equals train without them."""
    trainer, dp_a, plain, dp_b = _jobs(model, seed=21)
    jobs = [dp_a, plain, dp_b] if order == "dp-first" else [plain, dp_a, dp_b]
    results = dict(zip(map(id, jobs), train_many([(trainer, job) for job in jobs]), strict=True))
    for job, seed in ((dp_a, 21), (dp_b, 22)):
        alone = trainer.train(job.silos, job.starts, job.plans, job.hp, private=_private(seed))
        for got, want in zip(results[id(job)], alone, strict=True):
            np.testing.assert_array_equal(got, want)
    alone = trainer.train(plain.silos, plain.starts, plain.plans, plain.hp)
    for got, want in zip(results[id(plain)], alone, strict=True):
        np.testing.assert_array_equal(got, want)
    case = {"model": model, **CASES["sgd-momentum-weight-decay-fedprox"], "prox_mu": 0.0}
    federation = _federation()
    ref_theta, ref_loss, _ = _references(federation, dp_a.starts, dp_a.plans, case, 21)
    np.testing.assert_allclose(results[id(dp_a)][0], ref_theta, atol=ATOL, rtol=0)
    np.testing.assert_allclose(results[id(dp_a)][1], ref_loss, atol=ATOL, rtol=0)


def test_train_many_without_loss_still_takes_the_private_steps() -> None:
    """train_many(with_loss=False) of a DP job gives train's private parameters and step counts, and NaN losses."""
    trainer, dp_a, _, _ = _jobs("logreg", seed=31)
    ((theta, loss, steps),) = train_many([(trainer, dp_a)], with_loss=False)
    want = trainer.train(dp_a.silos, dp_a.starts, dp_a.plans, dp_a.hp, private=_private(31))
    np.testing.assert_array_equal(theta, want[0])
    np.testing.assert_array_equal(steps, want[2])
    assert np.all(np.isnan(loss))
