"""A FLARE job process started before its job (``python -m fedkit.remote.spare <job module>``).

Started by :mod:`fedkit.remote.prestart`'s launchers. It names itself ``fedkit-warming``, imports what the
job module will (NVIDIA FLARE, its transport drivers and serializers, fedkit's component), names itself
``fedkit-spare`` (ready), then waits for one line on stdin: the command and environment FLARE's own
launcher would have started (JSON). It takes that environment, working folder and arguments and runs
the job module as ``__main__``: from then on it is that job process, under its usual process name. An
empty stdin (the launcher retired it, or its site stopped) ends it without running anything.

Nothing here imports NVIDIA FLARE before the process has named itself, so a spare is never mistaken for a
job process by the name it shows (``Poc.wait_idle`` and the tests look for these names).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import runpy
import sys
import warnings
from typing import Any

from fedkit.remote.tuning import tune_job_process

WARMING_NAME = "fedkit-warming"
"""The process name (Linux ``comm``) of a spare still importing."""
SPARE_NAME = "fedkit-spare"
"""The process name of a spare whose imports are done, until it becomes a job process."""
WARM_PACKAGES: tuple[str, ...] = (
    "nvflare.fuel.f3.drivers",
    "nvflare.app_common.decomposers",
    "nvflare.fuel.utils.fobs.decomposers",
)
"""Packages a job process imports module by module at its start (transport drivers, serializers): imported ahead."""
_FEDKIT_CORE = (
    "fedkit.config",
    "fedkit.runner",
    "fedkit.engines.simulation",
    "fedkit.privacy.audit",
    "fedkit.privacy.identity",
    "fedkit.privacy.secagg",
    "fedkit.privacy.validation",
)
WARM_MODULES: dict[str, tuple[str, ...]] = {
    "nvflare.private.fed.app.client.worker_process": (
        "fedkit.remote.executor",
        *_FEDKIT_CORE,
        "fedkit.data.silos",
        "fedkit.data.preprocess",
        "fedkit.remote.sitestate",
    ),
    "nvflare.private.fed.app.server.runner_process": (
        "fedkit.remote.controller",
        *_FEDKIT_CORE,
        "fedkit.tracking.local",
    ),
}
"""Each job module FLARE runs, with the fedkit component its job loads and the modules that loads on its first task."""


def set_process_name(name: str) -> str | None:
    """Set this process's name as ``ps`` shows it (Linux ``/proc/self/comm``); the name before, or None elsewhere.

    Parameters
    ----------
    name
        The new name (cut to the kernel's 15 characters).
    """
    comm = "/proc/self/comm"
    try:
        with open(comm) as f:
            before = f.read().strip()
        with open(comm, "w") as f:
            f.write(name[:15])
    except OSError:
        return None
    return before


def warm(module: str) -> None:
    """Import ``module``, its fedkit component and the packages FLARE scans at a job's start.

    A module that fails to import is left for the job to report (FLARE scans the same folders and skips
    what does not load).

    Parameters
    ----------
    module
        The job module FLARE will run (a key of :data:`WARM_MODULES`, or any module).
    """
    names = [module, *WARM_MODULES.get(module, ())]
    for package in WARM_PACKAGES:
        with contextlib.suppress(Exception):
            root = importlib.import_module(package)
            names += [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    for name in names:
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def run_request(module: str, request: dict[str, Any]) -> None:
    """Become the job process of ``request``: its environment, working folder and arguments, then ``module`` as main.

    Parameters
    ----------
    module
        The job module (``request["argv"]`` is ``[python, "-m", module, *args]``).
    request
        ``argv``, ``env`` and ``cwd`` of the command FLARE's launcher would have started.
    """
    env = request["env"]
    os.environ.clear()
    os.environ.update(env)
    for entry in reversed([p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    os.chdir(request["cwd"])
    sys.argv = [module, *request["argv"][3:]]
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")  # module already imported: expected
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def main(argv: list[str] | None = None) -> None:
    """Warm up, wait for one job on stdin (one JSON line), run it; end quietly if stdin closes first.

    Parameters
    ----------
    argv
        ``[job module]`` (default: the command line's arguments).
    """
    module = (argv if argv is not None else sys.argv[1:])[0]
    name = set_process_name(WARMING_NAME)
    warm(module)
    tune_job_process(module)
    set_process_name(SPARE_NAME)
    line = sys.stdin.readline()
    if not line.strip():
        return
    if name is not None:
        set_process_name(name)
    run_request(module, json.loads(line))


if __name__ == "__main__":
    main()
