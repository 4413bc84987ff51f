"""The vectorized trainer against the per-silo torch path; silo-side state (SCAFFOLD, FedPer) and baselines."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from fedkit import RunConfig, run
from fedkit.data import load_silos
from fedkit.engines.simulation import make_engine
from fedkit.models import build_model, personal_mask

# Both paths run the same float32 arithmetic in a different order; after a whole run the
# parameters agree to this absolute tolerance and the metrics to 1e-5.
PARAM_ATOL = 1e-5

CASES = {
    "fedavg-sgd": {},
    "sgd-momentum-wd": {"momentum": 0.9, "weight_decay": 0.01, "lr": 0.01},
    "adam-mlp": {"optimizer": "adam", "lr": 0.01, "model": "mlp"},
    "adamw-epochs": {"optimizer": "adamw", "weight_decay": 0.05, "local_epochs": 1, "lr": 0.01},
    "fedprox": {"strategy": "fedprox", "mu": 0.5, "lr": 0.01},
    "scaffold": {"strategy": "scaffold", "lr": 0.01},
    "fedper": {"personalize": "fedper", "model": "mlp", "lr": 0.01},
    "finetune": {"personalize": "finetune", "finetune_steps": 7},
    "local": {"strategy": "local", "optimizer": "adam", "local_epochs": 2},
    "pooled": {"strategy": "pooled", "optimizer": "adam", "local_epochs": 1},
    "fraction": {"fraction": 0.5, "split": "dirichlet", "silos": 6},
    "many-silos": {"split": "iid", "silos": 70},  # 70 rows in every step of the vectorized logistic regression
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_vectorized_trainer_equals_per_silo_torch(data_dir, case: str) -> None:
    steps = {} if "local_epochs" in CASES[case] else {"local_steps": 20}
    config = RunConfig(rounds=3, **steps, **CASES[case])
    fast = run(config, progress=False, trackers=[])
    slow = run(replace(config, backend="torch"), progress=False, trackers=[])
    assert np.allclose(fast.params, slow.params, rtol=0, atol=PARAM_ATOL)
    a, b = fast.history, slow.history
    assert a[["round", "silo", "model", "split", "metric"]].equals(b[["round", "silo", "model", "split", "metric"]])
    assert np.allclose(a.value, b.value, rtol=0, atol=1e-5, equal_nan=True)


def test_scaffold_with_one_silo_reduces_to_plain_sgd(data_dir) -> None:
    fed = load_silos()
    one = replace(fed, silos=fed.silos[1:2])
    base = RunConfig(rounds=4, local_steps=30, lr=0.02)
    scaffold = run(replace(base, strategy="scaffold"), federation=one, progress=False, trackers=[])
    fedavg = run(base, federation=one, progress=False, trackers=[])
    # round 1: c = c_1 = 0; afterwards c = c_1, so the correction c - c_1 is 0 every step
    assert np.allclose(scaffold.params, fedavg.params, atol=1e-6)


def test_scaffold_corrections_change_training_with_several_silos(data_dir) -> None:
    base = RunConfig(rounds=4, local_steps=30, lr=0.02)
    scaffold = run(replace(base, strategy="scaffold"), progress=False, trackers=[])
    fedavg = run(base, progress=False, trackers=[])
    assert not np.allclose(scaffold.params, fedavg.params, atol=1e-4)


def test_fedper_keeps_heads_on_the_silos(data_dir, monkeypatch) -> None:
    config = RunConfig(rounds=2, local_steps=10, personalize="fedper", model="mlp", lr=0.05)
    fed = load_silos()
    engine = make_engine(fed, config)
    init = engine.initial_params()
    replies = engine.fit(init, 1, engine.silos)
    mask = personal_mask(build_model("mlp", 13, hidden=16, seed=0))
    assert mask.sum() == 17 and mask[-17:].all()  # the output layer: 16 weights + 1 bias
    for reply in replies:
        assert np.array_equal(reply.params[mask], init[mask])  # what reaches the server
        assert not np.array_equal(reply.params[~mask], init[~mask])
    # each silo scores with its own head: with shared hidden weights 0 and biases 1 every hidden unit is 1 on
    # every row, so each silo's own model outputs one constant, set by its head alone
    probe = init.copy()
    probe[: 16 * 13], probe[16 * 13 : 16 * 14] = 0.0, 1.0
    from fedkit.engines import simulation

    scored: list = []
    evaluate = simulation.evaluate_silos
    monkeypatch.setattr(simulation, "evaluate_silos", lambda n, y, z, **kw: scored.extend(z) or evaluate(n, y, z, **kw))
    engine.evaluate_personal(probe, 1)
    constants = [np.unique(logits) for logits in scored]
    assert all(len(c) == 1 for c in constants)
    assert len({float(c[0]) for c in constants}) == 4  # four silos, four heads
    assert personal_mask(build_model("logreg", 13, hidden=16, seed=0)).tolist() == [False] * 13 + [True]


def test_local_baseline_scores_each_silo_with_its_own_model_only(data_dir) -> None:
    result = run(RunConfig(strategy="local", rounds=1, local_epochs=3, optimizer="adam"), progress=False, trackers=[])
    h = result.history
    assert set(h.model) == {"local", "personal"} and result.summary()["final"]["model"] == "personal"


def test_pooled_baseline_trains_one_model_on_all_train_rows(data_dir) -> None:
    result = run(RunConfig(strategy="pooled", rounds=1, local_epochs=1), progress=False, trackers=[])
    h = result.history
    trained = h[(h.model == "local") & (h.split == "train")]
    assert trained.silo.tolist() == ["all-silos"]
    assert set(h[h.model == "global"].silo) == {"cleveland", "hungarian", "switzerland", "va", "pooled"}


def test_pooled_rows_are_standardized_with_the_pooled_train_statistics(data_dir) -> None:
    from fedkit.data import preprocess
    from fedkit.engines.simulation import pooled_federation

    silo, federated = load_silos("flamby"), load_silos("flamby", standardize="federated")
    (merged,) = pooled_federation(silo).silos
    assert np.allclose(merged.x_train, np.concatenate([s.x_train for s in federated.silos]), atol=1e-5)
    assert np.array_equal(merged.x_test, np.concatenate([s.x_test for s in silo.silos]))  # tests as each silo has them
    (as_is,) = pooled_federation(federated).silos  # already pooled statistics: nothing to redo
    assert np.array_equal(as_is.x_train, np.concatenate([s.x_train for s in federated.silos]))
    x = np.array([[1.0, np.nan], [3.0, 5.0]])
    mean, std = np.array([2.0, 5.0]), np.array([1.0, 0.0])
    assert np.allclose(preprocess.unstandardize(preprocess.standardize(x, mean, std), mean, std), [[1, 5], [3, 5]])


def test_a_user_module_trains_on_the_per_silo_path(data_dir) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(13, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1), torch.nn.Flatten(0))
    result = run(RunConfig(rounds=2, local_steps=5, lr=0.05), model=model, progress=False, trackers=[])
    assert result.params.shape == (13 * 4 + 4 + 4 + 1,)
    h = result.history
    loss = h[(h.silo == "pooled") & (h.metric == "loss")].set_index("round").value
    assert loss[2] < loss[0]


def test_trainer_memory_is_linear_in_silos(data_dir) -> None:
    from fedkit.engines.vectorized import VectorizedTrainer

    sizes = []
    for k in (10, 40):
        fed = load_silos("iid", silos=k)
        trainer = VectorizedTrainer(fed, "logreg", 16)
        sizes.append(trainer._x.nbytes + trainer._y.nbytes + trainer._offset.nbytes)
    # rows are stored once (no per-silo padding): only the offsets grow with the silo count
    assert sizes[1] - sizes[0] == 30 * 8


def test_scaffold_server_steps_match_the_paper_by_hand() -> None:
    from fedkit.strategies.base import Controls
    from fedkit.strategies.scaffold import Scaffold

    strategy = Scaffold(server_lr=0.5)
    params = np.array([1.0, 2.0], dtype=np.float32)
    state = strategy.init(params)
    assert np.array_equal(strategy.local_term(state, params).control, [0.0, 0.0])
    updates = np.array([[0.2, -0.4], [0.6, 0.0]])
    controls = Controls(np.array([[1.0, 2.0], [3.0, 4.0]]), n_silos=4)
    new, state = strategy.aggregate(updates, np.array([1.0, 3.0]), state, params, controls)
    # x + 0.5 * (1 * u0 + 3 * u1) / 4 = [1 + 0.5 * 0.5, 2 + 0.5 * -0.1] = [1.25, 1.95]
    assert np.allclose(new, [1.25, 1.95])
    # c + |S|/N * mean(dc) = 0 + 2/4 * [2, 3] = [1.0, 1.5]
    assert np.allclose(state.control, [1.0, 1.5])
    unchanged, same = strategy.aggregate(updates, np.array([1.0, 3.0]), state, params)  # no controls: c stays
    assert np.array_equal(unchanged, new) and np.array_equal(same.control, state.control)
