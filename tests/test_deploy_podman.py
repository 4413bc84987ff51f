"""The deployment runs, not only validates: ``make deploy-test`` (deploy/podman/deploy-test.sh) in the suite.

It builds the image on a debootstrap'd Debian, starts the server and the four hospital sites from the
project's own kustomize overlays with ``podman kube play`` (127.0.0.1 only), checks probes and security
contexts, has the server refuse a site from another CA, runs the headless report from here against them,
compares it with the simulation to 1e-6, and tears everything down (deploy/podman/federation.py). It needs
root, podman, runc, debootstrap and kubectl: skipped without them on a developer's machine, failed in CI
(``CI=true``; .ci/run installs them). The adaptations to podman are checked here without podman: they never
touch what the pods run.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "podman" / "deploy-test.sh"


def _federation():
    spec = importlib.util.spec_from_file_location("deploy_federation", ROOT / "deploy" / "podman" / "federation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rendered(overlay: str) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (kustomize renders the overlays)")
    done = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.mark.parametrize("overlay", ["server", "cleveland"])
def test_podman_shims_leave_what_the_pods_run_untouched(overlay) -> None:
    federation = _federation()
    docs = _rendered(overlay)
    before = copy.deepcopy(docs)
    secrets, played = federation.podman_shims(docs)
    assert docs == before  # the rendered documents themselves are not modified
    assert secrets == [d for d in docs if d["kind"] == "Secret"]
    assert {d["kind"] for d in played} <= {"Deployment", "PersistentVolumeClaim"}
    (original,) = [d for d in docs if d["kind"] == "Deployment"]
    (shimmed,) = [d for d in played if d["kind"] == "Deployment"]
    pod, shim = original["spec"]["template"]["spec"], shimmed["spec"]["template"]["spec"]
    assert {k: v for k, v in pod.items() if k not in ("containers", "volumes")} == {
        k: v for k, v in shim.items() if k not in ("containers", "volumes")
    }
    for a, b in zip(pod["containers"], shim["containers"], strict=True):
        kept = ("name", "image", "command", "args", "env", "resources", "securityContext", "readinessProbe",
                "livenessProbe")  # fmt: skip
        assert {k: a.get(k) for k in kept} == {k: b.get(k) for k in kept}
        assert b["imagePullPolicy"] == "IfNotPresent" and "ports" not in b
        assert [(m["mountPath"], m.get("readOnly")) for m in a["volumeMounts"]] == [
            (m["mountPath"], m.get("readOnly")) for m in b["volumeMounts"]
        ]
    for a, b in zip(pod["volumes"], shim["volumes"], strict=True):
        if "emptyDir" in a:  # one volume per pod, as in Kubernetes, not one per name on the podman host
            assert b == {**a, "name": f"{original['metadata']['name']}-{a['name']}"}
        elif "secret" in a:
            assert b == {**a, "secret": {**a["secret"], "optional": False}}
        else:
            assert a == b


def test_a_site_volume_holds_the_uci_files_and_the_issue_12_switch_is_marked(data_dir) -> None:
    federation = _federation()
    files = federation.site_data("va", data_dir)
    assert sorted(f.name for f in files) == sorted(f"processed.{h}.data" for h in federation.HOSPITALS)
    assert "TODO(issue-12)" in federation.site_data.__doc__


def test_podman_secrets_hold_the_kit_files_decoded() -> None:
    federation = _federation()
    secret = {"kind": "Secret", "metadata": {"name": "fedkit-kit-startup-abc"}, "data": {"a.json": "eyJ4IjogMX0="}}
    stored = yaml.safe_load(federation.podman_secret(secret))
    assert stored["metadata"]["name"] == "fedkit-kit-startup-abc" and stored["data"] == {"a.json": '{"x": 1}'}


@pytest.mark.timeout(1800)  # a cold machine: debootstrap, the image's packages, then the run
def test_the_federation_runs_from_the_overlays_in_podman() -> None:
    missing = [t for t in ("podman", "runc", "debootstrap", "kubectl") if shutil.which(t) is None]
    reason = (
        f"{', '.join(missing)} not installed (apt-get install podman runc debootstrap)" if missing
        else "the deploy test needs root (debootstrap, podman with host networking)" if os.geteuid() != 0
        else None
    )  # fmt: skip
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must run it: .ci/run installs podman, runc and debootstrap.")
        pytest.skip(reason)
    proc = subprocess.Popen(
        [str(SCRIPT)], cwd=ROOT, env={**os.environ, "PYTHON": sys.executable},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=1700)
    finally:
        if proc.poll() is None:  # timed out or interrupted: SIGTERM lets the script's trap tear everything down
            proc.terminate()
            out, err = proc.communicate(timeout=120)
    print(out)
    assert proc.returncode == 0, out[-8000:] + err[-8000:]
    assert "remote = simulation per silo and pooled" in out
    assert "deploy-test: passed" in out
