"""The federation run from the project's own Kubernetes overlays, in podman on this machine (``make deploy-test``).

``deploy-test.sh`` builds the image and calls ``run`` (then ``down`` on exit, also after a failure):

1. kits — ``fedkit remote provision`` of ``deploy/project.yml`` with the server named ``localhost``, and of a
   second project (another CA) for an impostor site;
2. render — each overlay through ``kubectl kustomize`` with only what an operator substitutes: the image
   reference, the kit Secrets made from the kit folders (kustomize's ``secretGenerator``, the declarative
   ``kubectl create secret generic --from-file``), and the hospital's data volume, filled beforehand with
   that hospital's own file and nothing else;
3. server — ``podman kube play``, then its probes run as the kubelet runs them, its security context checked
   from inside the container, and the admin logs in;
4. impostor — a cleveland site whose kit comes from another CA: the server refuses it;
5. corrupted data — cleveland's own site with a copy of its file that breaks the schema: it exits with code 2
   and a message naming the file, the line and the column, and never joins;
6. sites — the four hospitals, probes and security context, each seeing only its own file, all four connected;
7. report — ``fedkit report notebooks/04_headless_report.ipynb -p engine remote -p admin_kit ...`` on the host
   (secure aggregation on: the remote default);
8. a site stops on SIGTERM within seconds, as a pod must;
9. compare — the recorded run against the simulation of the same config in the clear, per silo and pooled, to
   1e-6 (pooled AUC, from summed histograms, to 1e-3).

What podman 4.3 (Debian bookworm) cannot run as a cluster would is adapted in :func:`podman_shims`, each
with its reason; docs/deploy-test.md lists them and what only a real cluster shows.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import io
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
HOSPITALS = ("cleveland", "hungarian", "switzerland", "va")
SERVER_NAME = "localhost"  # the server's certificate name; resolves to 127.0.0.1 on every machine
SERVER_PORTS = (8002, 8003)  # fed_learn_port and admin_port of deploy/project.yml
OVERLAY_IMAGE = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/fedkit-remote"  # what the overlays point at
NOTEBOOK = ROOT / "notebooks" / "04_headless_report.ipynb"
TOLERANCE = 1e-6
AUC_TOLERANCE = 1e-3  # pooled AUC: from summed histograms under secure aggregation (fedkit.evalstats)
READY_TIMEOUT = 180.0  # seconds for a pod's probes to pass or the sites to connect


class DeployTestError(RuntimeError):
    """A phase of the deploy test failed; the message says which and where to look."""


# --- podman -------------------------------------------------------------------------------------------------------


def podman_run(*args: str, stdin: str | bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``podman ARGS`` in the test's own storage (bytes in and out when ``stdin`` is bytes, else text)."""
    for var in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF"):
        if var not in os.environ:
            raise DeployTestError(
                f"{var} is not set: run this through deploy/podman/deploy-test.sh (make deploy-test)."
            )
    return subprocess.run(  # noqa: S603 - podman with our own arguments
        ["podman", *args], input=stdin, capture_output=True, timeout=timeout, check=False,  # noqa: S607
        text=not isinstance(stdin, bytes),
    )  # fmt: skip


def podman(*args: str, stdin: str | bytes | None = None, check: bool = True) -> str:
    """Run ``podman ARGS`` and return its stdout; a failure raises with podman's message unless ``check`` is off."""
    done = podman_run(*args, stdin=stdin)
    out = done.stdout if isinstance(done.stdout, str) else done.stdout.decode()
    if check and done.returncode != 0:
        err = done.stderr if isinstance(done.stderr, str) else done.stderr.decode()
        raise DeployTestError(f"`podman {' '.join(args[:3])} ...` failed ({done.returncode}): {err.strip()[-2000:]}")
    return out


class Ledger:
    """Every podman object the test creates, written down before it is created, so ``down`` finds it after a crash."""

    def __init__(self, work: Path) -> None:
        self.path = work / "created.json"

    def load(self) -> dict[str, list[str]]:
        """Kube files played, volumes and secrets created (by this run or an interrupted one)."""
        if not self.path.exists():
            return {"kube": [], "volume": [], "secret": []}
        return json.loads(self.path.read_text())

    def add(self, kind: str, name: str) -> None:
        """Note ``name`` of ``kind`` ("kube", "volume" or "secret")."""
        state = self.load()
        if name not in state[kind]:
            state[kind].append(name)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(state, indent=2))


# --- kits and rendering -------------------------------------------------------------------------------------------


def provision(work: Path) -> dict[str, Path]:
    """Kits of deploy/project.yml with the server named ``localhost`` (the operator's DNS name), and an impostor's.

    Returns the kit folder of each participant: ``server``, the hospitals, ``admin``, and ``impostor`` — a
    site named cleveland from a second project with its own root CA, the same server name and ports.
    """
    from fedkit.remote.kits import provision as nvflare_provision

    text = (DEPLOY / "project.yml").read_text()
    if "fedkit-server.example.org" not in text:
        raise DeployTestError(
            "deploy/project.yml no longer names the server fedkit-server.example.org; update provision"
        )
    project = yaml.safe_load(text.replace("fedkit-server.example.org", SERVER_NAME))
    impostor = {**project, "name": "impostor", "participants": [
        p for p in project["participants"] if p["type"] == "server" or p["name"] == "cleveland"
    ]}  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    kits: dict[str, Path] = {}
    for name, spec in (("fedkit", project), ("impostor", impostor)):
        (work / f"{name}.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
        shutil.rmtree(work / f"kits-{name}", ignore_errors=True)
        kits[name] = nvflare_provision(work / f"{name}.yml", work / f"kits-{name}")
    # The impostor also trusts the federation's root CA (a certificate, not a secret), listed after its own (FLARE
    # checks its own certificate against the first): it accepts the real server, so only the server's check of
    # the site's certificate can stop it. With its own CA alone it would refuse the server itself.
    roots = [kits[name] / SERVER_NAME / "startup" / "rootCA.pem" for name in ("impostor", "fedkit")]
    (kits["impostor"] / "cleveland" / "startup" / "rootCA.pem").write_text("".join(r.read_text() for r in roots))
    admin = next(p["name"] for p in project["participants"] if p["type"] == "admin")
    return {
        "server": kits["fedkit"] / SERVER_NAME,
        **{h: kits["fedkit"] / h for h in HOSPITALS},
        "admin": kits["fedkit"] / admin,
        "impostor": kits["impostor"] / "cleveland",
    }


def render(overlay: str, kit: Path, image: str, out: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of ``deploy/k8s/overlays/<overlay>`` with the operator's substitutions only.

    A kustomization in ``out`` takes the overlay as its resource, points ``images:`` at ``image``, and
    generates the two kit Secrets from the kit's ``startup/`` and ``local/`` files (the keys
    ``kubectl create secret generic --from-file`` gives; kustomize's content-hash suffix keeps the five
    organizations' Secrets apart on one podman host, and rewrites the Deployment's references to them).
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    generators = []
    for part in ("startup", "local"):
        shutil.copytree(kit / part, out / part)
        files = sorted(f"{part}/{f.name}" for f in (out / part).iterdir() if f.is_file())
        generators.append({"name": f"fedkit-kit-{part}", "files": files})
    repo, tag = image.rsplit(":", 1)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "fedkit",
        "resources": [os.path.relpath(DEPLOY / "k8s" / "overlays" / overlay, out)],
        "images": [{"name": OVERLAY_IMAGE, "newName": repo, "newTag": tag}],
        "secretGenerator": generators,
    }
    (out / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    kustomize = ["kubectl", "kustomize", str(out)]
    done = subprocess.run(kustomize, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603
    if done.returncode != 0:
        raise DeployTestError(f"kubectl kustomize of overlay {overlay} failed: {done.stderr.strip()}")
    (out / "rendered.yaml").write_text(done.stdout)
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def site_data(hospital: str, data_dir: Path) -> list[Path]:
    """The files that go into ``hospital``'s data volume: its own ``processed.<hospital>.data`` and nothing else
    (the site overlay's ``--data /data/processed.<hospital>.data`` names it)."""
    return [data_dir / f"processed.{hospital}.data"]


# Where :func:`corrupt_copy` breaks the schema: a line of the file and a column of the UCI schema (the file has no
# header, so line 3 is the third row) and a value that is not one of that column's levels (cp is 1-4).
CORRUPT_AT = (3, "cp", "5")


def corrupt_copy(source: Path, folder: Path, at: tuple[int, str, str] = CORRUPT_AT) -> Path:
    """A copy of a UCI hospital file, under its own name in ``folder``, with one value that breaks the schema.

    ``at`` is (1-based line, UCI column, value written there); the rest of the file is unchanged.
    """
    from fedkit.data.uci import COLUMNS

    line, column, value = at
    rows = source.read_text().splitlines(keepends=True)
    fields = rows[line - 1].rstrip("\n").split(",")
    fields[COLUMNS.index(column)] = value
    rows[line - 1] = ",".join(fields) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / source.name).write_text("".join(rows))
    return folder / source.name


def volume_tar(files: list[Path]) -> bytes:
    """A tarball of ``files`` (read-only for everyone, owned by root) for ``podman volume import``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for f in files:
            info = tar.gettarinfo(str(f), arcname=f.name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o444
            with f.open("rb") as fh:
                tar.addfile(info, fh)
    return buffer.getvalue()


def podman_shims(docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split rendered documents into (Secrets, what ``podman kube play`` gets), adapted to podman 4.3 where it
    cannot run a Kubernetes feature as a cluster does. Never touches the pod's command, env, volumes' mount
    points, security context or probes: those run as written.

    - ``imagePullPolicy: Always`` → ``IfNotPresent``: there is no registry here, the image is local;
    - containers' ``ports`` dropped: podman 4.3 publishes every containerPort on the host, which host
      networking refuses (with ``--network host`` the pod's ports are the host's anyway);
    - Secret volumes get ``optional: false`` (Kubernetes' default): podman 4.3 dereferences the field
      unset and crashes; the Secrets themselves go through ``podman secret create`` (:func:`podman_secret`);
    - emptyDir volumes are renamed ``<deployment>-<volume>``: podman makes an emptyDir a volume named after
      the pod's volume, so every pod with a ``workspace`` emptyDir would share one (a pod's own in Kubernetes);
    - Kubernetes-only kinds (Service, NetworkPolicy, ServiceAccount) are left out: podman ignores them.
    """
    secrets, play = [], []
    for doc in copy.deepcopy(docs):
        if doc["kind"] == "Secret":
            secrets.append(doc)
        elif doc["kind"] in ("Deployment", "PersistentVolumeClaim"):
            play.append(doc)
    for doc in play:
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        containers = pod.get("initContainers", []) + pod["containers"]
        renamed = {v["name"]: f"{doc['metadata']['name']}-{v['name']}" for v in pod["volumes"] if "emptyDir" in v}
        for container in containers:
            container["imagePullPolicy"] = "IfNotPresent"
            container.pop("ports", None)
            for mount in container.get("volumeMounts", []):
                mount["name"] = renamed.get(mount["name"], mount["name"])
        for volume in pod["volumes"]:
            volume["name"] = renamed.get(volume["name"], volume["name"])
            if "secret" in volume:
                volume["secret"]["optional"] = False
    return secrets, play


def podman_secret(secret: dict[str, Any]) -> str:
    """The document ``podman secret create`` stores for a kube Secret volume in podman 4.3.

    podman 4.3's kube play writes each ``data`` value into the volume as it is, without base64-decoding it
    (fixed in 4.4), so the values are stored decoded; a kit holds only text files (PEM, JSON, shell).
    """
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret["metadata"]["name"]},
                           "data": data})  # fmt: skip


# --- pods ---------------------------------------------------------------------------------------------------------


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The one Deployment of a rendered overlay."""
    (found,) = [d for d in docs if d["kind"] == "Deployment"]
    return found


def container_name(deploy: dict[str, Any], container: str) -> str:
    """The name podman kube play gives a Deployment's container (its one replica is pod ``<name>-pod-0``)."""
    return f"{deploy['metadata']['name']}-pod-0-{container}"


class Played(NamedTuple):
    """What :func:`play` started or created for one overlay."""

    kube: Path
    secrets: list[str]
    volumes: list[str]


def play(name: str, docs: list[dict[str, Any]], work: Path, ledger: Ledger, data: list[Path] | None = None) -> Played:
    """Create the Secrets (and the filled data volume) of a rendered overlay, then ``podman kube play`` it.

    Every name goes into the ``ledger`` before the object exists, so that ``down`` removes it whatever happens.
    """
    secrets, manifests = podman_shims(docs)
    created = Played(work / "play" / f"{name}.yaml", [], [])

    def note(kind: str, name: str) -> None:
        ledger.add(kind, name)
        (created.secrets if kind == "secret" else created.volumes).append(name)

    for secret in secrets:
        secret_name = secret["metadata"]["name"]
        if podman_run("secret", "inspect", secret_name).returncode == 0:
            continue  # kustomize names a Secret after its content: the hospitals' identical local/ folders share one
        note("secret", secret_name)
        note("volume", secret_name)  # podman 4.3 copies a Secret volume into a volume of the Secret's name
        podman("secret", "create", secret_name, "-", stdin=podman_secret(secret))
    for claim in [d for d in manifests if d["kind"] == "PersistentVolumeClaim"]:
        note("volume", claim["metadata"]["name"])
        if data is not None and claim["metadata"]["name"].startswith("fedkit-site-data"):
            # The hospital fills its data volume before the site starts (README "Deploy on EKS", step 6).
            podman("volume", "create", claim["metadata"]["name"])
            podman("volume", "import", claim["metadata"]["name"], "-", stdin=volume_tar(data))
            manifests.remove(claim)  # already there: kube play would try to create it again
    for volume in deployment(manifests)["spec"]["template"]["spec"]["volumes"]:
        if "emptyDir" in volume:
            note("volume", volume["name"])
    created.kube.parent.mkdir(parents=True, exist_ok=True)
    created.kube.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    ledger.add("kube", str(created.kube))
    podman("kube", "play", "--network", "host", str(created.kube))
    return created


def unplay(played: Played) -> None:
    """Stop and remove one played overlay: its pod, then its volumes and Secrets."""
    podman("kube", "down", str(played.kube))
    for volume in played.volumes:
        podman("volume", "rm", "--force", volume)
    for secret in played.secrets:
        podman("secret", "rm", secret)


def container_state(name: str) -> dict[str, Any]:
    """``podman inspect``'s State of a container."""
    return json.loads(podman("inspect", "--format", "{{json .State}}", name))


def run_probe(probe: dict[str, Any], ports: dict[str, int], container: str) -> tuple[bool, str]:
    """One probe as the kubelet runs it: exec → the command in the container; tcpSocket → a connection to the
    pod's port (the host's, with host networking). Returns (passed, what it printed)."""
    if "exec" in probe:
        done = subprocess.run(  # noqa: S603
            ["podman", "exec", container, *probe["exec"]["command"]],  # noqa: S607
            capture_output=True, text=True, timeout=probe.get("timeoutSeconds", 1) + 30, check=False,
        )  # fmt: skip
        return done.returncode == 0, (done.stdout + done.stderr).strip()[-500:]
    if "tcpSocket" in probe:
        port = probe["tcpSocket"]["port"]
        port = ports[port] if isinstance(port, str) else int(port)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=probe.get("timeoutSeconds", 1)).close()
        except OSError as exc:
            return False, f"127.0.0.1:{port}: {exc}"
        return True, ""
    raise DeployTestError(f"probe {probe} is neither exec nor tcpSocket; teach run_probe its kind")


def wait_probes(deploy: dict[str, Any], timeout: float = READY_TIMEOUT) -> dict[str, float]:
    """Run every container's readiness and liveness probes until each passes; seconds until each passed.

    Fails at once when a container exits, and after ``timeout`` with the last probe output.
    """
    start = time.monotonic()
    passed: dict[str, float] = {}
    last = ""
    for spec in deploy["spec"]["template"]["spec"]["containers"]:
        name = container_name(deploy, spec["name"])
        ports = {p["name"]: p["containerPort"] for p in spec.get("ports", []) if "name" in p}
        for kind in ("readinessProbe", "livenessProbe"):
            while f"{name} {kind}" not in passed:
                state = container_state(name)
                if not state["Running"]:
                    logs = podman("logs", "--tail", "40", name, check=False)
                    raise DeployTestError(
                        f"{name} exited with code {state['ExitCode']} before its {kind} passed:\n{logs}"
                    )
                ok, last = run_probe(spec[kind], ports, name)
                if ok:
                    passed[f"{name} {kind}"] = time.monotonic() - start
                elif time.monotonic() - start > timeout:
                    raise DeployTestError(f"{name}: {kind} did not pass within {timeout:.0f} s; last: {last}")
                else:
                    time.sleep(1)
    return passed


# Run in a container: what its PID 1 runs as, and whether the image's own files can be written.
SECURITY_PROBE = """
import json, os
status = dict(line.split(":", 1) for line in open("/proc/1/status") if ":" in line)
def write(folder):
    try:
        open(os.path.join(folder, "fedkit-probe"), "w").close()
    except OSError as exc:
        return exc.strerror
    os.remove(os.path.join(folder, "fedkit-probe"))
    return "written"
seen = {k: status[k].split() for k in ("Uid", "Gid", "CapEff", "NoNewPrivs", "Seccomp")}
print(json.dumps(seen | {"root_fs": sorted({write(d) for d in ("/opt/fedkit", "/var/tmp", "/run", "/")})}))
"""


def check_security(deploy: dict[str, Any]) -> None:
    """Each container runs as its securityContext says: uid/gid 10001, no capabilities, no privilege escalation
    (no_new_privs), a seccomp filter (RuntimeDefault), and a read-only root filesystem (podman's read-only mode
    would add writable tmpfs on /tmp, /var/tmp and /run: only /tmp is writable, the pod's own emptyDir)."""
    pod = deploy["spec"]["template"]["spec"]
    for spec in pod["containers"]:
        name = container_name(deploy, spec["name"])
        seen = json.loads(podman("exec", name, "python", "-c", SECURITY_PROBE))
        context = {**pod["securityContext"], **spec["securityContext"]}
        want = {
            "Uid": [str(context["runAsUser"])] * 4, "Gid": [str(context["runAsGroup"])] * 4,
            "CapEff": ["0000000000000000"], "NoNewPrivs": ["1"], "Seccomp": ["2"], "root_fs": ["Read-only file system"],
        }  # fmt: skip
        wrong = {k: (seen[k], v) for k, v in want.items() if seen[k] != v}
        if wrong:
            raise DeployTestError(f"{name} does not run as its securityContext says (seen, wanted): {wrong}")


def check_own_data_only(deploy: dict[str, Any], hospital: str) -> None:
    """Inside the running site, /data holds the hospital's own file and nothing else, and that is the file its
    command line names (``--data``): no other hospital's rows are within the pod's reach."""
    (spec,) = deploy["spec"]["template"]["spec"]["containers"]
    own = f"processed.{hospital}.data"
    seen = json.loads(podman("exec", container_name(deploy, spec["name"]), "python", "-c",
                             "import json, os; print(json.dumps(sorted(os.listdir('/data'))))"))  # fmt: skip
    args = spec.get("args", [])
    named = args[args.index("--data") + 1] if "--data" in args else None
    if seen != [own] or named != f"/data/{own}":
        raise DeployTestError(f"{hospital}'s site sees {seen} in /data and is started with --data {named}; "
                              f"expected only {own}, named by --data")  # fmt: skip


def connected_sites(admin_kit: Path) -> set[str] | None:
    """Sites the server reports connected, as its admin sees them (None while the admin cannot log in)."""
    from fedkit.errors import FedkitError
    from fedkit.remote.submit import open_session

    with contextlib.redirect_stdout(io.StringIO()):  # FLARE prints "Connecting to FLARE ..." on every login
        try:
            session = open_session(admin_kit, timeout=5.0)
        except FedkitError:
            return None
    try:
        return {c.name for c in session.get_connected_client_list()}
    finally:
        session.close()


def wait_for(what: str, check: Callable[[], Any], timeout: float = READY_TIMEOUT) -> Any:
    """Poll ``check`` every second until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise DeployTestError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- the run ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def phase(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Time a phase and say when it starts and ends."""
    print(f"deploy-test: {name} ...", flush=True)
    start = time.monotonic()
    yield
    timings[name] = time.monotonic() - start
    print(f"deploy-test: {name}: {timings[name]:.1f} s", flush=True)


def check_ports_free() -> None:
    """The server's ports are free on 127.0.0.1 (another federation or a leftover would take the connections)."""
    for port in SERVER_PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise DeployTestError(
                    f"Port {port} on 127.0.0.1 is in use; the server pod needs it (deploy/project.yml). "
                    "Stop what listens there (a leftover: `make deploy-test-down`)."
                )


def tls_handshake(kit: Path, root_ca: Path, port: int = SERVER_PORTS[0]) -> str:
    """A TLS 1.2 handshake with the server as the site of ``kit`` (trusting ``root_ca``): "ok" or the error.

    TLS 1.2, because there the server checks the client's certificate inside the handshake (under TLS 1.3 the
    handshake completes first and the server drops the connection afterwards).
    """
    context = ssl.create_default_context(cafile=str(root_ca))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(kit / "startup" / "client.crt", kit / "startup" / "client.key")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=SERVER_NAME):
                return "ok"
        except (ssl.SSLError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"


def impostor_refused(impostor: str, kits: dict[str, Path], timeout: float = 60.0) -> str:
    """The server container refuses a site whose certificate another CA signed; returns how.

    The impostor pod keeps trying and its log shows the server dropping each connection; the admin sees no
    site connected; and a handshake with the impostor's certificate fails where cleveland's own succeeds.
    """
    wait_for(
        "the impostor's log to show the server dropping its connection",
        lambda: "ServerDisconnectedError" in podman("logs", impostor, check=False),
        timeout,
    )
    if not container_state(impostor)["Running"]:
        raise DeployTestError(f"the impostor exited instead of retrying: {podman('logs', '--tail', '20', impostor)}")
    connected = connected_sites(kits["admin"])
    if connected != set():
        raise DeployTestError(f"with only the impostor running, the admin sees connected sites {connected}")
    root_ca = kits["server"] / "startup" / "rootCA.pem"
    own, foreign = tls_handshake(kits["cleveland"], root_ca), tls_handshake(kits["impostor"], root_ca)
    if own != "ok" or foreign == "ok":
        raise DeployTestError(f"TLS handshake with cleveland's certificate: {own}; with the impostor's: {foreign}")
    return foreign


def refused_for_its_data(container: str, path: str, at: tuple[int, str, str], timeout: float = 60.0) -> str:
    """A site container whose data file breaks the schema exits before it joins: code 2 (fedkit's code for a
    refused input), and its log names the file, the line and the column. Returns that log line.

    The Deployment's pod restarts it (podman at once; the kubelet with a back-off: CrashLoopBackOff), so a poll
    of its state mostly finds it running again: its exit codes are read from podman's ``died`` events instead.
    """
    line, column, _ = at
    expected = f"fedkit: error: {path}, line {line}, column '{column}': "
    ident = podman("inspect", "--format", "{{.Id}}", container).strip()  # kept across restarts; names are reused

    def exit_codes() -> list[int]:
        died = podman("events", "--stream=false", "--filter", f"container={ident}", "--filter", "event=died",
                      "--format", "{{.ContainerExitCode}}")  # fmt: skip
        return [int(code) for code in died.split()]

    codes = wait_for(f"{container} to exit on its corrupted data file", exit_codes, timeout)
    logs = podman_run("logs", container)  # podman prints the container's stderr on its own stderr
    said = [row for row in (logs.stdout + logs.stderr).splitlines() if row.startswith(expected)]
    if set(codes) != {2} or not said:
        raise DeployTestError(
            f"{container} exited with codes {codes} (expected 2) and should have said {expected!r}; its log:\n"
            f"{(logs.stdout + logs.stderr)[-3000:]}"
        )
    return said[0]


def stop_promptly(container: str, grace: int = 30) -> float:
    """Stop ``container`` as the kubelet stops a pod (SIGTERM, SIGKILL after ``grace`` s); it must end on SIGTERM,
    within seconds and with code 143 (128 + SIGTERM). Returns the seconds it took."""
    start = time.monotonic()
    podman("stop", "--time", str(grace), container)
    took, code = time.monotonic() - start, container_state(container)["ExitCode"]
    if took > grace / 3 or code != 128 + signal.SIGTERM:
        raise DeployTestError(f"{container} took {took:.1f} s to stop (exit code {code}): SIGTERM did not end it")
    return took


def compare_with_simulation(home: Path, data_dir: Path, rounds: int, seed: int) -> dict[str, float]:
    """The run the report recorded in ``home`` used the remote default, secure aggregation (the server saw no
    site's update: every update norm it recorded is null), each site read its hospital's own file (name and
    sha256 of the host's copy), and it equals the simulation of its config in the clear: per silo loss, accuracy
    and AUC and pooled loss and accuracy to 1e-6, pooled AUC to 1e-3 (the server gets it from the summed score
    histograms, :mod:`fedkit.evalstats`).

    Returns the largest difference of the metrics held to 1e-6 (``exact``) and of the pooled AUC (``pooled_auc``).
    """
    import hashlib
    import math

    import fedkit
    from fedkit.tracking.local import LocalStore

    store = LocalStore(home / "runs.sqlite")
    runs = store.list_runs()
    if [r["status"] for r in runs] != ["finished"]:
        raise DeployTestError(
            f"expected one finished run in {home}, found {[(r['run_id'], r['status']) for r in runs]}"
        )
    remote = store.get(runs[0]["run_id"])
    asked = ("remote", rounds, seed, True)
    if tuple(remote["config"].get(k) for k in ("engine", "rounds", "seed", "secure_aggregation")) != asked:
        raise DeployTestError(
            f"the recorded run is not the remote run asked for (secure aggregation by default): {remote['config']}"
        )
    norms = [r["value"] for r in store.history(remote["run_id"]) if (r["split"], r["metric"]) == ("update", "norm")]
    if len(norms) != rounds * len(HOSPITALS) or not all(math.isnan(v) for v in norms):
        raise DeployTestError(f"under secure aggregation the server should see no update norm; it recorded {norms}")
    own = {h: hashlib.sha256((data_dir / f"processed.{h}.data").read_bytes()).hexdigest() for h in HOSPITALS}
    if remote["data"]["sha256"] != own:
        raise DeployTestError(f"the sites read {remote['data']}, not the hospitals' own files {own}")
    config = {k: v for k, v in remote["config"].items() if k not in ("engine", "secure_aggregation")}
    config["secure_aggregation"] = False
    simulation = fedkit.run(fedkit.RunConfig.from_dict(config), trackers=[], progress=False).summary()["final"]
    final = remote["summary"]["final"]
    if list(final["silos"]) != list(HOSPITALS):
        raise DeployTestError(f"the remote run scored silos {list(final['silos'])}, not {list(HOSPITALS)}")
    worst = {"exact": 0.0, "pooled_auc": 0.0}
    blocks = [(s, final["silos"][s], simulation["silos"][s]) for s in HOSPITALS] + [
        ("pooled", final["pooled"], simulation["pooled"])
    ]
    for name, a, b in blocks:
        for metric in ("loss", "accuracy", "auc"):
            if a[metric] is None and b[metric] is None:  # an AUC undefined in both (one class only)
                continue
            kind = "pooled_auc" if (name, metric) == ("pooled", "auc") else "exact"
            tolerance = AUC_TOLERANCE if kind == "pooled_auc" else TOLERANCE
            diff = abs(a[metric] - b[metric])
            worst[kind] = max(worst[kind], diff)
            if not diff <= tolerance:
                raise DeployTestError(f"{name} {metric}: remote {a[metric]} vs simulation {b[metric]} (> {tolerance})")
    return worst


def run(work: Path, image: str, data_dir: Path, rounds: int, seed: int, timings: dict[str, float]) -> None:
    """Every phase after the image build (see the module docstring)."""
    ledger = Ledger(work)
    check_ports_free()
    with phase("kits", timings):
        kits = provision(work / "kits")
    with phase("render", timings):
        rendered = {name: render(name, kits[name], image, work / "render" / name) for name in ("server", *HOSPITALS)}
        impostor = render("cleveland", kits["impostor"], image, work / "render" / "impostor")
    with phase("server up (probes pass, admin logs in)", timings):
        play("server", rendered["server"], work, ledger)
        wait_probes(deployment(rendered["server"]))
        check_security(deployment(rendered["server"]))
        wait_for("the admin to log in", lambda: connected_sites(kits["admin"]) is not None)
    with phase("impostor site (another CA) refused", timings):
        played = play("impostor", impostor, work, ledger, data=site_data("cleveland", data_dir))
        how = impostor_refused(container_name(deployment(impostor), "site"), kits)
        print(f"deploy-test: the server refused the impostor's certificate ({how}); nothing connected")
        unplay(played)  # the real cleveland site takes its place: same pod, volume and emptyDir names
    with phase("site with a corrupted data file refused", timings):
        # cleveland's own overlay and kit, its volume holding a copy of its file with one value outside the schema.
        bad = corrupt_copy(site_data("cleveland", data_dir)[0], work / "corrupted")
        played = play("corrupted", rendered["cleveland"], work, ledger, data=[bad])
        said = refused_for_its_data(
            container_name(deployment(rendered["cleveland"]), "site"), f"/data/{bad.name}", CORRUPT_AT
        )
        connected = connected_sites(kits["admin"])
        unplay(played)
        if connected != set():
            raise DeployTestError(f"a site refused for its data file, yet the admin sees connected sites {connected}")
        print(f"deploy-test: the site refused its corrupted file with code 2: {said}")
    with phase("sites up (probes pass, 4 connected)", timings):
        for h in HOSPITALS:
            play(h, rendered[h], work, ledger, data=site_data(h, data_dir))
        for h in HOSPITALS:
            wait_probes(deployment(rendered[h]))
            check_security(deployment(rendered[h]))
            check_own_data_only(deployment(rendered[h]), h)
        wait_for("the four sites to connect", lambda: set(HOSPITALS) <= (connected_sites(kits["admin"]) or set()))
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    with phase("report (fedkit report ... -p engine remote, on the host)", timings):
        command = [
            str(Path(sys.executable).parent / "fedkit"), "report", str(NOTEBOOK), "--output-dir", str(work / "reports"),
            "-p", "engine", "remote", "-p", "admin_kit", str(kits["admin"]), "-p", "rounds", str(rounds),
            "-p", "seeds", f"[{seed}]",
        ]  # fmt: skip
        env = {**os.environ, "FEDKIT_HOME": str(home), "FEDKIT_DATA_DIR": str(data_dir)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)  # noqa: S603
        if done.returncode != 0:
            raise DeployTestError(
                f"`fedkit report` failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        print(done.stdout.strip())
    with phase("a site stops on SIGTERM", timings):
        stopped = stop_promptly(container_name(deployment(rendered["va"]), "site"))
        print(f"deploy-test: va's site stopped {stopped:.1f} s after SIGTERM, with code 143")
    with phase("compare with the simulation", timings):
        worst = compare_with_simulation(home, data_dir, rounds, seed)
        print(
            "deploy-test: remote = simulation per silo and pooled (loss, accuracy, AUC), the remote run under secure "
            f"aggregation: largest difference {worst['exact']:.2e} (pooled AUC {worst['pooled_auc']:.2e})"
        )


def down(work: Path) -> list[str]:
    """Remove every pod, volume and secret the test created (now or in an interrupted run); what is left over."""
    ledger = Ledger(work)
    state = ledger.load()
    stopping = [  # every pod at once: each takes seconds to stop
        subprocess.Popen(["podman", "kube", "down", kube], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603,S607
        for kube in state["kube"]
        if Path(kube).exists()
    ]
    for proc in stopping:
        proc.wait(timeout=120)
    for kube in state["kube"]:
        Path(kube).unlink(missing_ok=True)
    for name in state["secret"]:
        podman("secret", "rm", name, check=False)
    for name in state["volume"]:
        podman("volume", "rm", "--force", name, check=False)
    podman("volume", "prune", "--force", check=False)  # emptyDirs: anonymous volumes of the pods, in this storage only
    ledger.path.unlink(missing_ok=True)
    return [
        *(f"pod {p}" for p in podman("pod", "ps", "--quiet", check=False).split()),
        *(f"container {c}" for c in podman("ps", "--all", "--quiet", check=False).split()),
        *(f"volume {v}" for v in podman("volume", "ls", "--quiet", check=False).split()),
        *(f"secret {s}" for s in podman("secret", "ls", "--format", "{{.Name}}", check=False).split()),
    ]


def stop_on_sigterm(signum: int, frame: Any) -> None:
    """Unwind on SIGTERM (deploy-test.sh interrupted): the running podman or report subprocess is killed on the way."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """``run`` or ``down``; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "down"])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (kits, rendered manifests, ledger)")
    parser.add_argument("--image", default="localhost/fedkit-remote:deploy-test")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("FEDKIT_DATA_DIR", ".")))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.command == "down":
        start = time.monotonic()
        left = down(args.work)
        print(f"deploy-test: tear-down: {time.monotonic() - start:.1f} s")
        if left:
            print(f"deploy-test: tear-down left {left}", file=sys.stderr)
            return 1
        return 0
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    timings: dict[str, float] = {}
    try:
        run(args.work, args.image, args.data_dir.resolve(), args.rounds, args.seed, timings)
    except DeployTestError as exc:
        print(f"deploy-test: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        print("deploy-test: phases " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
