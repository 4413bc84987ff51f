"""Sphinx extension for fedkit's docs: the API pages, RunConfig's fields and the notebooks, all from the repo.

Nothing here names a fedkit module by hand, so moving code between modules never breaks the docs:

- ``api/`` is written afresh at every build by walking the ``fedkit`` package (one page per public module,
  ``automodule`` with the members defined there) plus an index of ``fedkit.__all__``, each name linked to
  the module that defines it today.
- A public name written as ``fedkit.NAME`` in a page or a docstring (``{py:func}`fedkit.run```) resolves
  to wherever ``NAME`` is defined, the way users import it; a short name (``RunResult``) resolves to
  the one documented object whose path ends with it.
- A dataclass whose fields carry ``metadata={"help": ...}`` (RunConfig) gets one documented parameter per
  field: type, default and help, the same text ``fedkit run --help`` prints.
- ``notebooks/*.ipynb`` are copied into the source tree (``notebooks/`` here) for MyST-NB to render as
  committed (no outputs, not executed).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
import shutil
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.config import Config

PACKAGE = "fedkit"
API_DIR = "api"
NOTEBOOK_DIR = "notebooks"
REPO = Path(__file__).resolve().parents[2]


def public_modules(package: str = PACKAGE) -> list[str]:
    """Every importable module of ``package`` whose dotted path has no ``_``-prefixed part, sorted."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def public_names(package: str = PACKAGE) -> dict[str, Any]:
    """``package.__all__`` (less ``__version__``) mapped to the objects, resolved through the lazy exports."""
    root = importlib.import_module(package)
    return {name: getattr(root, name) for name in root.__all__ if not name.startswith("__")}


def canonical_path(obj: Any) -> str:
    """``module.qualname`` of the place that defines ``obj``."""
    return f"{obj.__module__}.{obj.__qualname__}"


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _role(obj: Any) -> str:
    return "py:class" if inspect.isclass(obj) else "py:func"


def _title(text: str) -> str:
    return f"{text}\n{'=' * len(text)}\n"


def write_api_pages(srcdir: Path) -> None:
    """Write ``api/index.rst`` and one page per public module, removing pages of modules that are gone."""
    target = srcdir / API_DIR
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    exports = public_names()
    modules = sorted(set(public_modules()) | {obj.__module__ for obj in exports.values()})
    for module in modules:
        body = f".. automodule:: {module}\n   :members:\n   :ignore-module-all:\n   :show-inheritance:\n"
        (target / f"{module}.rst").write_text(f"{_title(f'``{module}``')}\n{body}")
    rows = "\n".join(
        f"   * - :{_role(obj)}:`{PACKAGE}.{name} <{canonical_path(obj)}>`\n     - {_summary(obj) or ' '}"
        for name, obj in sorted(exports.items())
    )
    index = (
        f"{_title('API reference')}\n"
        "Generated from the docstrings at every build (NumPy docstring style; see :doc:`/development`).\n"
        f"Everything a user needs is importable from ``{PACKAGE}`` itself:\n\n"
        f".. list-table::\n   :header-rows: 1\n   :widths: 30 70\n\n   * - name\n     - what it is\n{rows}\n\n"
        "Every module, one page each:\n\n"
        ".. toctree::\n   :maxdepth: 1\n\n" + "".join(f"   {m}\n" for m in modules)
    )
    (target / "index.rst").write_text(index)


def copy_notebooks(srcdir: Path, source: Path = REPO / "notebooks") -> None:
    """Copy the committed notebooks next to the pages (MyST-NB reads sources inside the docs folder only).

    A notebook whose Markdown has no level-1 heading gets one, its file name, so that it has a page title.
    """
    target = srcdir / NOTEBOOK_DIR
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for notebook in sorted(source.glob("*.ipynb")):
        content = json.loads(notebook.read_text())
        markdown = ["".join(c["source"]) for c in content["cells"] if c["cell_type"] == "markdown"]
        if not any(line.startswith("# ") for text in markdown for line in text.splitlines()):
            title = {
                "cell_type": "markdown",
                "id": "fedkit-docs-title",
                "metadata": {},
                "source": [f"# {notebook.stem}"],
            }
            content["cells"].insert(0, title)  # cell ids: nbformat 4.5, which the notebooks are saved in
        (target / notebook.name).write_text(json.dumps(content, indent=1))


def field_parameters(cls: type) -> list[str]:
    """NumPy-style parameter entries for each dataclass field that has ``metadata["help"]``."""
    out = []
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            default = f.default if f.default is not dataclasses.MISSING else None
            type_text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            out += [f"{f.name} : {type_text}, default {default!r}", f"    {f.metadata['help']}"]
    return out


def _section_bounds(lines: list[str], title: str) -> tuple[int, int] | None:
    """First and past-last line of the NumPy section ``title`` in ``lines``."""
    heads = [i for i in range(len(lines) - 1) if lines[i + 1].strip().startswith("---") and lines[i].strip()]
    for k, i in enumerate(heads):
        if lines[i].strip() == title:
            return i, heads[k + 1] if k + 1 < len(heads) else len(lines)
    return None


def document_fields(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Add a ``Parameters`` entry per help-carrying dataclass field that the docstring does not list yet."""
    if what != "class" or not dataclasses.is_dataclass(obj):
        return
    entries = field_parameters(obj)
    bounds = _section_bounds(lines, "Parameters")
    listed = {line.split(":")[0].strip() for line in lines[bounds[0] : bounds[1]]} if bounds else set()
    new: list[str] = []
    for head, text in zip(entries[::2], entries[1::2], strict=True):
        if head.split(":")[0].strip() not in listed:
            new += [head, text]
    if not new:
        return
    if bounds:
        end = bounds[1]
        while end > bounds[0] and not lines[end - 1].strip():
            end -= 1
        lines[end:end] = new
    else:
        lines += ["", "Parameters", "----------", *new, ""]


def resolve_reference(app: Sphinx, env: Any, node: nodes.Element, contnode: nodes.Element) -> nodes.Element | None:
    """Resolve a Python reference Sphinx could not: public names, then a unique documented suffix.

    ``fedkit.NAME`` (a name of ``fedkit.__all__``) points at the object where it is defined, the way users
    import it. Any other target is looked up as Sphinx looks up ``.NAME``: the documented object whose
    dotted path ends with it (``RunResult`` in a docstring finds ``fedkit.result.RunResult``); none or
    several still fail the strict build.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    obj = public_names().get(target.removeprefix(f"{PACKAGE}.")) if target.startswith(f"{PACKAGE}.") else None
    if obj is not None:
        target = canonical_path(obj)
    node["refspecific"] = True
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], target, node, contnode)


def generate(app: Sphinx, config: Config) -> None:
    """Write the generated sources before Sphinx looks for pages."""
    srcdir = Path(app.srcdir)
    write_api_pages(srcdir)
    copy_notebooks(srcdir)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the generators and the two docstring hooks."""
    app.connect("config-inited", generate)
    app.connect("autodoc-process-docstring", document_fields, priority=400)  # before numpydoc (500)
    app.connect("missing-reference", resolve_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
