"""`fedkit report` and fedkit.reports: CLI parameter merging (patched API call), names, errors, helpers."""

from __future__ import annotations

import shlex
from datetime import datetime
from pathlib import Path
from unittest import mock

import pytest

from fedkit import reports
from fedkit.cli import main, report_parameters
from fedkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
HEADLESS = ROOT / "notebooks" / "04_headless_report.ipynb"


def test_report_command_parses_values_as_yaml_and_calls_render(tmp_path, capsys) -> None:
    written = reports.Report(tmp_path / "r.ipynb", tmp_path / "r.html")
    with mock.patch.object(reports, "render", return_value=written) as render:
        parameters = "-p rounds 5 -p seeds '[42, 43]' -p strategy fedprox -p hyperparameters '{mu: 0.01}'"
        code = main(["report", str(HEADLESS), *shlex.split(parameters), "--output-dir", str(tmp_path)])
    assert code == 0
    assert render.call_args.args == (
        str(HEADLESS),
        {"rounds": 5, "seeds": [42, 43], "strategy": "fedprox", "hyperparameters": {"mu": 0.01}},
    )
    assert render.call_args.kwargs == {"output_dir": str(tmp_path), "html": True}
    out = capsys.readouterr().out
    assert str(written.notebook) in out and str(written.html) in out


def test_report_parameters_keep_unparsable_text_as_a_string() -> None:
    assert report_parameters([["name", "a: b: c"], ["n", "null"], ["x", "0.5"]]) == {
        "name": "a: b: c",
        "n": None,
        "x": 0.5,
    }


def test_report_name_sorts_by_date_and_says_which_run() -> None:
    name = reports.report_name(HEADLESS, {"rounds": 5, "seeds": [42, 43]}, datetime(2026, 1, 2, 3, 4, 5))
    assert name == "2026-01-02_030405_04_headless_report_rounds-5_seeds-42-43"
    name = reports.report_name(HEADLESS, {"hyperparameters": {"mu": 0.01, "lr": 0.1}}, datetime(2026, 1, 2))
    assert name.endswith("_04_headless_report_hyperparameters-mu0.01-lr0.1")


def test_unknown_parameter_is_refused_before_running(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"no parameter 'round'.*rounds"):
        reports.render(HEADLESS, {"round": 5}, output_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_missing_notebook_is_an_actionable_cli_error(tmp_path, capsys) -> None:
    assert main(["report", str(tmp_path / "nope.ipynb")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_headless_notebook_declares_the_issue_parameters() -> None:
    declared = reports.notebook_parameters(HEADLESS)
    assert set(declared) == {
        "split",
        "strategy",
        "rounds",
        "seeds",
        "hyperparameters",
        "tracker",
        "engine",
        "admin_kit",
        "data_dir",
    }
    assert declared["engine"] == '"simulation"'


def test_notebook_modules_import_their_heavy_dependencies_lazily() -> None:
    import subprocess
    import sys

    code = (
        "import sys, fedkit, fedkit.widgets, fedkit.plots, fedkit.reports, fedkit.explore; "
        "print(sorted({'matplotlib', 'ipywidgets', 'papermill', 'nbconvert', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
