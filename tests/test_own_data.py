"""Own data per silo: files or DataFrames read against a schema, exactly as the built-in UCI splits read theirs.

A site given a file that breaks the schema refuses to start (``fedkit remote start``, exit 2) with a
message naming the file, the line and the column, before it joins anything.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedkit
from fedkit.cli import main
from fedkit.data import uci
from fedkit.data.silos import load_silos
from fedkit.errors import ConfigError, SiteDataError


def own_copies(data_dir: Path, target: Path) -> dict[str, str]:
    target.mkdir()
    return {h: str(shutil.copy(data_dir / uci.file_name(h), target / f"{h}.data")) for h in uci.HOSPITALS}


@pytest.mark.parametrize("split", ["flamby", "hospitals"])
def test_own_files_give_exactly_the_builtin_silos(data_dir, tmp_path, split) -> None:
    builtin = load_silos(split, standardize="federated")
    # under impute (hospitals) the UCI split treats chol == 0 as "not measured" in switzerland and va: say so
    codes = {h: {"chol": [0]} for h in ("switzerland", "va")} if split == "hospitals" else None
    own = load_silos(
        split, standardize="federated", data=own_copies(Path(data_dir), tmp_path / "own"), not_measured=codes
    )
    assert own.names == builtin.names and own.features == builtin.features
    for a, b in zip(own.silos, builtin.silos, strict=True):
        for field in ("x_train", "y_train", "x_test", "y_test"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (a.name, field)
    assert own.provenance.verified is False  # file names are not the pinned ones: not claimed as verified


def test_a_data_frame_is_a_silo_too(data_dir) -> None:
    frame = pd.DataFrame(uci.read_hospital(Path(data_dir), "cleveland"), columns=list(uci.COLUMNS))
    federation = load_silos("flamby", data={"cleveland": frame, "va": str(Path(data_dir) / "processed.va.data")})
    builtin = load_silos("flamby")
    assert np.array_equal(federation.silos[0].x_train, builtin.silos[0].x_train)
    assert federation.provenance.sha256["cleveland"] == "data frame"


def test_a_runconfig_with_own_files_runs_and_records_their_hashes(data_dir, tmp_path) -> None:
    files = own_copies(Path(data_dir), tmp_path / "own")
    result = fedkit.run(fedkit.RunConfig(data=files, rounds=2), trackers=[], progress=False)
    assert list(result.final["silos"]) == list(files)
    assert result.data["sha256"]["va"] == uci.PINS["processed.va.data"].sha256


def test_own_data_refusals_name_what_to_change(data_dir, tmp_path) -> None:
    with pytest.raises(ConfigError, match="takes split 'flamby' or 'hospitals'"):
        load_silos("iid", data={"a": "a.csv"})
    with pytest.raises(ConfigError, match="apply to own data"):
        load_silos("flamby", schema="schema.yaml")
    with pytest.raises(ConfigError, match=r"names silo\(s\) \['vaa'\] that are not in data"):
        load_silos("hospitals", data=own_copies(Path(data_dir), tmp_path / "own"), not_measured={"vaa": {"chol": [0]}})
    with pytest.raises(ConfigError, match="each site reads only its own file: start it with `fedkit remote start"):
        fedkit.RunConfig(engine="remote", data={"a": "a.csv"})


def test_a_broken_file_names_file_line_and_column(tmp_path) -> None:
    bad = tmp_path / "own.csv"
    bad.write_text("age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,num\n63,1,1,145,233,1,2,150,0,2.3,0\n"
                   "67,1,5,160,286,0,2,108,1,1.5,2\n")  # fmt: skip
    with pytest.raises(SiteDataError, match=r"own.csv, line 3, column 'cp': '5' is not a level of 'cp'") as err:
        load_silos("hospitals", data={"a": str(bad)})
    assert (err.value.line, err.value.column) == (3, "cp")


def test_a_site_refuses_to_start_with_a_file_that_breaks_the_schema(tmp_path, capsys) -> None:
    pytest.importorskip("nvflare")
    from fedkit.remote import kits

    project = tmp_path / "project.yml"
    import yaml

    project.write_text(yaml.safe_dump(kits.loopback_project(["cleveland"], kits.free_port())))
    site_kit = kits.provision(project, tmp_path / "kits") / "cleveland"
    bad = tmp_path / "processed.cleveland.data"
    bad.write_text(
        "63.0,1.0,1.0,145.0,233.0,1.0,2.0,150.0,0.0,2.3,3.0,0.0,6.0,0\n63.0,1.0,5.0,145.0,233.0,1.0,2.0,150.0,0.0,2.3,3.0,0.0,6.0,1\n"
    )
    code = main(["remote", "start", "--kit", str(site_kit), "--workspace", str(tmp_path / "ws"), "--data", str(bad)])
    assert code == 2
    message = capsys.readouterr().err
    assert f"{bad}, line 2, column 'cp': '5.0' is not a level of 'cp'" in message
    assert not (tmp_path / "ws").exists()  # refused before anything was copied or started
