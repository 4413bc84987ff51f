"""Sphinx configuration of fedkit's docs (``make docs``; tests/test_docs.py builds them with warnings as errors)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

from fedkit import __version__  # noqa: E402

project = "fedkit"
author = "fedkit contributors"
copyright = "fedkit contributors; UCI Heart Disease data CC BY 4.0"  # noqa: A001 (the name Sphinx reads)
release = version = __version__

extensions = [
    "myst_nb",  # Markdown pages (MyST) and the notebooks
    "sphinx.ext.autodoc",
    "numpydoc",  # NumPy-style docstrings (docs/development.md)
    "fedkit_docs",  # API pages, RunConfig's fields, notebooks copied in (docs/_ext/fedkit_docs.py)
]

root_doc = "index"
exclude_patterns = ["_build", "_ext", "**/.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}

# Warnings are errors in the test build (-W); nitpicky also reports every Python reference that
# does not resolve. Types from libraries without an inventory here (no network at build time) are
# ignored by module name.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"fedkit\..*\._\w+"),  # private names (a private base class shown by show-inheritance)
    # other libraries, by module (the standard library's and the dependencies')
    (r"py:.*", r"(numpy|np|pandas|pd|torch|nn|matplotlib|ipywidgets|nvflare|boto3|botocore|mlflow|sklearn|tqdm"
     r"|papermill|nbformat|nbclient|jupyter_client|collections|pathlib|argparse|threading|datetime|sqlite3"
     r"|subprocess|socket|concurrent|typing|types|io|logging|queue|os|dp_accounting|cryptography)\..+"),
    (r"py:class", r"fedkit\.privacy\.secagg\.M"),  # the TypeVar of Message.from_wire
    # their classes named bare in annotations imported for type checking only
    (r"py:class", r"Figure|Axes|Path|DataFrame"),
]  # fmt: skip

# Docstrings: NumPy style (docs/development.md), parsed by numpydoc. Members are listed by autodoc,
# not by numpydoc's autosummary tables.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"  # types in the signature; the docstring entries say what each parameter is
autodoc_typehints_format = "short"
autodoc_class_signature = "separated"
autodoc_default_options = {"exclude-members": "__init__, __new__, __post_init__"}

# Notebooks are committed without outputs and rendered as they are: never executed at build time.
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
smartquotes = False  # keep `--flag` in help texts as typed

html_theme = "pydata_sphinx_theme"
html_title = f"fedkit {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"**": ["sidebar-nav-bs"]}
html_static_path: list[str] = []
