"""The docs site builds in strict mode: any warning, broken reference or page missing from a toctree fails it."""

from __future__ import annotations

import dataclasses
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fedkit

ROOT = Path(__file__).resolve().parents[1]
BUILD_S = 600


def _sphinx(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """``make docs``'s strict build (warnings are errors, every reference checked), from scratch."""
    pytest.importorskip("sphinx", reason="the docs extra is not installed (make setup installs it)")
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-n", "-W", "--keep-going", "-E", "-q"]
    return subprocess.run(
        [*command, "-d", str(out / "doctrees"), str(source), str(out / "html")],
        capture_output=True, text=True, timeout=BUILD_S, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built from the repository's docs/ in strict mode."""
    out = tmp_path_factory.mktemp("docs")
    done = _sphinx(ROOT / "docs", out)
    assert done.returncode == 0, f"the strict docs build failed:\n{done.stderr[-5000:]}"
    return out / "html"


def _text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_docs_build_in_strict_mode_with_every_page(site: Path) -> None:
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    for name in ["getting-started", "concepts/silos", "concepts/round-loop", "concepts/strategies",
                 "concepts/personalization", "concepts/engines", "notebooks", "tracking", "remote", "eks",
                 "benchmarks", "development", "about", "api/index"]:  # fmt: skip
        assert f"{name}.html" in pages
    rendered = {p.stem for p in (site / "notebooks").glob("*.html")}
    assert rendered == {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}


def test_api_reference_documents_every_public_name_where_it_is_defined(site: Path) -> None:
    index = (site / "api" / "index.html").read_text()
    for name in fedkit.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(fedkit, name)
        page = site / "api" / f"{obj.__module__}.html"
        assert f'id="{obj.__module__}.{obj.__qualname__}"' in page.read_text(), name
        assert f"{obj.__module__}.html#{obj.__module__}.{obj.__qualname__}" in index, name


def test_every_runconfig_field_is_documented_with_its_help(site: Path) -> None:
    config = fedkit.RunConfig
    page = (site / "api" / f"{config.__module__}.html").read_text()
    text = " ".join(_text(site / "api" / f"{config.__module__}.html").split())
    for field in dataclasses.fields(config):
        entry = re.search(rf'<strong>{field.name}</strong><span class="classifier">([^<]*)</span>', page)
        assert entry is not None, f"{field.name} is not a documented parameter of RunConfig"
        assert html.unescape(entry.group(1)).endswith(f"default {field.default!r}"), field.name
        assert " ".join(field.metadata["help"].split()) in text, field.name


def test_a_broken_reference_or_an_unlisted_page_fails_the_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("api", "notebooks", "_build"))
    (tmp_path / "notebooks").symlink_to(ROOT / "notebooks")  # the repo's layout: docs/ beside notebooks/
    (docs / "stray.md").write_text("# Stray\n\nSee {doc}`no-such-page` and {py:func}`fedkit.no_such_function`.\n")
    done = _sphinx(docs, tmp_path / "out")
    assert done.returncode != 0
    assert "document isn't included in any toctree" in done.stderr
    assert "unknown document: 'no-such-page'" in done.stderr
    assert "fedkit.no_such_function" in done.stderr
