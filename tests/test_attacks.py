"""Membership inference: the attacks find an overfit model's members and nothing in an untrained or DP-noised one."""

from __future__ import annotations

import numpy as np
import pytest

from fedkit.architectures import initial_params
from fedkit.errors import ConfigError
from fedkit.privacy import accounting, attacks, dpsgd
from fedkit.training import LocalTraining

D, HIDDEN, BATCH, STEPS = 13, 128, 8, 1500
# Adam at lr 0.01 for 1500 steps of 8 rows: an MLP of 128 hidden units memorizes its 80 rows
MODEL = attacks.NumpyModel("mlp", HIDDEN, LocalTraining(optimizer="adam", lr=0.01, batch_size=BATCH, local_steps=STEPS))


def _rows(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Members, non-members and the attacker's own rows, disjoint draws from one logistic model.

    The weights are small (scale 0.3), so labels are noisy: about a third of the rows are on the
    wrong side of the Bayes boundary. A model can only fit those by memorizing them.
    """
    rng = np.random.default_rng(seed)
    w = rng.normal(size=D) * 0.3

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, D)).astype(np.float32)
        return x, (rng.random(n) < 1 / (1 + np.exp(-x @ w))).astype(np.float32)

    return {"members": draw(80), "others": draw(400), "shadow": draw(400)}


def _attack(params: np.ndarray, rows: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[attacks.AttackResult]:
    """Both attacks against the model ``params``."""
    (xm, ym), (xn, yn), (xs, ys) = rows["members"], rows["others"], rows["shadow"]
    zm, zn = MODEL.logits(params, xm), MODEL.logits(params, xn)
    return [
        attacks.loss_threshold_attack(zm, ym, zn, yn, seed=0),
        attacks.shadow_model_attack(zm, ym, zn, yn, xs, ys, train=MODEL.train, logits=MODEL.logits, seed=0),
    ]


def _dpsgd_train(x: np.ndarray, y: np.ndarray, z: float, seed: int) -> np.ndarray:
    """The same MLP trained by plain SGD on the DP-SGD blocks: Poisson batches, clip 1, noise z."""
    theta = initial_params("mlp", D, hidden=HIDDEN, seed=seed).astype(np.float64)[None]
    plan = dpsgd.poisson_plans([len(y)], BATCH / len(y), [STEPS], seed=seed, server_round=1, silos=[0])[0]
    rng = np.random.default_rng(seed)
    for step in plan:
        valid = step >= 0
        rows = np.where(valid, step, 0)
        g = dpsgd.per_example_grads("mlp", theta, x[rows][None].astype(np.float64), y[rows][None], hidden=HIDDEN)
        theta = theta - 0.02 * dpsgd.private_gradient(
            g, valid[None], clip=1.0, noise_multiplier=z, expected_batch_size=BATCH, rng=rng
        )
    return theta[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_both_attacks_find_the_members_of_an_overfit_model(seed: int) -> None:
    rows = _rows(seed)
    (xm, ym), (xn, yn) = rows["members"], rows["others"]
    params = MODEL.train(xm, ym, seed)
    zm, zn = MODEL.logits(params, xm), MODEL.logits(params, xn)
    # the precondition: members memorized (all right, tiny loss), non-members often wrong
    assert np.all((zm > 0) == (ym == 1)) and attacks.example_losses(zm, ym).mean() < 0.05
    error = float(np.mean((zn > 0) != (yn == 1)))
    assert error > 0.2
    # Every misclassified non-member (loss > log 2) ranks below every member (loss < log 2); if among
    # the rest members rank at least as well as non-members, AUC >= error + (1 - error) / 2. 0.05 of slack.
    for result in _attack(params, rows):
        assert result.auc > 0.5 + error / 2 - 0.05, result
        assert result.low > 0.55, result
        assert result.low <= result.auc <= result.high


@pytest.mark.parametrize("seed", [0, 1])
def test_an_untrained_model_gives_the_attacks_nothing(seed: int) -> None:
    rows = _rows(seed)
    # members and non-members are exchangeable for a model that never saw them: the AUC is 0.5 up to
    # sampling (standard error sqrt((80 + 400 + 1) / (12 * 80 * 400)) = 0.035); 0.1 is about three of them
    for result in _attack(initial_params("mlp", D, hidden=HIDDEN, seed=seed), rows):
        assert abs(result.auc - 0.5) < 0.1, result


def test_strong_dp_noise_brings_the_attacks_back_to_chance() -> None:
    rows = _rows(0)
    (xm, ym) = rows["members"]
    z = 50.0
    assert accounting.epsilon(z, 1e-3, BATCH / len(ym), STEPS) < 0.2
    private = _attack(_dpsgd_train(xm, ym, z, 0), rows)
    exposed = _attack(MODEL.train(xm, ym, 0), rows)  # the overfit model of the test above
    for p, e in zip(private, exposed, strict=True):
        assert abs(p.auc - 0.5) < 0.1, p
        assert p.auc < e.auc - 0.1, (p, e)


def test_the_loss_attack_auc_is_the_auc_of_minus_the_loss() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    zm, zn = rng.normal(1, 2, 50), rng.normal(0, 2, 70)
    ym, yn = (rng.random(50) < 0.5).astype(float), (rng.random(70) < 0.5).astype(float)
    result = attacks.loss_threshold_attack(zm, ym, zn, yn, seed=1)
    losses = attacks.example_losses(np.r_[zm, zn], np.r_[ym, yn])
    assert result.auc == pytest.approx(roc_auc_score(np.r_[np.ones(50), np.zeros(70)], -losses))


def test_the_bootstrap_interval_is_seeded() -> None:
    rng = np.random.default_rng(4)
    args = (rng.normal(1, 1, 40), np.ones(40), rng.normal(0, 1, 40), np.ones(40))
    a = attacks.loss_threshold_attack(*args, seed=7)
    assert a == attacks.loss_threshold_attack(*args, seed=7)
    b = attacks.loss_threshold_attack(*args, seed=8)
    assert a.auc == b.auc and (a.low, a.high) != (b.low, b.high)
    assert a.low < a.auc < a.high


def test_attacks_without_rows_or_shadows_are_refused() -> None:
    z, y = np.zeros(3), np.ones(3)
    with pytest.raises(ConfigError, match="at least one member and one non-member"):
        attacks.loss_threshold_attack(z, y, z[:0], y[:0], seed=0)
    with pytest.raises(ConfigError, match="'n_shadows' parameter of shadow_model_attack"):
        attacks.shadow_model_attack(
            z, y, z, y, np.zeros((10, D)), np.ones(10), train=MODEL.train, logits=MODEL.logits, n_shadows=0, seed=0
        )
    with pytest.raises(ConfigError, match="at least 4 shadow rows"):
        attacks.shadow_model_attack(
            z, y, z, y, np.zeros((3, D)), np.ones(3), train=MODEL.train, logits=MODEL.logits, seed=0
        )
