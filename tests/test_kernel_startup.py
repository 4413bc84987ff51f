"""fedkit._kernel_startup: the report's start-up overrides still do their job, and what they patch still exists."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from fedkit import _kernel_startup as startup


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return "(not installed)"


@pytest.mark.parametrize("reliance", startup.RELIES_ON, ids=lambda r: r.target)
def test_every_upstream_internal_an_override_relies_on_is_still_there(reliance) -> None:
    module_name, path = reliance.target.split(":")
    path, _, parameter = path.rstrip(")").partition("(")
    package = module_name.split(".")[0]
    try:
        found = importlib.import_module(module_name)
        for part in path.split("."):
            found = getattr(found, part)
        if parameter and parameter not in inspect.signature(found).parameters:
            raise AttributeError(f"{path} takes no parameter {parameter!r}")
    except (ImportError, AttributeError) as exc:
        pytest.fail(
            f"fedkit._kernel_startup.{reliance.override} relies on {reliance.target} ({reliance.use}), which "
            f"{package} {_version(package)} no longer has ({exc}). Re-check the override against that version "
            "(the module docstring says what it does) and update it, or remove it and its entry in RELIES_ON."
        )


def test_the_overrides_were_checked_against_the_pinned_versions() -> None:
    constraints = Path(__file__).resolve().parents[1] / "requirements" / "constraints.txt"
    pins = dict(line.split("==") for line in constraints.read_text().splitlines() if "==" in line)
    for package, checked in startup.CHECKED_AGAINST.items():
        assert pins.get(package) == checked, (
            f"requirements/constraints.txt pins {package}=={pins.get(package)} but fedkit._kernel_startup was checked "
            f"against {checked}: re-check each override of RELIES_ON against the new version, then update "
            "CHECKED_AGAINST and the module docstring."
        )


def test_the_python3_kernel_spec_is_the_one_ipykernel_gives() -> None:
    pytest.importorskip("ipykernel")
    from ipykernel.kernelspec import get_kernel_dict

    spec = startup.this_python_specs().get_kernel_spec(startup.KERNEL_NAME)
    upstream = get_kernel_dict()
    assert spec.argv == [*upstream["argv"], "--log-level=ERROR"], "ipykernel changed its kernel command"
    assert (spec.display_name, spec.language) == (upstream["display_name"], upstream["language"])
    # the debugger flag as ipykernel says; not its supported_encryption (ipykernel 7): the report's kernel on
    # 127.0.0.1 talks unencrypted TCP (messages HMAC-signed), as it did before CurveZMQ was offered
    assert spec.metadata == {"debugger": upstream["metadata"]["debugger"]}
    assert spec.argv[0] == sys.executable and (Path(spec.resource_dir) / "logo-64x64.png").is_file()
    with pytest.raises(Exception, match="nosuch"):
        startup.this_python_specs().get_kernel_spec("nosuch")


def test_the_kernel_gets_absolute_data_and_home_folders(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEDKIT_DATA_DIR", "data/heart")
    monkeypatch.setenv("FEDKIT_HOME", "home")
    env = startup.kernel_env()
    assert env["FEDKIT_DATA_DIR"] == str(tmp_path / "data" / "heart")
    assert env["FEDKIT_HOME"] == str(tmp_path / "home")


def test_the_iri_grammar_loads_on_first_use_and_still_validates() -> None:
    code = (
        "import sys, fedkit._kernel_startup as s\n"
        "s.defer_iri_grammar()\n"
        "import nbformat, jsonschema\n"
        "assert 'rfc3987_syntax.syntax_helpers' not in sys.modules, 'the grammar was compiled at import'\n"
        "v = jsonschema.Draft202012Validator({'format': 'iri'}, format_checker=jsonschema.FormatChecker())\n"
        "print(v.is_valid('https://example.org/ä'), v.is_valid('not an iri'))\n"
        "assert 'rfc3987_syntax.syntax_helpers' in sys.modules\n"
    )
    pytest.importorskip("rfc3987_syntax")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]
