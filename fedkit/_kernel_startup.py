"""Start-up tricks of ``fedkit report``: private overrides of jupyter_client and jsonschema internals, kept apart.

A report waits for a kernel to start and import fedkit, and for papermill/nbconvert to load here;
these overrides cut seconds from that. Each relies on an upstream internal listed in
:data:`RELIES_ON` (``tests/test_kernel_startup.py`` fails, naming it, when one disappears). Checked
against the pins of ``requirements/constraints.txt`` in :data:`CHECKED_AGAINST` (jupyter-client
8.10.0, nbclient 0.11.0, papermill 2.7.0, ipykernel 7.4.0; the test fails when a pin moves) and
against jsonschema 4.26.0 / rfc3987-syntax 1.1.0 as they install with them.

- :func:`this_python_specs` overrides ``KernelSpecManager.get_kernel_spec`` to describe the
  ``python3`` kernel without importing ipykernel here (0.3-0.6 s): it reproduces
  ``ipykernel.kernelspec.get_kernel_dict`` and reads ipykernel's ``resources/`` package data.
- :func:`prompt_client` overrides ``AsyncKernelClient.wait_for_ready`` (plugged in through the
  manager's ``client_factory``) to skip its 0.2 s IOPub drain; it calls the client's private
  ``_async_is_alive`` and ``_handle_kernel_info_reply`` as the original does.
- :func:`defer_iri_grammar` puts a stand-in for ``rfc3987_syntax`` in ``sys.modules`` so that
  jsonschema's ``from rfc3987_syntax import is_valid_syntax`` no longer compiles a Lark grammar
  at import (2 s); the real module loads on the first ``iri`` check.
- :class:`Kernel` starts the kernel before papermill is imported and sends :data:`WARM_UP` at
  once; papermill gets it through ``execute_notebook(km=...)``, which nbclient uses as is (it
  starts a kernel only when its ``km`` has none, and leaves a ``km`` it was given running).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import types
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from fedkit.errors import ReportError

KERNEL_NAME = "python3"
CHECKED_AGAINST: dict[str, str] = {
    "jupyter-client": "8.10.0",
    "nbclient": "0.11.0",
    "papermill": "2.7.0",
    "ipykernel": "7.4.0",
}
"""The pinned versions the overrides were last checked against (requirements/constraints.txt)."""


@dataclass(frozen=True)
class Reliance:
    """One upstream internal an override here relies on, and how it is used.

    ``target`` is ``module:attribute.path``, or ``module:callable.path(parameter)`` for a parameter it takes.
    """

    override: str
    target: str
    use: str


RELIES_ON: tuple[Reliance, ...] = (
    Reliance("this_python_specs", "jupyter_client.kernelspec:KernelSpecManager.get_kernel_spec", "overridden"),
    Reliance("this_python_specs", "ipykernel.kernelspec:get_kernel_dict", "the kernel spec it reproduces"),
    Reliance("this_python_specs", "jupyter_client.manager:AsyncKernelManager.kernel_spec_manager", "plugged in"),
    Reliance("prompt_client", "jupyter_client.asynchronous.client:AsyncKernelClient.wait_for_ready", "overridden"),
    Reliance("prompt_client", "jupyter_client.asynchronous.client:AsyncKernelClient._async_is_alive", "called"),
    Reliance(
        "prompt_client", "jupyter_client.asynchronous.client:AsyncKernelClient._handle_kernel_info_reply", "called"
    ),
    Reliance("prompt_client", "jupyter_client.manager:AsyncKernelManager.client_factory", "plugged in"),
    Reliance("defer_iri_grammar", "rfc3987_syntax:is_valid_syntax", "the one name jsonschema imports"),
    Reliance("Kernel", "papermill.clientwrap:PapermillNotebookClient.__init__(km)", "execute_notebook(km=) lands here"),
    Reliance("Kernel", "nbclient.client:NotebookClient.__init__(km)", "a given manager is used, not owned"),
    Reliance("Kernel", "jupyter_client.manager:AsyncKernelManager.has_kernel", "nbclient starts none when it is set"),
)
"""Every upstream internal the overrides rely on (checked by tests/test_kernel_startup.py)."""


WARM_UP = """
def _fedkit_warm_up():
    import importlib
    for name in ("matplotlib_inline.backend_inline", "matplotlib.figure", "matplotlib.backends.backend_agg",
                 "pandas", "fedkit.api", "fedkit.runner", "fedkit.engines.simulation", "fedkit.engines.vectorized",
                 "fedkit.plots", "fedkit.explore", "fedkit.presets"):
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
    stand_in = types.ModuleType(name, "Stand-in: imports the real rfc3987_syntax on its first use (fedkit).")

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


def this_python_specs() -> Any:
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
                display_name="Python 3 (ipykernel)",
                language="python",
                metadata={"debugger": True},
                resource_dir=str(resources),
            )

    return ThisPython()


def prompt_client() -> type:
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


class Kernel:
    """A kernel started before papermill is imported, warming fedkit's imports; papermill then runs in it."""

    def __init__(self, kernel_name: str, cwd: Path, timeout: float) -> None:
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        specs = {"kernel_spec_manager": this_python_specs()} if kernel_name == KERNEL_NAME else {}
        self.manager = AsyncKernelManager(kernel_name=kernel_name, client_factory=prompt_client(), **specs)
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
