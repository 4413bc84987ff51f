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


def _environment_pip() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def test_environment_yml_lists_the_same_dependencies_as_pyproject() -> None:
    assert "python=3.11" in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip = _environment_pip()
    listed = {str(Requirement(p)) for p in pip if not p.startswith("-")}
    assert listed == {str(Requirement(p)) for p in _pyproject()["project"]["dependencies"]}
    assert "-c requirements/constraints.txt" in pip


def test_constraints_pin_every_dependency_and_extra_inside_its_range() -> None:
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    project = _pyproject()["project"]
    extras = [spec for specs in project["optional-dependencies"].values() for spec in specs]
    for spec in project["dependencies"] + [s for s in extras if Requirement(s).name != "fedkit"]:
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


def test_torch_is_an_extra_included_in_all_and_environment_yml() -> None:
    project = _pyproject()["project"]
    assert not [s for s in project["dependencies"] if Requirement(s).name == "torch"]
    assert [Requirement(s).name for s in project["optional-dependencies"]["torch"]] == ["torch"]
    assert "torch" in Requirement(project["optional-dependencies"]["all"][0]).extras
    editable = next(p for p in _environment_pip() if p.startswith("-e ."))  # -e .[extra,...]
    assert "torch" in editable.removeprefix("-e .[").removesuffix("]").split(",")


# Makes `import torch` fail in a fresh interpreter, as on an install without the 'torch' extra.
WITHOUT_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoTorch())
"""


RUN_BOTH_BACKENDS = """
import fedkit
result = fedkit.run(fedkit.RunConfig(rounds=1), trackers=[], progress=False)
print(result.status, "torch" in sys.modules)
try:
    fedkit.run(fedkit.RunConfig(rounds=1, backend="torch"), trackers=[], progress=False)
except fedkit.ConfigError as exc:
    print(type(exc.__cause__).__name__, exc)
"""


def test_without_torch_the_simulation_runs_and_the_torch_backend_names_the_extra() -> None:
    code = WITHOUT_TORCH + RUN_BOTH_BACKENDS
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    ran, refused = done.stdout.strip().splitlines()
    assert ran == "finished False"
    assert refused.startswith("ModuleNotFoundError backend='torch' (the per-silo trainer) needs PyTorch")
    assert "fedkit's 'torch' extra" in refused and "pip install -e '.[torch]'" in refused
