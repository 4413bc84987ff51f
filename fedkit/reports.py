"""Reports: run a notebook with papermill, export it to one standalone HTML file, in ``reports/``.

``render(notebook, parameters)`` injects the parameters after the notebook's ``parameters`` cell,
executes it on the ``python3`` kernel of the running interpreter, and writes
``<output_dir>/<date>_<time>_<notebook>[_<parameters>].ipynb`` and ``.html`` (figures embedded as
data URIs, code hidden). A cell that raises fails the whole call with that cell's error.

Also the helpers the headless report notebook calls: trackers by name, the engine check, seeds.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from fedkit.errors import ConfigError, ReportError

KERNEL_NAME = "python3"


@dataclass(frozen=True)
class Report:
    """The files one report wrote: the executed notebook and its standalone HTML export."""

    notebook: Path
    html: Path | None


def report_name(notebook: Path, parameters: Mapping[str, Any], when: datetime) -> str:
    """``<YYYY-MM-DD>_<HHMMSS>_<notebook stem>[_<name>-<value>...]``: sortable by date, says which run."""

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
    """The names and default values (source text) of the notebook's ``parameters`` cell."""
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

    The executed notebook is written even when a cell fails; the :class:`ReportError` then names
    the cell, its error and that file. ``timeout`` bounds each cell, in seconds.
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

    kernel = _Kernel(kernel_name, notebook.parent, timeout)  # starts first: it is the longest pole
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


WARM_UP = """
def _fedkit_warm_up():
    import importlib
    for name in ("matplotlib_inline.backend_inline", "matplotlib.figure", "matplotlib.backends.backend_agg",
                 "pandas", "fedkit.runner", "fedkit.engines.simulation", "fedkit.engines.vectorized",
                 "fedkit.plots", "fedkit.explore", "fedkit.reports"):
        try:
            importlib.import_module(name)
        except Exception:
            pass
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1, 1))
    figure.add_subplot().set_title("fonts")
    FigureCanvasAgg(figure).draw()  # loads the fonts the first real figure would wait for
_fedkit_warm_up()
del _fedkit_warm_up
"""
"""What the kernel imports while this process loads papermill: the modules fedkit's notebooks import anyway."""


def defer_iri_grammar() -> None:
    """Make ``rfc3987_syntax`` load on its first use instead of when jsonschema is imported.

    papermill and nbconvert import nbformat, nbformat imports jsonschema, and jsonschema (4.26, with
    the ``format-nongpl`` extra that jupyter-events installs) imports ``rfc3987_syntax``, which
    compiles a Lark grammar at import: about 2 s of every report, for an ``iri`` format check that
    notebooks never use (python-jsonschema/jsonschema#1428). A stand-in module takes its place in
    ``sys.modules``; its ``is_valid_syntax`` (and any other attribute) imports the real module when
    first needed, so validation behaves as before.
    """
    name = "rfc3987_syntax"
    if name in sys.modules or find_spec(name) is None:
        return
    stand_in = types.ModuleType(name, "Stand-in that imports the real rfc3987_syntax on first use (fedkit.reports).")

    def real() -> types.ModuleType:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return importlib.import_module(name)

    def is_valid_syntax(*args: Any, **kwargs: Any) -> bool:
        return real().is_valid_syntax(*args, **kwargs)

    stand_in.is_valid_syntax = is_valid_syntax  # type: ignore[attr-defined]

    def attribute(attr: str) -> Any:
        if attr.startswith("__"):  # the import system probes __spec__ & co.: that must not load the grammar
            raise AttributeError(attr)
        return getattr(real(), attr)

    stand_in.__getattr__ = attribute  # type: ignore[method-assign]
    sys.modules[name] = stand_in


def kernel_env() -> dict[str, str]:
    """This process's environment with FEDKIT_DATA_DIR / FEDKIT_HOME made absolute (the kernel runs elsewhere)."""
    from fedkit.paths import DATA_DIR_ENV, HOME_ENV

    env = dict(os.environ)
    for name in (DATA_DIR_ENV, HOME_ENV):
        if env.get(name):
            env[name] = str(Path(env[name]).expanduser().resolve())
    return env


def _this_python_specs() -> Any:
    """Kernel specs where ``python3`` is this interpreter's ipykernel, found without importing ipykernel here.

    jupyter_client imports ipykernel (and IPython) in the launching process to describe its native
    ``python3`` kernel: 0.3-0.6 s before the kernel process even starts. This is the spec ipykernel
    itself returns (``ipykernel.kernelspec.get_kernel_dict``), read from its package data instead.
    """
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            package = find_spec("ipykernel")
            if kernel_name != KERNEL_NAME or package is None or not package.submodule_search_locations:
                return super().get_kernel_spec(kernel_name)
            resources = Path(next(iter(package.submodule_search_locations))) / "resources"
            if not resources.is_dir():
                raise NoSuchKernel(kernel_name)
            # log_level ERROR: the kernel's start-up warning that TCP on 127.0.0.1 is unencrypted (messages are
            # HMAC-signed with the connection file's key) would print after `fedkit report` has returned.
            # IPC sockets would avoid it but start the report 0.3 s later.
            return KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--log-level=ERROR"],
                display_name="Python 3 (ipykernel)", language="python", metadata={"debugger": True},
                resource_dir=str(resources),
            )  # fmt: skip

    return ThisPython()


def _prompt_client() -> type:
    """papermill's kernel client, ready as soon as the kernel answers, without the 0.2 s IOPub drain.

    jupyter_client's ``wait_for_ready`` ends by reading IOPub until it has been quiet for 0.2 s, to
    drop stale messages; nbclient matches every output to its request's id, so that drain only delays
    the first cell (by 0.2 s, after the warm-up). Readiness itself is checked as jupyter_client does:
    a ``kernel_info`` reply on shell and a message on IOPub (the subscription is live).
    """
    from queue import Empty

    from jupyter_client.asynchronous.client import AsyncKernelClient
    from jupyter_core.utils import ensure_async

    class PromptClient(AsyncKernelClient):
        async def wait_for_ready(self, timeout: float | None = None) -> None:  # type: ignore[override]
            deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
            while time.monotonic() < deadline:
                self.kernel_info()
                try:
                    reply = await ensure_async(self.shell_channel.get_msg(timeout=1))
                except Empty:
                    if not await self._async_is_alive():
                        raise RuntimeError("Kernel died before replying to kernel_info") from None
                    continue
                if reply["msg_type"] != "kernel_info_reply":
                    continue
                try:
                    await ensure_async(self.iopub_channel.get_msg(timeout=0.2))
                except Empty:
                    continue
                self._handle_kernel_info_reply(reply)
                return
            raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")

    return PromptClient


class _Kernel:
    """A kernel started before papermill is imported, warming fedkit's imports; papermill then runs in it."""

    def __init__(self, kernel_name: str, cwd: Path, timeout: float) -> None:
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        specs = {"kernel_spec_manager": _this_python_specs()} if kernel_name == KERNEL_NAME else {}
        self.manager = AsyncKernelManager(kernel_name=kernel_name, client_factory=_prompt_client(), **specs)
        try:
            run_sync(self.manager.start_kernel)(cwd=str(cwd), env=kernel_env())
        except Exception as exc:
            if type(exc).__name__ == "NoSuchKernel":
                raise ReportError(
                    f"No Jupyter kernel named {kernel_name!r}: install ipykernel in this environment "
                    "(pip install 'fedkit[notebooks]')."
                ) from None
            raise
        self.warm = threading.Thread(target=self._warm_up, args=(timeout,), name="fedkit-kernel-warm-up", daemon=True)
        self.warm.start()

    def _warm_up(self, timeout: float) -> None:
        client = self.manager.blocking_client()
        client.start_channels(iopub=False, stdin=False, hb=False)
        try:
            # sent at once, without waiting for "ready" (which idles 0.2 s flushing IOPub): ZeroMQ holds the
            # request until the kernel listens, and the kernel runs it before anything papermill sends
            msg_id = client.execute(WARM_UP, silent=True, store_history=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                reply = client.get_shell_msg(timeout=max(deadline - time.monotonic(), 0.01))
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
        except Exception:  # noqa: S110 (a warm-up only: papermill reports any real problem of the kernel)
            pass
        finally:
            client.stop_channels()

    def shutdown(self) -> None:
        """Kill the kernel (it is this report's alone; nothing in it needs a graceful end)."""
        from jupyter_core.utils import run_sync

        self.warm.join(timeout=5)
        run_sync(self.manager.shutdown_kernel)(now=True)


def _execute(notebook: Path, output: Path, parameters: dict[str, Any], kernel: _Kernel, *, timeout: float) -> Any:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    # no waiting for the warm-up: papermill's requests queue behind it in the kernel (shell requests run in
    # order; each client only reads the replies and outputs of its own messages)
    try:
        return papermill.execute_notebook(
            str(notebook), str(output), parameters=parameters, kernel_name=kernel.manager.kernel_name,
            progress_bar=False, execution_timeout=timeout, cwd=str(notebook.parent), log_output=False,
            km=kernel.manager,
        )  # fmt: skip
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
