"""Startup kits and a federation on this machine: ``fedkit remote provision`` and ``fedkit remote poc``.

Provisioning (NVIDIA FLARE's ``nvflare provision``) turns a project file — the server, one site per
hospital, an admin user for the notebook — into startup kits: a root CA, a certificate and key per
participant, and connection settings with mutual TLS. A kit is the only secret a participant needs.

The proof-of-concept federation provisions a loopback project (server on 127.0.0.1, free ports) and
starts the server and one process per hospital, each in its own process group so that stopping it by
PID also stops the job processes FLARE forks; nothing listens on or connects to another address.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedkit.data.uci import HOSPITALS, file_name, read_files
from fedkit.errors import ConfigError, FedkitError, PocError

if TYPE_CHECKING:
    from fedkit.remote.silo import SiteOptions

LOOPBACK = "127.0.0.1"
ADMIN = "admin@fedkit.local"
SERVER = "server"
FEDKIT_SERVER_CLASSES: tuple[str, ...] = (
    "fedkit.remote.controller.FedkitController",
    "fedkit.remote.prestart.PrestartedServerLauncher",
)
FEDKIT_SITE_CLASSES: tuple[str, ...] = (
    "fedkit.remote.executor.FedkitExecutor",
    "fedkit.remote.prestart.PrestartedClientLauncher",
)
FLARE_LAUNCHERS: dict[str, str] = {
    "nvflare.app_common.job_launcher.server_process_launcher.ServerProcessJobLauncher": (
        "fedkit.remote.prestart.PrestartedServerLauncher"
    ),
    "nvflare.app_common.job_launcher.client_process_launcher.ClientProcessJobLauncher": (
        "fedkit.remote.prestart.PrestartedClientLauncher"
    ),
}
"""FLARE's job launcher -> fedkit's, which starts the next job process ahead (:mod:`~fedkit.remote.prestart`)."""
SITE_HEARTBEAT = 2
"""Seconds between a poc site's heartbeats (FLARE's default: 10): a site whose job process died is reported at once."""
BUILDERS: list[dict[str, Any]] = [
    {"path": "nvflare.lighter.impl.workspace.WorkspaceBuilder"},
    {"path": "nvflare.lighter.impl.static_file.StaticFileBuilder", "args": {"config_folder": "config"}},
    {"path": "nvflare.lighter.impl.cert.CertBuilder"},
    {"path": "nvflare.lighter.impl.signature.SignatureBuilder"},
]


def _nvflare() -> list[str]:
    try:
        import nvflare  # noqa: F401
    except ImportError as exc:
        raise ConfigError("The remote engine needs NVIDIA FLARE: pip install 'fedkit[remote]'.") from exc
    return [sys.executable, "-m", "nvflare.cli"]


def provision(project: str | Path, workspace: str | Path) -> Path:
    """Create the startup kits of ``project`` under ``workspace``; returns the folder holding one kit each.

    Parameters
    ----------
    project
        The FLARE project file.
    workspace
        The folder the kits are written under.

    Raises
    ------
    ConfigError
        When the project file does not exist.
    PocError
        When ``nvflare provision`` fails.
    """
    import yaml

    project = Path(project)
    if not project.is_file():
        raise ConfigError(f"Project file {project} does not exist; start from deploy/project.yml.")
    name = yaml.safe_load(project.read_text()).get("name")
    workspace = Path(workspace)
    done = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [*_nvflare(), "provision", "-p", str(project.resolve()), "-w", str(workspace.resolve())],
        capture_output=True,
        text=True,
        check=False,
    )
    prods = sorted((workspace / str(name)).glob("prod_*"), key=lambda p: int(p.name.split("_")[1]))
    if done.returncode != 0 or not prods:
        raise PocError(f"`nvflare provision -p {project}` failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    allow_fedkit(prods[-1])
    return prods[-1]


def allow_fedkit(kits: Path) -> None:
    """Add fedkit's controller (server) and executor (sites) to each kit's ``class_allow_list``, and its job launcher.

    FLARE builds only the component classes a site allows (``local/resources.json.default``); a site admin can
    read exactly what fedkit adds there. The kit's ``process_launcher`` becomes fedkit's
    (:mod:`fedkit.remote.prestart`: FLARE's launcher with the next job process started ahead); a site admin
    can put FLARE's back in that file.

    Parameters
    ----------
    kits
        The folder holding one kit each (:func:`provision`).
    """
    for resources in kits.glob("*/local/resources.json.default"):
        conf = json.loads(resources.read_text())
        if "class_allow_list" not in conf:
            continue
        server = (resources.parent.parent / "startup" / "fed_server.json").exists()
        allowed = FEDKIT_SERVER_CLASSES if server else FEDKIT_SITE_CLASSES
        conf["class_allow_list"] = [
            *conf["class_allow_list"],
            *(c for c in allowed if c not in conf["class_allow_list"]),
        ]
        resources.write_text(json.dumps(conf, indent=2))
    use_launchers(kits, prestart=True)


def use_launchers(kits: Path, *, prestart: bool) -> None:
    """Make each kit's job launcher fedkit's (``prestart``: the next job process started ahead) or FLARE's own.

    Parameters
    ----------
    kits
        The folder holding one kit each (:func:`provision`).
    prestart
        True for fedkit's launchers (:mod:`fedkit.remote.prestart`), False for FLARE's.
    """
    swap = FLARE_LAUNCHERS if prestart else {v: k for k, v in FLARE_LAUNCHERS.items()}
    for resources in kits.glob("*/local/resources.json.default"):
        conf = json.loads(resources.read_text())
        for component in conf.get("components", []):
            if component.get("path") in swap:
                component["path"] = swap[component["path"]]
        resources.write_text(json.dumps(conf, indent=2))


def loopback_project(hospitals: Sequence[str], port: int, name: str = "fedkit-poc") -> dict[str, Any]:
    """A project file for a federation on 127.0.0.1: the server, one site per hospital (named after it), the admin.

    Parameters
    ----------
    hospitals
        One site per hospital, named after it.
    port
        The port of the server (and admin) on 127.0.0.1.
    name
        The project's name.
    """
    return {
        "api_version": 3,
        "name": name,
        "description": "fedkit proof-of-concept federation on 127.0.0.1",
        "participants": [
            {
                "name": SERVER,
                "type": "server",
                "org": "fedkit",
                "fed_learn_port": port,
                "admin_port": port,
                "default_host": LOOPBACK,
                "host_names": [LOOPBACK],
            },
            *({"name": h, "type": "client", "org": h} for h in hospitals),
            {"name": ADMIN, "type": "admin", "org": "fedkit", "role": "project_admin"},
        ],
        "builders": BUILDERS,
    }


def kit_identity(kit: Path) -> tuple[str, str, bool]:
    """``(name, organization, is_server)`` of a startup kit, from its certificate.

    Parameters
    ----------
    kit
        A startup kit folder.
    """
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    startup = Path(kit) / "startup"
    server = (startup / "fed_server.json").is_file()
    if not server and not (startup / "fed_client.json").is_file():
        raise ConfigError(
            f"{kit} is not a FLARE server or site startup kit (no startup/fed_server.json or fed_client.json)."
        )
    cert = x509.load_pem_x509_certificate((startup / ("server.crt" if server else "client.crt")).read_bytes())
    name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    return str(name), str(org), server


def check_site_data(kit: Path, options: SiteOptions) -> None:
    """Read a site kit's own data file against the schema before the site joins; raise naming file, row and column.

    Every row is checked (missing values kept, as under ``impute``); a server kit needs no data.

    Parameters
    ----------
    kit
        A startup kit folder.
    options
        How the site reads its own data (file, schema, not-measured codes, delimiter).
    """
    name, _, server = kit_identity(kit)
    if not server:
        options.read(name, "impute")


def participant_command(kit: Path, settings: Sequence[str] = ()) -> list[str]:
    """The command that runs the FLARE server or site of a startup kit (name and org from its certificate).

    Parameters
    ----------
    kit
        A startup kit folder.
    settings
        More ``key=value`` settings for FLARE (``--set``), e.g. a site's ``heart_beat_interval=2``.
    """
    name, org, server = kit_identity(kit)
    if server:
        module, conf, extra = "nvflare.private.fed.app.server.server_train", "fed_server.json", [f"org={org}"]
    else:
        module, conf, extra = (
            "nvflare.private.fed.app.client.client_train",
            "fed_client.json",
            [f"uid={name}", f"org={org}"],
        )
    command = [sys.executable, "-u", "-m", module, "-m", str(Path(kit).resolve()), "-s", conf]
    return [*command, "--set", "secure_train=true", "config_folder=config", *extra, *settings]


def run_participant(kit: str | Path, workspace: str | Path, site: SiteOptions | None = None) -> int:
    """Copy a (read-only, e.g. mounted from a Secret) startup kit into a writable workspace, run it until it
    exits, and return its exit code.

    For containers: ``fedkit remote start --kit /kit --workspace /workspace --data FILE`` stays PID 1 and
    runs FLARE under :func:`supervise`, so that stopping the pod stops FLARE at once. A site first checks
    its own data file against the schema (:func:`check_site_data`) and refuses to start when it breaks it.

    Parameters
    ----------
    kit
        The startup kit (read-only, e.g. mounted from a Secret).
    workspace
        A writable folder the kit is copied into.
    site
        How the site reads its own data (default: the ``FEDKIT_SITE_*`` environment); reaches the site's job
        processes as ``FEDKIT_SITE_*`` environment variables.

    Returns
    -------
    int
        FLARE's exit code.
    """
    import shutil

    from fedkit.remote.silo import SiteOptions

    kit, workspace = Path(kit), Path(workspace)
    site = site or SiteOptions.from_env()
    check_site_data(kit, site)
    os.environ.update(site.to_env())
    for part in ("startup", "local"):
        if (kit / part).is_dir():
            shutil.copytree(kit / part, workspace / part, dirs_exist_ok=True)
    keep_server_state_in(workspace, workspace)
    command = participant_command(workspace)
    os.chdir(workspace)
    return supervise(command)


def supervise(command: Sequence[str]) -> int:
    """Run ``command`` in its own process group, pass SIGTERM and SIGINT on to that group, reap every child,
    and return the command's exit code (128 + N when signal N ended it).

    A container's PID 1 gets no default signal action: FLARE, which sets no SIGTERM handler, would ignore the
    pod's SIGTERM and be killed after the grace period. Orphaned job processes are re-parented to PID 1 and
    reaped here too.

    Parameters
    ----------
    command
        The program and its arguments (FLARE's participant command).
    """
    pending: list[int] = []  # a signal that arrives before the child exists is passed on once it does
    started: list[subprocess.Popen] = []

    def forward(signum: int, frame: Any) -> None:
        if not started:
            pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started[0].pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)  # before the child starts: no window in which SIGTERM would be lost
    child = subprocess.Popen(list(command), start_new_session=True)  # noqa: S603 - our own interpreter and arguments
    started.append(child)
    for signum in pending:
        forward(signum, None)
    while True:
        pid, status = os.waitpid(-1, 0)  # any child: FLARE, or an orphan handed to PID 1
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(status)
            child.returncode = code  # reaped here, not by Popen
            return code if code >= 0 else 128 - code


def keep_server_state_in(kit: Path, workspace: Path) -> None:
    """Point the server's job store and snapshots into ``workspace`` (FLARE's kits default to /tmp/nvflare, shared
    by every server on the machine and lost with a pod's /tmp).

    Parameters
    ----------
    kit
        The server's startup kit.
    workspace
        The folder the job store and snapshots go to.
    """
    default = Path(kit) / "local" / "resources.json.default"
    if not default.is_file() or not (Path(kit) / "startup" / "fed_server.json").is_file():
        return
    conf = json.loads(default.read_text())
    for component in conf.get("components", []):
        if component.get("id") == "job_manager" and "uri_root" in component.get("args", {}):
            component["args"]["uri_root"] = str(Path(workspace) / "jobs-storage")
    storage = conf.get("snapshot_persistor", {}).get("args", {}).get("storage", {}).get("args", {})
    if "root_dir" in storage:
        storage["root_dir"] = str(Path(workspace) / "snapshot-storage")
    (Path(kit) / "local" / "resources.json").write_text(json.dumps(conf, indent=2))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclass
class Poc:
    """A running local federation: its kits and the PIDs (= process groups) of the server and each site.

    Parameters
    ----------
    kits
        The folder holding one kit each.
    hospitals
        The hospitals, one site each.
    data
        Each site's own data file (a copy of its hospital's UCI file), by site name.
    processes
        The running processes by participant name.
    started
        When each process was last started (``time.time()``): a restarted site is ready once the server
        heard from it after that, not from the entry its killed predecessor left on the server.
    prestart
        Whether the kits start each next job process ahead (fedkit's job launchers) or leave it to FLARE.
    """

    kits: Path
    hospitals: tuple[str, ...]
    data: dict[str, str]
    """Each site's own data file (a copy in its kit folder: the other hospitals' files are not there)."""
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    prestart: bool = True
    """Whether the kits start each next job process ahead (fedkit's job launchers) or leave it to FLARE."""

    @property
    def admin_kit(self) -> Path:
        """The admin startup kit the notebook/CLI submits with."""
        return self.kits / ADMIN

    @property
    def pids(self) -> dict[str, int]:
        """PID of every process started here (FLARE's job processes are their descendants: see :meth:`tree`)."""
        return {name: p.pid for name, p in self.processes.items()}

    def log(self, name: str) -> Path:
        """Log file of participant ``name``.

        Parameters
        ----------
        name
            The participant's name (``server`` or a site).
        """
        return self.kits / name / "fedkit-process.log"

    def start(self, name: str) -> None:
        """Start the server or one site (again, after :meth:`kill`) from its kit.

        Parameters
        ----------
        name
            The participant's name (``server`` or a site).
        """
        from fedkit.remote.silo import SiteOptions

        kit = self.kits / name
        env = {k: v for k, v in os.environ.items() if k != "FEDKIT_DATA_DIR" and not k.startswith("FEDKIT_SITE_")}
        env["PYTHONUNBUFFERED"] = "1"
        if name in self.data:
            options = SiteOptions(self.data[name])
            check_site_data(kit, options)
            env.update(options.to_env())
        settings = [] if name == SERVER else [f"heart_beat_interval={SITE_HEARTBEAT}"]
        log = self.log(name).open("ab")
        self.started[name] = time.time()
        self.processes[name] = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            participant_command(kit, settings),
            cwd=kit,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def tree(self, name: str) -> list[Any]:
        """The process of ``name`` and every descendant (FLARE forks job processes, in their own sessions).

        Parameters
        ----------
        name
            The participant's name (``server`` or a site).
        """
        import psutil

        proc = self.processes.get(name)
        if proc is None:
            return []
        try:
            root = psutil.Process(proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def send_signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to ``name``'s process and all its descendants (SIGSTOP/SIGCONT mimic a network partition).

        Parameters
        ----------
        name
            The participant's name (``server`` or a site).
        sig
            The signal number.
        """
        import psutil

        for proc in self.tree(name):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 15.0) -> None:
        """Stop ``name``'s process and every descendant by PID; SIGKILL whatever is left after ``timeout`` seconds.

        Parameters
        ----------
        name
            The participant's name (``server`` or a site).
        sig
            The signal sent first.
        timeout
            Seconds to wait before SIGKILL.
        """
        import psutil

        tree = self.tree(name)
        proc = self.processes.pop(name, None)
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                p.send_signal(sig)
        _, alive = psutil.wait_procs(tree, timeout=timeout)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=timeout)
        if proc is not None:
            proc.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every process started, sites first, each by PID within ``timeout`` seconds.

        Parameters
        ----------
        timeout
            Seconds to wait for each process.
        """
        for name in [*(h for h in self.hospitals if h in self.processes), SERVER]:
            self.kill(name, signal.SIGTERM, timeout)

    def wait_ready(self, timeout: float = 90.0, sites: Sequence[str] | None = None) -> None:
        """Block until the admin can log in and ``sites`` (default: every hospital) are connected.

        A site counts as connected once the server heard from it after its process was started: FLARE keeps
        a killed site's entry in its client list (with its last contact) until the entry times out, and a
        job deployed while only that entry is there never reaches the restarted site.

        Parameters
        ----------
        timeout
            Seconds to wait at most.
        sites
            The sites to wait for (default: every hospital).

        Raises
        ------
        PocError
            When a process exits, or the federation is not ready within ``timeout``.
        """
        from fedkit.remote.submit import open_session

        want = set(self.hospitals if sites is None else sites)
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise PocError(f"{name} exited with code {proc.returncode}; see {self.log(name)}.")
            try:
                session = open_session(self.admin_kit, timeout=5.0)
                try:
                    while time.monotonic() < deadline:
                        connected = {
                            c.name
                            for c in session.get_connected_client_list()
                            if (c.last_connect_time or 0.0) >= self.started.get(c.name, 0.0)
                        }
                        if want <= connected:
                            return
                        last = f"connected: {sorted(connected)}"
                        time.sleep(0.5)
                finally:
                    session.close()
            except FedkitError as exc:
                last = exc
                time.sleep(0.5)
        raise PocError(
            f"The local federation was not ready after {timeout:.0f} s ({last}); see the logs in {self.kits}."
        )

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until no job runs and every participant has its next job process ready (:mod:`fedkit.remote.prestart`).

        Idle: each participant's only child is a spare whose imports are done (named
        :data:`~fedkit.remote.spare.SPARE_NAME`), or it has no child when the kits leave job processes to FLARE. A
        benchmark's runs start alike this way, as a user's would, seconds apart. Linux only (process names).

        Parameters
        ----------
        timeout
            Seconds to wait at most.

        Raises
        ------
        PocError
            When the federation is not idle within ``timeout``.
        """
        import psutil

        from fedkit.remote.spare import SPARE_NAME

        def busy(name: str, pid: int) -> bool:
            try:
                return [c.name() for c in psutil.Process(pid).children()] != ([SPARE_NAME] if self.prestart else [])
            except psutil.NoSuchProcess:
                return True

        deadline = time.monotonic() + timeout
        while waiting := [name for name, proc in self.processes.items() if busy(name, proc.pid)]:
            if time.monotonic() > deadline:
                raise PocError(f"The local federation was still busy after {timeout:.0f} s: {', '.join(waiting)}.")
            time.sleep(0.05)

    def __enter__(self) -> Poc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_poc(
    workspace: str | Path,
    silos: int = 4,
    *,
    data_dir: str | Path | None = None,
    port: int | None = None,
    wait: bool = True,
    log_level: str = "WARNING",
    prestart: bool = True,
) -> Poc:
    """Provision a loopback federation of the first ``silos`` hospitals under ``workspace`` and start it.

    Each site gets a copy of only its own hospital's file (``kits/<site>/data/``), checked against the
    schema before it starts.

    Parameters
    ----------
    workspace
        The folder the kits, logs and state go to.
    silos
        Number of hospitals, one site each, in [1, 4].
    data_dir
        The folder of the UCI files (default: ``$FEDKIT_DATA_DIR``, else ``~/.cache/fedkit/heart-disease``).
    port
        The server's port (default: a free one).
    wait
        Block until the admin can log in and every site is connected.
    log_level
        FLARE's log level (their kits' default, INFO, writes a dozen lines per task and site).
    prestart
        Start each next job process ahead (fedkit's job launchers, the default); False keeps FLARE's own
        (``benchmarks/remote_rounds.py`` compares the two).

    Raises
    ------
    ConfigError
        When ``silos`` is out of range.
    PocError
        When a process fails to start.
    """
    import yaml

    from fedkit.paths import data_dir as default_data_dir

    if not 1 <= silos <= len(HOSPITALS):
        raise ConfigError(
            f"The 'silos' parameter of start_poc must be in [1, {len(HOSPITALS)}] (one per hospital); got {silos}."
        )
    hospitals = HOSPITALS[:silos]
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    project = workspace / "project.yml"
    project.write_text(yaml.safe_dump(loopback_project(hospitals, port or free_port()), sort_keys=False))
    kits = provision(project, workspace / "kits")
    if not prestart:
        use_launchers(kits, prestart=False)
    _bind_loopback(kits / SERVER / "startup" / "fed_server.json")
    keep_server_state_in(kits / SERVER, (kits / SERVER).resolve())
    for default in kits.glob("*/local/log_config.json.default"):
        conf = json.loads(default.read_text())
        conf["loggers"]["root"]["level"] = log_level
        (default.parent / "log_config.json").write_text(json.dumps(conf, indent=2))
    files = read_files(Path(data_dir or default_data_dir()))  # verified (downloaded when missing)
    own = {}
    for h in hospitals:
        folder = kits / h / "data"
        folder.mkdir(exist_ok=True)
        own[h] = str((folder / file_name(h)).resolve())
        Path(own[h]).write_bytes(files[h])
    poc = Poc(kits, tuple(hospitals), own, prestart=prestart)
    try:
        poc.start(SERVER)
        for h in hospitals:
            poc.start(h)
        if wait:
            poc.wait_ready()
    except BaseException:
        poc.stop()
        raise
    return poc


def _bind_loopback(path: Path) -> None:
    """Make the server listen on 127.0.0.1 only (the provisioned target is its certificate name)."""
    conf = json.loads(path.read_text())
    for server in conf["servers"]:
        port = server["service"]["target"].rsplit(":", 1)[1]
        server["service"]["target"] = f"{LOOPBACK}:{port}"
        server["admin_server"] = LOOPBACK
    path.write_text(json.dumps(conf, indent=2))
