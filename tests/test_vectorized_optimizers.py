"""VectorizedTrainer's hand-written gradients and optimizers against torch.optim on a plain torch model.

The reference is written here from torch alone (nn.Linear / nn.Sequential, BCEWithLogitsLoss, torch.optim's
SGD, Adam with L2 weight decay, AdamW with decoupled decay), not fedkit's per-silo path.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from fedkit.data import Federation, Provenance, Silo
from fedkit.engines.vectorized import RowSettings, VectorizedTrainer, train_many
from fedkit.training import TrainJob

D, HIDDEN, BATCH = 5, 3, 4
ATOL = 2e-5  # float32 in both; the same maths in another order


def _federation(sizes: list[int], seed: int) -> Federation:
    rng = np.random.default_rng(seed)
    silos = []
    for i, n in enumerate(sizes):
        x = rng.normal(size=(n, D)).astype(np.float32)
        y = (rng.random(n) < 0.5).astype(np.float32)
        silos.append(Silo(f"s{i}", x, y, x[:2], y[:2]))
    return Federation(tuple(silos), tuple(f"f{j}" for j in range(D)), "test", Provenance("memory", {}, False))


def _plan(n: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """Epochs of permutations cut into batches, the short last batch of an epoch padded with -1."""
    batches = []
    while len(batches) < steps:
        order = rng.permutation(n)
        for start in range(0, n, BATCH):
            chunk = order[start : start + BATCH]
            batches.append(np.pad(chunk, (0, BATCH - len(chunk)), constant_values=-1))
    return np.array(batches[:steps], dtype=np.int64)


def _torch_model(model: str) -> nn.Module:
    if model == "logreg":
        return nn.Linear(D, 1)
    return nn.Sequential(nn.Linear(D, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))


def torch_start(model: str, start: np.ndarray, case: dict) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The torch ``model`` at the flat parameters ``start`` and the torch.optim optimizer ``case`` names."""
    net = _torch_model(model)
    nn.utils.vector_to_parameters(torch.tensor(start, dtype=torch.float32), net.parameters())
    lr, wd, params = case["lr"], case.get("weight_decay", 0.0), net.parameters()
    if case["optimizer"] == "sgd":
        return net, torch.optim.SGD(params, lr=lr, momentum=case.get("momentum", 0.0), weight_decay=wd)
    if case["optimizer"] == "adam":
        return net, torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    return net, torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)


def _torch_reference(silo: Silo, start: np.ndarray, plan: np.ndarray, case: dict, model: str):
    """One silo trained with torch.optim: (final flat parameters, mean batch BCE)."""
    net, opt = torch_start(model, start, case)
    params = list(net.parameters())
    x, y = torch.from_numpy(silo.x_train), torch.from_numpy(silo.y_train)
    mu = case.get("prox_mu", 0.0)
    anchor = torch.tensor(case["anchor"], dtype=torch.float32) if mu else None
    correction = torch.tensor(case["correction"], dtype=torch.float32) if "correction" in case else None
    losses = []
    for rows in plan:
        index = torch.from_numpy(rows[rows >= 0])
        opt.zero_grad()
        bce = nn.functional.binary_cross_entropy_with_logits(net(x[index])[:, 0], y[index])
        losses.append(bce.item())
        loss = bce
        if anchor is not None:
            loss = loss + mu / 2 * ((nn.utils.parameters_to_vector(params) - anchor) ** 2).sum()
        loss.backward()
        if correction is not None:
            flat = torch.cat([p.grad.reshape(-1) for p in params]) + correction
            offset = 0
            for p in params:
                p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        opt.step()
    return nn.utils.parameters_to_vector(params).detach().numpy(), float(np.mean(losses))


CASES = {
    "adam-l2-weight-decay": {"optimizer": "adam", "lr": 0.05, "weight_decay": 0.2},
    "adam-no-decay": {"optimizer": "adam", "lr": 0.05},
    "adamw-decoupled-decay": {"optimizer": "adamw", "lr": 0.05, "weight_decay": 0.2},
    "sgd-momentum-weight-decay": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.2},
    "sgd-plain": {"optimizer": "sgd", "lr": 0.3},
    "sgd-fedprox": {"optimizer": "sgd", "lr": 0.1, "prox_mu": 0.7},
    "adam-scaffold-correction": {"optimizer": "adam", "lr": 0.05, "correction": True},
}


@pytest.mark.parametrize("model", ["logreg", "mlp"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_vectorized_optimizer_equals_torch_optim(local_training, name: str, model: str) -> None:
    sizes = [9, 14, 5]
    federation = _federation(sizes, seed=1)
    rng = np.random.default_rng(2)
    n_params = D + 1 if model == "logreg" else HIDDEN * D + HIDDEN + HIDDEN + 1
    starts = rng.normal(scale=0.5, size=(len(sizes), n_params)).astype(np.float32)
    steps = [13, 8, 11]  # unequal: a silo that has finished must stay where it is
    plans = [_plan(n, k, rng) for n, k in zip(sizes, steps, strict=True)]
    case = dict(CASES[name])
    extra = {}
    if case.get("prox_mu"):
        case["anchor"] = rng.normal(size=n_params).astype(np.float32)
        extra = {"prox_mu": case["prox_mu"], "anchor": case["anchor"]}
    corrections = None
    if case.pop("correction", False):
        corrections = rng.normal(scale=0.3, size=(len(sizes), n_params)).astype(np.float32)
    hp_fields = {k: v for k, v in case.items() if k in ("optimizer", "lr", "momentum", "weight_decay")}
    hp = local_training(batch_size=BATCH, **hp_fields)
    trainer = VectorizedTrainer(federation, model, HIDDEN)
    theta, loss, n_steps = trainer.train([0, 1, 2], starts, plans, hp, corrections=corrections, **extra)
    assert n_steps.tolist() == steps
    for i, silo in enumerate(federation.silos):
        reference = dict(case, correction=corrections[i]) if corrections is not None else case
        want, want_loss = _torch_reference(silo, starts[i], plans[i], reference, model)
        assert np.allclose(theta[i], want, rtol=0, atol=ATOL), (i, np.abs(theta[i] - want).max())
        assert abs(loss[i] - want_loss) < ATOL
        assert not np.allclose(want, starts[i], atol=1e-3)  # the silo really moved


def test_mlp_relu_passes_no_gradient_at_exactly_zero_like_torch(local_training) -> None:
    # hidden unit 0 starts with zero weights and bias: its pre-activation is exactly 0 on every row, where
    # torch's ReLU has gradient 0, so plain SGD leaves its input weights at 0
    federation = _federation([8], seed=10)
    rng = np.random.default_rng(11)
    start = rng.normal(size=(1, HIDDEN * D + HIDDEN + HIDDEN + 1)).astype(np.float32)
    start[0, :D] = 0.0  # unit 0's input weights
    start[0, HIDDEN * D] = 0.0  # unit 0's bias
    plan = [_plan(8, 5, rng)]
    case = {"optimizer": "sgd", "lr": 0.5}
    theta, _, _ = VectorizedTrainer(federation, "mlp", HIDDEN).train([0], start, plan, local_training(**case))
    want, _ = _torch_reference(federation.silos[0], start[0], plan[0], case, "mlp")
    assert np.array_equal(want[:D], np.zeros(D)) and np.array_equal(theta[0, :D], want[:D])
    assert np.allclose(theta[0], want, rtol=0, atol=ATOL)


def test_training_runs_in_float32_whatever_the_dtype_of_the_start(local_training) -> None:
    # like torch's float32 model: float64 starts are rounded to float32 first, then everything stays float32
    federation = _federation([9, 6], seed=12)
    rng = np.random.default_rng(13)
    starts = rng.normal(size=(2, D + 1))  # float64, most values not representable in float32
    plans = [_plan(9, 7, rng), _plan(6, 7, rng)]
    hp = local_training(optimizer="adam", lr=0.05, weight_decay=0.1)
    trainer = VectorizedTrainer(federation, "logreg", HIDDEN)
    theta, _, _ = trainer.train([0, 1], starts, plans, hp)
    theta32, _, _ = trainer.train([0, 1], starts.astype(np.float32), plans, hp)
    assert theta.dtype == np.float32 and np.array_equal(theta, theta32)


def test_confident_right_answers_train_without_overflow_warnings(local_training) -> None:
    # exp(-s z) overflows to inf for |z| ~ 1e3: the residual is then exactly 0, and no warning reaches the user
    federation = _federation([8], seed=14)
    x, y = federation.silos[0].x_train, federation.silos[0].y_train
    w, *_ = np.linalg.lstsq(x, 2 * y - 1, rcond=None)
    start = (np.r_[w, 0.0] * 1e4).astype(np.float32)[None, :]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        theta, loss, _ = VectorizedTrainer(federation, "logreg", HIDDEN).train(
            [0], start, [_plan(8, 3, np.random.default_rng(0))], local_training(lr=0.1)
        )
    assert np.isfinite(theta).all() and np.isfinite(loss).all()


def test_weight_decay_changes_the_adam_result(local_training) -> None:
    # The L2 branch is not a no-op: the same run without decay ends elsewhere (guards the reference test).
    federation = _federation([10], seed=3)
    plan = [_plan(10, 20, np.random.default_rng(4))]
    start = np.full((1, D + 1), 2.0, dtype=np.float32)
    trainer = VectorizedTrainer(federation, "logreg", HIDDEN)
    with_wd = trainer.train([0], start, plan, local_training(optimizer="adam", lr=0.05, weight_decay=0.5))[0]
    without = trainer.train([0], start, plan, local_training(optimizer="adam", lr=0.05))[0]
    assert np.abs(with_wd - without).max() > 1e-2


def test_many_silos_in_one_step_equal_torch_adam_with_weight_decay(local_training) -> None:
    k = 66  # as many rows as a stacked step of 16 four-silo runs (the trainer once switched kernels at 64)
    sizes = [6 + i % 5 for i in range(k)]
    federation = _federation(sizes, seed=5)
    rng = np.random.default_rng(6)
    starts = rng.normal(scale=0.5, size=(k, D + 1)).astype(np.float32)
    plans = [_plan(n, 6, rng) for n in sizes]
    case = {"optimizer": "adam", "lr": 0.05, "weight_decay": 0.2}
    trainer = VectorizedTrainer(federation, "logreg", HIDDEN)
    theta, loss, _ = trainer.train(list(range(k)), starts, plans, local_training(batch_size=BATCH, **case))
    for i in range(0, k, 7):
        want, want_loss = _torch_reference(federation.silos[i], starts[i], plans[i], case, "logreg")
        assert np.allclose(theta[i], want, rtol=0, atol=ATOL), i
        assert abs(loss[i] - want_loss) < ATOL


def test_logits_of_one_model_and_of_each_silo_equal_torch(local_training) -> None:
    federation = _federation([7, 4], seed=8)
    trainer = VectorizedTrainer(federation, "mlp", HIDDEN)
    rng = np.random.default_rng(9)
    params = rng.normal(size=(2, HIDDEN * D + HIDDEN + HIDDEN + 1)).astype(np.float32)
    xs = [s.x_train for s in federation.silos]
    each = trainer.logits_each(params, xs)
    for i, x in enumerate(xs):
        net = _torch_model("mlp")
        nn.utils.vector_to_parameters(torch.from_numpy(params[i]), list(net.parameters()))
        want = net(torch.from_numpy(x))[:, 0].detach().numpy()
        assert np.allclose(each[i], want, atol=1e-5)
        assert np.allclose(trainer.logits(params[i], x), want, atol=1e-5)


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_a_diverged_model_scores_inf_or_nan_without_a_warning(model: str) -> None:
    # the round loop reports divergence itself; scoring a blown-up model must stay silent, as its training does
    trainer = VectorizedTrainer(_federation([6, 4], seed=3), model, HIDDEN)
    n_params = D + 1 if model == "logreg" else HIDDEN * D + HIDDEN + HIDDEN + 1
    # float32's largest weights times inputs of 2 overflow to +inf; the output bias, beyond float32, is -inf
    # once cast (an overflow too), and +inf - inf is an invalid operation
    blown = np.full(n_params, 3e38)
    blown[-1] = -1e39
    xs = [np.full((3, D), 2.0, dtype=np.float32), np.full((2, D), 2.0, dtype=np.float32)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = trainer.logits(blown, xs[0])
        each = trainer.logits_each(np.stack([blown, blown]), xs)
    assert one.dtype == np.float64 and not np.isfinite(one).any()
    assert all(z.dtype == np.float64 and not np.isfinite(z).any() for z in each)


def test_batches_of_more_than_16_rows_train_like_torch(local_training) -> None:
    # batches wider than 16 count their rows with one reduction instead of column by column; a short
    # last batch (padding -1) must still be a mean over its real rows only
    federation = _federation([45, 30], seed=20)
    rng = np.random.default_rng(21)
    width = 20
    plans = []
    for n in (45, 30):
        order = rng.permutation(n)
        rows = [
            np.pad(order[i : i + width], (0, max(0, i + width - n)), constant_values=-1) for i in range(0, n, width)
        ]
        plans.append(np.array(rows, dtype=np.int64))
    starts = rng.normal(scale=0.5, size=(2, D + 1)).astype(np.float32)
    case = {"optimizer": "sgd", "lr": 0.4}
    hp = local_training(batch_size=width, **case)
    theta, loss, _ = VectorizedTrainer(federation, "logreg", HIDDEN).train([0, 1], starts, plans, hp)
    for i, silo in enumerate(federation.silos):
        want, want_loss = _torch_reference(silo, starts[i], plans[i], case, "logreg")
        assert np.allclose(theta[i], want, rtol=0, atol=ATOL), (i, np.abs(theta[i] - want).max())
        assert abs(loss[i] - want_loss) < ATOL


def test_stacking_trainers_of_two_model_shapes_is_refused_naming_both() -> None:
    federation = _federation([6, 4], seed=22)
    trainers = [VectorizedTrainer(federation, "logreg", HIDDEN), VectorizedTrainer(federation, "mlp", HIDDEN)]
    with pytest.raises(ValueError, match=r"one model shape.*logreg.*mlp"):
        VectorizedTrainer.stacked(trainers)


def test_logistic_regressions_stack_whatever_hidden_size_they_were_built_with() -> None:
    # the hidden size means nothing to a logistic regression, so it must not split a sweep's stacked calls
    federation = _federation([6, 4], seed=23)
    _, firsts = VectorizedTrainer.stacked(
        [VectorizedTrainer(federation, "logreg", 3), VectorizedTrainer(federation, "logreg", 7)]
    )
    assert firsts == [0, 2]


def test_row_settings_refuse_an_adam_job_before_an_sgd_job(local_training) -> None:
    # the SGD rows must come first (one momentum slice, then the Adam slice); train_many orders them
    start = np.zeros((1, D + 1), dtype=np.float32)
    adam = TrainJob([0], start, [np.zeros((1, BATCH), dtype=np.int64)], local_training(optimizer="adam"))
    sgd = TrainJob([1], start, [np.zeros((1, BATCH), dtype=np.int64)], local_training(optimizer="sgd"))
    assert RowSettings.of([sgd, adam]).n_sgd == 1
    with pytest.raises(ValueError, match=r"^RowSettings\.of needs the SGD jobs first$"):
        RowSettings.of([adam, sgd])


def test_train_many_reports_the_loss_by_default_and_nan_without_it(local_training) -> None:
    federation = _federation([9, 7], seed=24)
    rng = np.random.default_rng(25)
    starts = rng.normal(scale=0.5, size=(2, D + 1)).astype(np.float32)
    plans = [_plan(9, 6, rng), _plan(7, 4, rng)]
    hp = local_training(batch_size=BATCH, optimizer="sgd", lr=0.2)
    trainer = VectorizedTrainer(federation, "logreg", HIDDEN)
    alone = trainer.train([0, 1], starts, plans, hp)
    job = TrainJob([0, 1], starts, plans, hp)
    (default,) = train_many([(trainer, job)])
    (silent,) = train_many([(trainer, job)], with_loss=False)
    assert np.array_equal(default[0], alone[0]) and np.array_equal(silent[0], alone[0])
    assert np.array_equal(default[1], alone[1]) and np.isfinite(alone[1]).all()
    assert np.isnan(silent[1]).all()


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_a_diverging_training_reports_non_finite_numbers_without_a_warning(local_training, model: str) -> None:
    # the round loop reports divergence itself: training that blows up must not also emit numpy warnings
    federation = _federation([12], seed=26)
    rng = np.random.default_rng(27)
    n_params = D + 1 if model == "logreg" else HIDDEN * D + HIDDEN + HIDDEN + 1
    start = rng.normal(size=(1, n_params)).astype(np.float32)
    hp = local_training(batch_size=BATCH, optimizer="sgd", lr=3e38)  # near float32's largest: the first steps overflow
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        theta, loss, _ = VectorizedTrainer(federation, model, HIDDEN).train([0], start, [_plan(12, 8, rng)], hp)
    assert not np.isfinite(theta).all() and not np.isfinite(loss).all()
