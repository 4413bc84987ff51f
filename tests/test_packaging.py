"""Install files agree with each other; `import fedkit` is light."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_lists_the_same_dependencies_as_pyproject() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {str(Requirement(p)) for p in pip if not p.startswith("-")}
    assert listed == {str(Requirement(p)) for p in _pyproject()["project"]["dependencies"]}
    assert "-c requirements/constraints.txt" in pip


def test_constraints_pin_every_core_dependency_inside_its_range() -> None:
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    for spec in _pyproject()["project"]["dependencies"]:
        req = Requirement(spec)
        assert req.name.lower() in pins, f"{req.name} has no pin in constraints.txt"
        assert req.specifier.contains(pins[req.name.lower()]), (
            f"{req.name}=={pins[req.name.lower()]} outside {req.specifier}"
        )


def test_import_fedkit_loads_no_torch_pandas_or_sklearn() -> None:
    code = "import sys, fedkit; fedkit.RunConfig(); print(sorted({'torch','pandas','sklearn'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_console_script_points_at_the_cli() -> None:
    assert _pyproject()["project"]["scripts"] == {"fedkit": "fedkit.cli:main"}
