"""Reports: run a notebook with papermill, export it to one standalone HTML file, in ``reports/``.

``render(notebook, parameters)`` injects the parameters after the notebook's ``parameters`` cell,
executes it on the ``python3`` kernel of the running interpreter, and writes
``<output_dir>/<date>_<time>_<notebook>[_<parameters>].ipynb`` and ``.html`` (figures embedded as
data URIs, code hidden). A cell that raises fails the whole call with that cell's error.

The kernel starts before papermill is imported and warms fedkit's imports while this process loads
papermill and nbconvert; the private jupyter_client / jsonschema overrides that make that fast live
apart, in ``fedkit._kernel_startup``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fedkit._kernel_startup import KERNEL_NAME, Kernel, defer_iri_grammar
from fedkit.errors import ConfigError, ReportError


@dataclass(frozen=True)
class Report:
    """The files one report wrote: the executed notebook and its standalone HTML export.

    Parameters
    ----------
    notebook
        The executed notebook.
    html
        Its standalone HTML export (None when not asked for).
    """

    notebook: Path
    html: Path | None


def report_name(notebook: Path, parameters: Mapping[str, Any], when: datetime) -> str:
    """``<YYYY-MM-DD>_<HHMMSS>_<notebook stem>[_<name>-<value>...]``: sortable by date, says which run.

    Parameters
    ----------
    notebook
        The source notebook.
    parameters
        The parameters it was run with (each adds ``_<name>-<value>``).
    when
        The time the report was made.
    """

    def text(value: Any) -> str:
        if isinstance(value, Mapping):
            return "-".join(f"{k}{text(v)}" for k, v in value.items())
        if isinstance(value, list | tuple):
            return "-".join(map(text, value))
        return str(value)

    slug = "_".join(f"{k}-{text(v)}" for k, v in parameters.items())
    slug = re.sub(r"[^A-Za-z0-9.=_-]+", "", slug)[:80].rstrip("._-")
    return "_".join(part for part in (when.strftime("%Y-%m-%d_%H%M%S"), notebook.stem, slug) if part)


def notebook_parameters(notebook: Path) -> dict[str, Any]:
    """The names and default values (source text) of the notebook's ``parameters`` cell.

    Parameters
    ----------
    notebook
        The notebook to read.
    """
    import json

    cells = json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])  # json: nbformat loads slowly
    cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return {}
    source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    names = {}
    for line in source.splitlines():
        match = re.match(r"^([A-Za-z_]\w*)\s*(?::[^=]+)?=\s*(.+?)\s*(#.*)?$", line)
        if match:
            names[match.group(1)] = match.group(2)
    return names


def _check_parameters(notebook: Path, parameters: Mapping[str, Any]) -> None:
    declared = notebook_parameters(notebook)
    unknown = [name for name in parameters if name not in declared]
    if unknown:
        allowed = ", ".join(declared) or "(none: the notebook has no cell tagged 'parameters')"
        raise ConfigError(
            f"{notebook.name} has no parameter {', '.join(map(repr, unknown))}; its parameters are: {allowed}."
        )


def render(
    notebook: str | Path,
    parameters: Mapping[str, Any] | None = None,
    *,
    output_dir: str | Path = "reports",
    html: bool = True,
    timeout: float = 600,
    kernel_name: str = KERNEL_NAME,
) -> Report:
    """Execute ``notebook`` with ``parameters`` (papermill) and export it to HTML; returns the paths written.

    The executed notebook is written even when a cell fails; the :class:`ReportError` then names the cell, its
    error and that file.

    Parameters
    ----------
    notebook
        The notebook to execute.
    parameters
        Values for the names of its ``parameters`` cell.
    output_dir
        Folder the report files are written to.
    html
        Also export the executed notebook to standalone HTML.
    timeout
        Bound on each cell, in seconds.
    kernel_name
        The Jupyter kernel that runs it.

    Returns
    -------
    Report
        The paths written.

    Raises
    ------
    ReportError
        When a cell fails or the export does.
    """
    notebook = Path(notebook)
    parameters = dict(parameters or {})
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        raise ConfigError(f"Notebook {notebook} does not exist or is not an .ipynb file; give the path to one.")
    _check_parameters(notebook, parameters)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = report_name(notebook, parameters, datetime.now())
    executed = out_dir / f"{stem}.ipynb"

    kernel = Kernel(kernel_name, notebook.parent, timeout)  # starts first: it is the longest pole
    defer_iri_grammar()
    try:
        exporter = _html_exporter() if html else None  # nbconvert loads while the kernel imports
        nb = _execute(notebook, executed, parameters, kernel, timeout=timeout)
    except BaseException:
        kernel.shutdown()
        raise
    stopping = threading.Thread(target=kernel.shutdown, name="fedkit-kernel-shutdown")
    stopping.start()  # the kernel stops (0.1 s) while the page renders
    try:
        if exporter is None:
            return Report(executed, None)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": _title(notebook, parameters)}})
        page = out_dir / f"{stem}.html"
        page.write_text(body, encoding="utf-8")
        return Report(executed, page)
    finally:
        stopping.join()


def _execute(notebook: Path, output: Path, parameters: dict[str, Any], kernel: Kernel, *, timeout: float) -> Any:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    # no waiting for the warm-up: papermill's requests queue behind it in the kernel (shell requests run in
    # order; each client only reads the replies and outputs of its own messages)
    try:
        return papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters,
            kernel_name=kernel.manager.kernel_name,
            progress_bar=False,
            execution_timeout=timeout,
            cwd=str(notebook.parent),
            log_output=False,
            km=kernel.manager,  # the kernel started (and warmed up) above; see fedkit._kernel_startup
        )
    except PapermillExecutionError as exc:
        raise ReportError(
            f"{notebook.name} failed in cell {exc.exec_count} ({exc.ename}: {exc.evalue}). "
            f"The executed notebook with the full traceback is {output}."
        ) from None


def _html_exporter() -> Any:
    """nbconvert's lab HTML exporter, code hidden, images embedded, its templates compiled.

    Jinja compiles the templates a page includes on the first render (0.4 s), so a tiny notebook
    with every kind of output is rendered here, while the kernel is still importing.
    """
    from nbconvert import HTMLExporter
    from nbformat import v4

    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.embed_images = True
    outputs = [
        v4.new_output("stream", name="stdout", text="text"),
        v4.new_output("display_data", data={"text/markdown": "**text**", "text/plain": "text"}),
        v4.new_output("execute_result", data={"text/html": "<b>text</b>", "text/plain": "text"}, execution_count=1),
        v4.new_output("display_data", data={"image/png": _PIXEL, "text/plain": "<Figure>"}),
        v4.new_output("error", ename="Error", evalue="text", traceback=["text"]),
    ]
    cells = [v4.new_markdown_cell("# title"), v4.new_code_cell("pass", outputs=outputs, execution_count=1)]
    exporter.from_notebook_node(v4.new_notebook(cells=cells), resources={"metadata": {"name": "warm-up"}})
    return exporter


_PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
"""A 1x1 PNG: the warm-up page's figure."""


def _title(notebook: Path, parameters: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in parameters.items())
    return f"fedkit report: {notebook.stem}" + (f" ({shown})" if shown else "")
