"""The README stays short, its links and pictures resolve, and its example output is what the command prints."""

from __future__ import annotations

import importlib.util
import re
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
