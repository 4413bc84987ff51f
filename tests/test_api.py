"""fedkit.run, the one entry point: it checks its arguments once and chooses the simulation or the remote engine."""

from __future__ import annotations

from dataclasses import replace
from unittest import mock

import pytest

import fedkit
from fedkit import api
from fedkit.errors import ConfigError, ConfigTypeError
from fedkit.tracking.local import LocalStore

REMOTE = fedkit.RunConfig(engine="remote", rounds=2)


def test_engine_check_explains_what_is_missing() -> None:
    api.check_engine("simulation")
    with pytest.raises(ConfigError, match="engine must be one of"):
        api.check_engine("cloud")
    with pytest.raises(ConfigError, match="admin_kit only applies"):
        api.check_engine("simulation", "kit/")
    with mock.patch.object(api, "find_spec", return_value=None), pytest.raises(ConfigError, match="FLARE"):
        api.check_engine("remote", "kit/")
    with mock.patch.object(api, "find_spec", return_value=object()), pytest.raises(ConfigError, match="admin"):
        api.check_engine("remote")


def test_run_takes_a_run_config_only() -> None:
    with pytest.raises(ConfigTypeError, match="takes a RunConfig; got dict"):
        fedkit.run({"rounds": 2})  # type: ignore[arg-type]


def test_the_simulation_refuses_what_only_the_remote_engine_takes() -> None:
    with pytest.raises(ConfigError, match="admin_kit only applies to engine='remote'"):
        fedkit.run(fedkit.RunConfig(rounds=1), admin_kit="kit/")
    with pytest.raises(ConfigError, match="'dropout' parameter of RunConfig only applies to engine='simulation'"):
        fedkit.RunConfig(engine="remote", dropout=0.1)  # remote sites drop out for real


def test_the_remote_engine_refuses_what_each_site_decides_itself() -> None:
    with (
        mock.patch.object(api, "find_spec", return_value=object()),
        pytest.raises(ConfigError, match=r"engine='remote' takes no federation=, hooks= \(each site loads"),
    ):
        fedkit.run(REMOTE, admin_kit="kit/", federation=object(), hooks=[lambda r, reply: reply])  # type: ignore[arg-type]


def test_a_remote_config_goes_to_the_flare_federation_with_the_local_store_by_default() -> None:
    pytest.importorskip("nvflare")
    with mock.patch("fedkit.remote.submit.run_remote", return_value="result") as run_remote:
        assert fedkit.run(REMOTE, admin_kit="kit/", progress=False) == "result"
        slow = replace(REMOTE, min_silos=2, straggler_timeout=3.0)
        fedkit.run(slow, admin_kit="kit/", progress=False)
    (config,), kwargs = run_remote.call_args_list[0]
    assert config is REMOTE and kwargs["admin_kit"] == "kit/" and kwargs["progress"] is False
    assert (kwargs["min_silos"], kwargs["straggler_timeout"]) == (1, 10)  # the remote defaults
    assert (run_remote.call_args.kwargs["min_silos"], run_remote.call_args.kwargs["straggler_timeout"]) == (2, 3.0)
    assert [type(t) for t in kwargs["trackers"]] == [LocalStore]


def test_run_seeds_validates_before_running(data_dir) -> None:
    with pytest.raises(ConfigError, match="seeds must list"):
        api.run_seeds({"rounds": 1}, [])
    with pytest.raises(ConfigError, match="lr"):
        api.run_seeds({"rounds": 1, "lr": -1}, [42])
    results = api.run_seeds({"rounds": 1, "local_steps": 2}, [42, 43])
    assert [r.config["seed"] for r in results] == [42, 43]
    assert {r["run_id"] for r in LocalStore().list_runs()} == {r.run_id for r in results}


def test_run_seeds_reads_the_data_folder_it_is_given(data_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FEDKIT_DATA_DIR", str(tmp_path / "nothing-here"))
    (result,) = api.run_seeds({"rounds": 1, "local_steps": 2}, [42], data_dir=data_dir)
    assert result.data["directory"] == str(data_dir.resolve())
    with pytest.raises(ConfigError, match="engine='remote' takes no data_dir="):
        api.run_seeds({"rounds": 1}, [42], engine="remote", admin_kit=tmp_path, data_dir=data_dir)
