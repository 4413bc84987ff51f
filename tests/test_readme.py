"""The README stays short, its links and pictures resolve, and its example output is what the command prints."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 200


def _benchmark(name: str) -> ModuleType:
    """A script of benchmarks/ as a module (they import their helpers as top-level modules)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_readme_is_under_200_lines() -> None:
    lines = README.read_text().count("\n")
    assert lines < MAX_LINES, f"README.md has {lines} lines; move reference text into docs/ (limit {MAX_LINES})."


def test_readme_links_and_pictures_point_at_files_that_exist() -> None:
    targets = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+://", t) and not t.startswith("#")]
    assert "docs/widget_panel.png" in local
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_example_is_what_its_command_prints_now(data_dir: Path) -> None:
    example = _benchmark("readme_example")
    command = example.command_in_readme()
    assert command.startswith("fedkit run ")
    shown = example.read_section(example.SECTION)
    fresh = example.example_block(command)
    assert shown == fresh, (
        "README.md's example output is stale: run `python benchmarks/readme_example.py --write-docs` "
        f"(with FEDKIT_DATA_DIR set).\n--- README\n{shown}\n--- now\n{fresh}"
    )


def test_benchmark_sections_each_live_in_exactly_one_page() -> None:
    sections = _benchmark("_sections")
    names = set()
    for page in sections.pages():
        names |= set(re.findall(r"^<!-- ([\w-]+):start -->$", page.read_text(), flags=re.MULTILINE))
    assert {"readme-example", "flamby-fedavg", "flamby-table", "search", "speed", "remote-rounds"} <= names
    for name in names:
        assert sections.find_section(name).is_file()
    with pytest.raises(SystemExit, match="exactly one"):
        sections.find_section("no-such-section")


def test_every_install_instruction_installs_this_repository_not_the_unrelated_pypi_fedkit() -> None:
    # `pip install 'fedkit[aws]'` installs someone else's package: fedkit comes from the clone or the git URL
    pages = [README, *sorted((ROOT / "docs").rglob("*.md")), ROOT / "deploy" / "docker" / "Dockerfile"]
    lines = [(page.name, line) for page in pages for line in page.read_text().splitlines() if "pip install" in line]
    assert any("-e '.[" in line for _, line in lines) and any("@ git+" in line for _, line in lines)
    by_name = re.compile(r"pip install (?:[^`]*\s)?'?fedkit(?:\[[^\]]*\])?'?(?!\s*@)(?=[\s`'\"]|$)")
    warnings = re.compile(r"someone else|unrelated|not on PyPI")  # the lines that say not to
    wrong = [(name, line) for name, line in lines if by_name.search(line) and not warnings.search(line)]
    assert not wrong, f"install instructions that fetch the PyPI project named fedkit: {wrong}"
    assert by_name.search("pip install 'fedkit[aws]'") and by_name.search("`pip install fedkit`")  # what it catches
    assert not by_name.search("pip install 'fedkit[aws] @ git+https://example.org/fedkit.git'")


def test_the_notebooks_checkpoints_are_ignored_by_git() -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    checked = subprocess.run(
        [git, "-C", str(ROOT), "check-ignore", "-q", "notebooks/.ipynb_checkpoints/01_explore_silos-checkpoint.ipynb"]
    )
    assert checked.returncode == 0, "notebooks/.ipynb_checkpoints/ is not in .gitignore"


def test_make_test_says_when_chromium_is_missing_instead_of_skipping_silently(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    absent = tmp_path / "chromium"
    checked = subprocess.run(
        [make, "-s", "-C", str(ROOT), "chromium-check", f"CHROMIUM={absent}"], capture_output=True, text=True
    )
    assert checked.returncode == 0  # a warning, not a failure: the rest of the suite still runs
    assert f"{absent} is missing" in checked.stderr and "apt-get install chromium" in checked.stderr
    plan = subprocess.run([make, "-n", "-C", str(ROOT), "test"], capture_output=True, text=True, check=True).stdout
    lines = plan.splitlines()
    assert any("chromium" in line for line in lines[: next(i for i, x in enumerate(lines) if "pytest" in x)])
