"""Write a benchmark's output between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in the page holding them.

The pages are README.md and the Markdown files under docs/; each marker pair, each marker on a line of
its own, appears in exactly one of them, so a table can move between pages without touching its script.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pages(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown page of the docs, in a fixed order."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _section(name: str, content: str) -> re.Match[str] | None:
    """The body of section ``name`` in ``content``: the lines between its start and end marker lines."""
    start, end = re.escape(f"<!-- {name}:start -->"), re.escape(f"<!-- {name}:end -->")
    return re.search(rf"^{start}\n(.*?)^{end}$", content, flags=re.DOTALL | re.MULTILINE)


def find_section(name: str, root: Path = ROOT) -> Path:
    """The one page that holds the markers of section ``name``."""
    found = [page for page in pages(root) if page.is_file() and _section(name, page.read_text())]
    if len(found) != 1:
        where = ", ".join(str(p.relative_to(root)) for p in found) or "no page"
        raise SystemExit(
            f"Section {name!r} must be in exactly one of README.md and docs/*.md; found in {where}. Put the lines "
            f"<!-- {name}:start --> and <!-- {name}:end --> where the table belongs."
        )
    return found[0]


def read_section(name: str, root: Path = ROOT) -> str:
    """The text of section ``name``, without its marker lines."""
    match = _section(name, find_section(name, root).read_text())
    assert match is not None  # find_section found it
    return match.group(1).strip("\n")


def write_section(name: str, text: str, root: Path = ROOT) -> Path:
    """Replace the text of section ``name`` with ``text``; returns the page written."""
    page = find_section(name, root)
    content = page.read_text()
    match = _section(name, content)
    assert match is not None  # find_section found it
    page.write_text(f"{content[: match.start(1)]}{text.strip(chr(10))}\n{content[match.end(1) :]}")
    print(f"wrote section {name!r} of {page.relative_to(root)}")
    return page
