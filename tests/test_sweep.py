"""Sweeps: every stacked run equals the same config through fedkit.run; the grid is validated before anything runs;
the table, the best configuration, the store, stopping, the fallback and the CLI."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from unittest import mock

import numpy as np
import pytest

import fedkit
from fedkit import RunConfig, run
from fedkit.cli import main
from fedkit.config import load_federation
from fedkit.data.silos import validation_split
from fedkit.engines import vectorized
from fedkit.errors import ConfigError, ConfigTypeError
from fedkit.stacking import PlanCache, run_stacked, stack_blocker
from fedkit.sweeps import expand_grid, grid_from_text, seeds_from_text, sweep
from fedkit.tracking.local import LocalStore

TOL = 1e-6  # the bar; in practice every stacked run is bit-identical to its fedkit.run

CASES: dict[str, dict] = {
    # strategy families
    "fedavg": {},
    "fedprox": {"strategy": "fedprox", "mu": 0.5, "lr": 0.01},
    "fedavgm": {"strategy": "fedavgm", "server_momentum": 0.5, "lr": 0.01},
    "scaffold": {"strategy": "scaffold", "lr": 0.01},
    "fedadam": {"strategy": "fedadam", "lr": 0.01, "server_lr": 0.03},
    "fedyogi": {"strategy": "fedyogi", "lr": 0.003},
    "fedadagrad": {"strategy": "fedadagrad", "lr": 0.003},
    "fedmedian": {"strategy": "fedmedian", "lr": 0.01},
    "trimmedmean": {"strategy": "trimmedmean", "trim_beta": 0.25, "lr": 0.01},
    "krum": {"strategy": "krum", "byzantine": 1, "krum_m": 2},
    # personalization and the baselines
    "fedper-mlp": {"personalize": "fedper", "model": "mlp", "lr": 0.01},
    "finetune": {"personalize": "finetune", "finetune_steps": 7},
    "local": {"strategy": "local", "optimizer": "adam", "local_epochs": 2, "rounds": 1},
    "pooled": {"strategy": "pooled", "optimizer": "adam", "local_epochs": 1, "rounds": 1},
    # optimizers
    "sgd-momentum-wd": {"momentum": 0.9, "weight_decay": 0.01, "lr": 0.01},
    "adam-wd-mlp": {"optimizer": "adam", "weight_decay": 0.01, "lr": 0.01, "model": "mlp", "hidden": 8},
    "adamw-epochs": {"optimizer": "adamw", "weight_decay": 0.05, "lr": 0.01, "local_epochs": 1},
    # data, sampling, batches and round counts that differ between stacked runs
    "dirichlet-fraction": {"split": "dirichlet", "silos": 6, "fraction": 0.5},
    "federated-standardize": {"standardize": "federated", "rounds": 2},
    "batch-8-steps-9": {"batch_size": 8, "local_steps": 9},
    # the server sees only sums: each run's engine runs the secure sum
    "secure-aggregation": {"strategy": "scaffold", "secure_aggregation": True, "lr": 0.01},
}
SEEDS = (42, 43)


def _config(case: str, seed: int) -> RunConfig:
    fields = {"rounds": 3, **CASES[case]}
    if "local_epochs" not in fields:
        fields.setdefault("local_steps", 20)
    return RunConfig(**fields, seed=seed)


@pytest.fixture(scope="module")
def every_case_stacked(data_dir) -> dict[tuple[str, int], tuple]:
    """Every case × seed trained as ONE stacked job (mixed models, optimizers, data, rounds), and each alone."""
    keys = [(case, seed) for case in CASES for seed in SEEDS]
    configs = [_config(*key) for key in keys]
    loaded: dict = {}
    federations = [loaded.setdefault((c.split, c.silos, c.standardize, c.seed), load_federation(c)) for c in configs]
    stacked = run_stacked(configs, federations, history="full")
    alone = [run(c, federation=f, trackers=[], progress=False) for c, f in zip(configs, federations, strict=True)]
    return dict(zip(keys, zip(stacked, alone, strict=True), strict=True))


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_stacked_run_equals_its_own_fedkit_run(every_case_stacked, case: str) -> None:
    for seed in SEEDS:
        stacked, alone = every_case_stacked[(case, seed)]
        assert stacked.status == alone.status == "finished"
        assert np.abs(stacked.params - alone.params).max() <= TOL
        a, b = stacked.history, alone.history
        keys = ["round", "silo", "model", "split", "metric"]
        assert a[keys].equals(b[keys])  # the same rows in the same order: train losses, local, global, personal
        assert np.allclose(a.value, b.value, rtol=0, atol=TOL, equal_nan=True)
        assert stacked.final == alone.final and stacked.notes == alone.notes and stacked.config == alone.config


def test_the_stacked_cases_do_train_differently(every_case_stacked) -> None:
    # the equality above is not vacuous: the cases move the parameters, and differently from one another
    finals = {case: every_case_stacked[(case, 42)][0].params for case in ("fedavg", "fedprox", "scaffold", "fedyogi")}
    assert len({p.tobytes() for p in finals.values()}) == 4


def test_training_in_blocks_of_steps_changes_no_bit(data_dir, monkeypatch) -> None:
    config = _config("adamw-epochs", 42)
    whole = run(config, trackers=[], progress=False)
    monkeypatch.setattr(vectorized, "BLOCK_ENTRIES", 50)  # a few steps per block
    assert np.array_equal(run(config, trackers=[], progress=False).params, whole.params)


GRID = [
    {"strategy": ["fedavg", "scaffold", "fedyogi"], "lr": [0.003, 0.03]},
    {"optimizer": ["adam", "adamw"], "weight_decay": [0.0, 0.01]},
]
BASE = {"rounds": 2, "local_steps": 10}


def test_sweep_runs_equal_fedkit_run_and_are_recorded_under_one_sweep_id(data_dir) -> None:
    result = sweep(BASE, GRID, seeds=[42, 43], progress=False)
    assert len(result.table) == 6 + 4 and len(result.runs) == 20
    store = LocalStore()
    recorded = store.get_sweep(result.sweep_id)
    assert recorded["status"] == "finished" and len(recorded["runs"]) == 20
    for (_, row), res in zip(result.runs.iterrows(), result.results, strict=True):
        config = RunConfig(**{**BASE, **result.configurations[row["configuration"]], "seed": row["seed"]})
        alone = run(config, trackers=[], progress=False)
        assert np.abs(res.params - alone.params).max() <= TOL
        assert abs(row["avg_accuracy"] - alone.final["avg_accuracy"]) <= TOL
        assert abs(row["pooled_auc"] - alone.final["pooled"]["auc"]) <= TOL
        saved = store.get(row["run_id"])
        assert np.array_equal(saved["params"], res.params) and saved["summary"]["final"] == res.final
        assert {r["round"] for r in store.history(row["run_id"])} == {2}  # a sweep keeps the final evaluation


def test_folds_score_each_run_on_a_validation_fold_of_the_train_rows(data_dir) -> None:
    result = sweep(BASE, {"lr": [0.003, 0.03]}, seeds=[42, 43], folds=2, progress=False)
    assert result.scored_on == "validation" and len(result.runs) == 2 * 2 * 2
    for (_, row), res in zip(result.runs.iterrows(), result.results, strict=True):
        config = RunConfig(**{**BASE, **result.configurations[row["configuration"]], "seed": row["seed"]})
        fold = validation_split(load_federation(config), seed=row["seed"], fold=row["fold"], folds=2)
        alone = run(config, federation=fold, trackers=[], progress=False)
        assert np.abs(res.params - alone.params).max() <= TOL and res.final == alone.final
    assert not any("test sets" in note for note in result.notes)


def test_the_table_holds_mean_and_std_over_seeds_and_the_best_configuration(data_dir) -> None:
    result = sweep(BASE, {"lr": [0.001, 0.01, 0.1]}, seeds=[42, 43, 44], folds=2, progress=False)
    runs = result.runs
    for i, row in result.table.iterrows():
        per_seed = [
            statistics.mean(runs[(runs.configuration == i) & (runs.seed == s)].avg_accuracy) for s in (42, 43, 44)
        ]
        assert row["avg_accuracy_mean"] == pytest.approx(statistics.mean(per_seed), abs=1e-12)
        assert row["avg_accuracy_std"] == pytest.approx(statistics.stdev(per_seed), abs=1e-12)
        assert row["runs"] == 6 and row["complete"]
    means = result.table["avg_accuracy_mean"].round(6)
    assert means[result.best] == means.max()
    assert result.best_config(seed=7) == RunConfig(**{**BASE, **result.best_fields, "seed": 7})
    assert "Scored on" not in " ".join(result.notes)
    summary = json.loads(json.dumps(result.summary()))
    assert summary["best"] == result.best_fields and len(summary["table"]) == 3


def test_the_best_of_a_test_set_sweep_comes_with_a_warning(data_dir) -> None:
    result = sweep(BASE, {"lr": [0.001, 0.01]}, progress=False, trackers=[])
    assert result.scored_on == "test"
    assert any("Pass folds=K" in note for note in result.notes)
    assert not LocalStore().list_sweeps()  # trackers=[]: nothing recorded


@pytest.mark.parametrize(
    ("grid", "error", "match"),
    [
        ({"lr": [0.01, -1.0]}, ConfigError, r"lr=-1\.0.*'lr' parameter of RunConfig must be a float in the range"),
        ({"strategy": ["fedavg", "fedprox"], "mu": [0.1]}, ConfigError, r"strategy='fedavg', mu=0\.1.*'mu' parameter"),
        ({"optimizer": ["adam"], "momentum": [0.9]}, ConfigError, r"'momentum' parameter of RunConfig only applies"),
        ({"lrr": [0.1]}, ConfigError, r"no RunConfig field 'lrr'\. Did you mean 'lr'\?"),
        ({"seed": [1, 2]}, ConfigError, r"cannot vary 'seed'; pass seeds="),
        ({"lr": 0.01}, ConfigTypeError, r"a list of values per field; got lr=0\.01"),
        ({"strategy": "fedavg"}, ConfigTypeError, r"Write strategy=\['fedavg'\]"),
        ({"lr": []}, ConfigError, r"no values for 'lr'"),
        ({"engine": ["remote"], "split": ["hospitals"]}, ConfigError, r"sweep trains in this process"),
    ],
)
def test_invalid_grids_are_refused_before_anything_runs(data_dir, grid, error, match) -> None:
    with mock.patch("fedkit.sweeps.run_stacked") as stacked, pytest.raises(error, match=match):
        sweep(BASE, grid, seeds=[42, 43])
    stacked.assert_not_called()
    assert not LocalStore().list_sweeps() and fedkit.runs().empty


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seeds": []}, "'seeds' parameter of sweep"),
        ({"folds": 1}, "'folds' parameter of sweep must be None or an int >= 2"),
        ({"metric": "auc"}, "'metric' parameter of sweep must be one of"),
        ({"history": "all"}, "'history' parameter of sweep must be one of"),
    ],
)
def test_bad_sweep_parameters_name_the_parameter(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        sweep(BASE, {"lr": [0.01]}, **kwargs)


def test_runs_the_stacked_loop_cannot_take_run_alone_and_the_result_says_why(data_dir) -> None:
    result = sweep(BASE, {"backend": ["vectorized", "torch"]}, seeds=[42], progress=False)
    (note,) = [n for n in result.notes if "one by one" in n]
    assert "1 of 2 runs" in note and "backend='torch'" in note
    for res in result.results:
        alone = run(RunConfig(**BASE, backend=res.config["backend"]), trackers=[], progress=False)
        assert np.array_equal(res.params, alone.params) and res.final == alone.final


def test_a_run_config_field_the_stacked_loop_does_not_know_makes_it_run_alone(monkeypatch) -> None:
    import fedkit.stacking

    monkeypatch.setattr(fedkit.stacking, "STACKED_FIELDS", fedkit.stacking.STACKED_FIELDS - {"mu"})
    assert stack_blocker(RunConfig(strategy="fedprox")) is None  # mu at its default
    assert "does not handle mu" in stack_blocker(RunConfig(strategy="fedprox", mu=0.1))


def test_stopping_ends_every_run_where_it_is_and_the_sweep_as_stopped(data_dir) -> None:
    result = sweep({**BASE, "rounds": 5}, {"lr": [0.01, 0.1]}, seeds=[42], progress=False, should_stop=lambda: True)
    assert set(result.runs.status) == {"stopped"} and not result.table["complete"].any()
    assert LocalStore().get_sweep(result.sweep_id)["status"] == "stopped"
    one_round = run(RunConfig(**{**BASE, "rounds": 1, "lr": 0.01}), trackers=[], progress=False)
    assert np.array_equal(result.results[0].params, one_round.params)  # stopped after round 1 of 5


def test_the_progress_bar_covers_every_round_of_every_run(data_dir, capfd) -> None:
    sweep(BASE, {"lr": [0.01, 0.1], "rounds": [1, 3]}, seeds=[42, 43], trackers=[])
    assert "16/16" in capfd.readouterr().err  # (1 + 3) rounds x 2 lr x 2 seeds


def test_plans_are_drawn_once_per_round_for_all_runs_of_a_seed() -> None:
    plans = PlanCache()
    args = {"seed": 42, "kind": 1, "silos": [0, 1]}
    first = plans([10, 7], 4, [5, 5], server_round=1, **args)
    assert plans([10, 7], 4, [5, 5], server_round=1, **args) is first
    assert not first[0].flags.writeable  # shared between runs: nobody may change it
    again = plans([10, 7], 4, [5, 5], server_round=2, **args)
    assert again is not first and not np.array_equal(again[0], first[0])


def test_expand_grid_takes_a_mapping_or_a_list_of_them() -> None:
    assert expand_grid(None) == [{}]
    assert expand_grid({"lr": [1, 2], "model": ["x"]}) == [{"lr": 1, "model": "x"}, {"lr": 2, "model": "x"}]
    assert expand_grid([{"strategy": ["fedavg"]}, {"strategy": ["fedprox"], "mu": [0.1, 1.0]}]) == [
        {"strategy": "fedavg"},
        {"strategy": "fedprox", "mu": 0.1},
        {"strategy": "fedprox", "mu": 1.0},
    ]


def test_cli_parses_grid_and_seeds_and_calls_the_python_api() -> None:
    assert seeds_from_text("42-44,50") == [42, 43, 44, 50]
    assert grid_from_text(["lr=0.001,0.01", "strategy=fedavg,fedprox", "mu=none,0.1", "local-steps=5"]) == {
        "lr": [0.001, 0.01],
        "strategy": ["fedavg", "fedprox"],
        "mu": [None, 0.1],
        "local_steps": [5],
    }
    with pytest.raises(ConfigError, match="Did you mean 'lr'"):
        grid_from_text(["lrr=0.1"])
    with pytest.raises(ConfigError, match="'x' is not a float"):
        grid_from_text(["lr=0.1,x"])
    with mock.patch.object(fedkit, "sweep", side_effect=SystemExit(0)) as call, pytest.raises(SystemExit):
        main(["sweep", "--grid", "lr=0.001,0.01", "--seeds", "42-46", "--folds", "4", "--rounds", "3"])
    args, kwargs = call.call_args
    assert args == (RunConfig(rounds=3), {"lr": [0.001, 0.01]})
    assert kwargs["seeds"] == [42, 43, 44, 45, 46] and kwargs["folds"] == 4


def test_cli_sweep_prints_the_table_and_the_best_configuration(data_dir, capsys) -> None:
    code = main(["sweep", "--grid", "lr=0.003,0.03", "--seeds", "42-43", "--rounds", "2", "--local-steps", "5", "-q"])
    assert code == 0
    out = capsys.readouterr().out
    assert "2 configurations · 4 runs · scored on test sets" in out and "best by test avg_accuracy: --lr" in out
    code = main(["sweep", "--grid", "lr=0.003", "--rounds", "2", "--local-steps", "5", "-q", "--json", "--folds", "2"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["scored_on"] == "validation" and summary["best"] == {"lr": 0.003}


def test_cli_refuses_a_bad_grid_value_naming_it(data_dir, capsys) -> None:
    assert main(["sweep", "--grid", "lr=0.01,-1", "-q"]) == 2
    assert "'lr' parameter of RunConfig" in capsys.readouterr().err and fedkit.runs().empty


def test_a_stopped_run_replays_to_other_trackers(data_dir) -> None:
    seen: list[tuple] = []

    class Recorder:
        def start_run(self, run_id, config, data) -> None:
            seen.append(("start", run_id))

        def log_round(self, run_id, server_round, rows) -> None:
            seen.append(("round", server_round, len(rows)))

        def end_run(self, run_id, status, *, summary=None, params=None, error=None) -> None:
            seen.append(("end", status, summary["final"]["avg_accuracy"]))

    result = sweep(BASE, {"lr": [0.01]}, seeds=[42], trackers=[LocalStore(), Recorder()], progress=False)
    run_id = result.runs.run_id[0]
    assert seen == [("start", run_id), ("round", 2, 15), ("end", "finished", result.runs.avg_accuracy[0])]


def test_stacking_refuses_a_run_it_cannot_take(data_dir) -> None:
    config = replace(RunConfig(rounds=1, local_steps=2), backend="torch")
    with pytest.raises(ConfigError, match="cannot be stacked: backend='torch'"):
        run_stacked([config], [load_federation(config)])


def test_the_store_lists_sweeps_and_finds_one_by_a_prefix_of_its_id(data_dir) -> None:
    from fedkit.errors import RunNotFoundError

    result = sweep(BASE, [{"lr": [0.01]}, {"strategy": ["fedprox"], "mu": [0.1]}], seeds=[42, 43], progress=False)
    store = LocalStore()
    (listed,) = store.list_sweeps()
    assert listed == {
        "sweep_id": result.sweep_id,
        "status": "finished",
        "created_at": listed["created_at"],
        "runs": 4,
        "grid": "lr, mu, strategy",
    }
    found = store.get_sweep(result.sweep_id[:-2])
    assert found["spec"]["seeds"] == [42, 43] and found["summary"]["best"] == result.best_fields
    assert [(r["configuration"], r["seed"], r["fold"]) for r in found["runs"]] == [
        (0, 42, None),
        (0, 43, None),
        (1, 42, None),
        (1, 43, None),
    ]
    with pytest.raises(RunNotFoundError, match="matches no sweep"):
        store.get_sweep("sweep-nope")


@pytest.mark.parametrize("extra", [{}, {"dropout": 0.1}], ids=["stacked", "alone"])
def test_a_candidate_whose_rounds_fail_validation_fails_alone_and_the_sweep_goes_on(data_dir, extra) -> None:
    base = RunConfig(split="flamby", rounds=2, local_steps=5, **extra)
    result = sweep(base, grid={"max_update_norm": [10.0, 1e-9]}, seeds=[42], progress=False)
    status = dict(zip(result.runs["max_update_norm"], result.runs["status"], strict=True))
    assert status == {10.0: "finished", 1e-9: "failed"}
    assert result.table.set_index("max_update_norm").loc[1e-9, "complete"] == False  # noqa: E712
    assert result.best_fields["max_update_norm"] == 10.0
    alone = run(replace(base, max_update_norm=10.0), progress=False)
    assert result.table.set_index("max_update_norm").loc[10.0, "avg_accuracy_mean"] == pytest.approx(
        alone.final["avg_accuracy"], abs=1e-6
    )


def test_a_sweep_reads_the_data_folder_it_is_given(data_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FEDKIT_DATA_DIR", str(tmp_path / "nothing-here"))
    result = fedkit.sweep({"rounds": 1, "local_steps": 2}, {"lr": [0.01]}, seeds=[42], trackers=[], data_dir=data_dir)
    assert result.results[0].data["directory"] == str(data_dir.resolve())
