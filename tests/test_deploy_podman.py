"""The deployment runs, not only validates: ``make deploy-test`` (deploy/podman/deploy-test.sh) in the suite.

It builds the image on a debootstrap'd Debian, starts the server and the four hospital sites from the
project's own kustomize overlays with ``podman kube play`` (127.0.0.1 only), checks probes and security
contexts, has the server refuse a site from another CA, has a site refuse its corrupted data file (exit
code 2, file, line and column in its log), gives each site only its own hospital's file, runs the headless
report from here against them (secure aggregation on), compares it with the simulation to 1e-6 (pooled AUC
to 1e-3), and tears everything down (deploy/podman/federation.py). It needs
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


@pytest.mark.parametrize("hospital", ["cleveland", "va"])
def test_a_site_volume_holds_its_own_file_only_and_the_overlay_names_it(hospital, data_dir) -> None:
    federation = _federation()
    assert federation.site_data(hospital, data_dir) == [data_dir / f"processed.{hospital}.data"]
    (site,) = [d for d in _rendered(hospital) if d["kind"] == "Deployment"]
    (container,) = site["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--data") + 1] == f"/data/processed.{hospital}.data"


def test_the_corrupted_copy_breaks_the_schema_where_the_test_expects_it(data_dir, tmp_path) -> None:
    from fedkit.errors import SiteDataError
    from fedkit.remote.silo import SiteOptions

    federation = _federation()
    source = data_dir / "processed.hungarian.data"
    line, column, value = 5, "restecg", "7"  # restecg's levels are 0, 1, 2
    bad = federation.corrupt_copy(source, tmp_path, (line, column, value))
    assert bad.name == source.name
    before, after = source.read_text().splitlines(), bad.read_text().splitlines()
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True), 1) if a != b] == [line]
    fields_before, fields_after = before[line - 1].split(","), after[line - 1].split(",")
    at = 6  # the 7th UCI column: age, sex, cp, trestbps, chol, fbs, restecg, ...
    assert fields_after[:at] + fields_after[at + 1 :] == fields_before[:at] + fields_before[at + 1 :]
    assert fields_after[at] == value != fields_before[at]
    with pytest.raises(SiteDataError, match=rf"{bad}, line {line}, column '{column}': '{value}' is not a level"):
        SiteOptions(str(bad)).read("hungarian", "impute")


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
