"""RunConfig validation: every validated field rejects a bad value with a message naming it."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from fedkit import RunConfig
from fedkit.config import CONSTRAINTS
from fedkit.errors import ConfigError, ConfigTypeError, FedkitError

BAD = {
    "split": "hospital",
    "silos": 0,
    "alpha": 0.0,
    "missing": "mean",
    "standardize": "global",
    "seed": -1,
    "verify": "yes",
    "model": "resnet",
    "hidden": 0,
    "strategy": "fedsgd",
    "rounds": 0,
    "fraction": 1.5,
    "local_steps": 0,
    "local_epochs": -2,
    "batch_size": 0,
    "lr": 0.0,
    "optimizer": "rmsprop",
    "momentum": 1.0,
    "weight_decay": -0.1,
    "server_lr": 0.0,
    "server_momentum": 1.0,
    "mu": -1.0,
    "beta1": 1.0,
    "beta2": -0.5,
    "tau": 0.0,
    "trim_beta": 0.5,
    "byzantine": -1,
    "krum_m": 0,
    "personalize": "ditto",
    "finetune_steps": 0,
    "backend": "jax",
    "engine": "flower",
    "min_silos": 0,
    "dropout": 1.0,
    "straggler_timeout": 0.0,
    "max_update_norm": -1.0,
    "max_norm_ratio": 0.5,
    "data": "a.csv",
    "schema": 3,
    "not_measured": ["chol"],
    "secure_aggregation": "yes",
    "dp": "laplace",
    "dp_epsilon": 0.0,
    "dp_delta": 1.0,
    "dp_noise_multiplier": -1.0,
    "dp_clip": 0.0,
}


def test_every_field_is_validated_and_covered_here() -> None:
    assert set(CONSTRAINTS) == {f.name for f in fields(RunConfig)} == set(BAD)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_value_names_the_field_the_value_and_what_is_allowed(name: str) -> None:
    with pytest.raises(FedkitError) as err:
        RunConfig(**{name: BAD[name]})
    message = str(err.value)
    assert f"'{name}' parameter of RunConfig must be" in message
    assert repr(BAD[name]) in message
    assert isinstance(err.value, ValueError | TypeError)


def test_wrong_type_is_a_type_error() -> None:
    with pytest.raises(ConfigTypeError, match="'rounds' parameter of RunConfig must be an int"):
        RunConfig(rounds=2.5)
    with pytest.raises(ConfigTypeError, match="'lr' parameter"):
        RunConfig(lr="fast")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"local_steps": 5, "local_epochs": 1}, "set only one of them"),
        ({"optimizer": "adam", "momentum": 0.9}, "only applies to optimizer='sgd'"),
        ({"split": "flamby", "silos": 8}, "must be None or 4 with split='flamby'"),
        ({"split": "flamby", "missing": "impute"}, "must be 'drop' or None with split='flamby'"),
        ({"strategy": "scaffold", "optimizer": "adam"}, r"needs optimizer='sgd' with momentum=0.*plain SGD steps"),
        ({"strategy": "scaffold", "optimizer": "adamw"}, r"got optimizer='adamw', momentum=0.0"),
        ({"strategy": "scaffold", "momentum": 0.9}, r"got optimizer='sgd', momentum=0.9"),
        ({"strategy": "scaffold", "personalize": "fedper"}, "would span the personal head"),
        ({"min_silos": 3, "fraction": 0.5}, "'min_silos' parameter of RunConfig is 3 but this run trains 2 silo"),
        ({"strategy": "pooled", "min_silos": 2}, "'min_silos' parameter of RunConfig is 2 but this run trains 1"),
        ({"dropout": 0.2, "engine": "remote"}, "'dropout' parameter of RunConfig only applies to engine='simulation'"),
        ({"max_norm_ratio": 3.0, "engine": "remote"}, "'max_norm_ratio' parameter of RunConfig only applies to secure"),
    ],
)
def test_invalid_combinations_are_explained(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        RunConfig(**kwargs)


def test_local_steps_default_to_flamby_unless_epochs_are_given() -> None:
    assert RunConfig().local_steps == 100
    assert RunConfig(local_epochs=2).local_steps is None


def test_config_files_and_unknown_keys(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("split: iid\nsilos: 6\nlr: 0.01\n")
    (tmp_path / "c.json").write_text(json.dumps({"rounds": 3}))
    assert RunConfig.from_file(tmp_path / "c.yaml") == RunConfig(split="iid", silos=6, lr=0.01)
    assert RunConfig.from_file(tmp_path / "c.json").rounds == 3
    with pytest.raises(ConfigError, match=r"no field 'round'. Did you mean 'rounds'"):
        RunConfig.from_dict({"round": 3})
    (tmp_path / "bad.json").write_text("{rounds: 3")
    with pytest.raises(ConfigError, match=r"bad\.json is not valid JSON"):
        RunConfig.from_file(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.from_file(tmp_path / "none.yaml")


def test_a_run_is_scored_with_each_silos_own_model_when_it_has_one() -> None:
    from fedkit.config import scored_model

    assert RunConfig().scored == RunConfig(strategy="pooled").scored == "global"
    assert RunConfig(personalize="fedper").scored == RunConfig(personalize="finetune").scored == "personal"
    assert RunConfig(strategy="local").scored == "personal"  # nothing shared: each silo's own model
    assert scored_model({"strategy": "fedprox"}) == "global"  # a config read back without every field


def test_scaffold_runs_with_plain_sgd_and_with_finetuning() -> None:
    assert RunConfig(strategy="scaffold", lr=0.01).optimizer == "sgd"
    assert RunConfig(strategy="scaffold", personalize="finetune").scored == "personal"
