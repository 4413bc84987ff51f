"""Shared fixtures: the verified data folder (FEDKIT_DATA_DIR), a private fedkit home per test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fedkit.data import uci

SMALL = {"rounds": 2, "local_steps": 5}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The verified UCI files: FEDKIT_DATA_DIR (CI sets it to ../shared/data/heart-disease)."""
    value = os.environ.get("FEDKIT_DATA_DIR")
    if not value or not all((Path(value) / uci.file_name(h)).is_file() for h in uci.HOSPITALS):
        pytest.fail(
            "Set FEDKIT_DATA_DIR to a folder with the four processed UCI files "
            "(`make test` does; `fedkit data download` fetches them)."
        )
    return Path(value)


@pytest.fixture(autouse=True)
def fedkit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test records runs in its own store."""
    home = tmp_path / "fedkit-home"
    monkeypatch.setenv("FEDKIT_HOME", str(home))
    return home


@pytest.fixture
def data_copy(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of the four files, set as FEDKIT_DATA_DIR."""
    target = tmp_path / "data"
    target.mkdir()
    for h in uci.HOSPITALS:
        shutil.copy(data_dir / uci.file_name(h), target / uci.file_name(h))
    monkeypatch.setenv("FEDKIT_DATA_DIR", str(target))
    return target


@pytest.fixture(scope="session")
def local_training() -> type:
    """The LocalTraining class, imported in this one spot (its module moves in the structure refactor)."""
    from fedkit.training import LocalTraining

    return LocalTraining
