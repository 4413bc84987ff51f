"""Static checks of deploy/: every manifest renders and validates strictly, Terraform is formatted, checkov passes.

kubectl and terraform are system tools; kubernetes-validate and checkov pin dependencies that conflict
with fedkit's (checkov pins packaging 23, boto3 1.35), so they live in their own virtualenv:
``make deploy-tools`` (``.venv-deploy-tools``, pins in requirements/deploy-tools.txt). A check whose
tool is missing is skipped with the command that installs it. No network: checkov runs with
``--skip-download`` and Terraform is never initialized (no provider or module download).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
TOOLS = ROOT / ".venv-deploy-tools" / "bin"
KUSTOMIZATIONS = sorted(
    p.parent.relative_to(DEPLOY / "k8s")
    for p in (DEPLOY / "k8s").glob("*/*/kustomization.yaml")
    if p.parent.parent.name in ("overlays", "examples")
)


def tool(name: str) -> str:
    found = shutil.which(name) or (str(TOOLS / name) if (TOOLS / name).exists() else None)
    if found is None:
        pytest.skip(f"{name} is not installed; `make deploy-tools` installs it into .venv-deploy-tools")
    return found


def run(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess:
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    kubectl = tool("kubectl")
    out = tmp_path_factory.mktemp("rendered")
    files = {}
    for k in KUSTOMIZATIONS:
        done = run(kubectl, "kustomize", str(DEPLOY / "k8s" / k))
        assert done.returncode == 0, done.stderr
        files[str(k)] = out / (str(k).replace("/", "-") + ".yaml")
        files[str(k)].write_text(done.stdout)
    return files


def test_there_is_an_overlay_for_the_server_and_each_hospital() -> None:
    assert {str(k) for k in KUSTOMIZATIONS} >= {
        "overlays/server",
        "overlays/cleveland",
        "overlays/hungarian",
        "overlays/switzerland",
        "overlays/va",
    }


def test_every_manifest_validates_strictly(rendered) -> None:
    validate = tool("kubernetes-validate")
    done = run(validate, "--strict", "--quiet", *map(str, rendered.values()))
    assert done.returncode == 0, done.stdout + done.stderr


def test_manifests_hold_no_secret_and_run_non_root_read_only(rendered) -> None:
    for name, path in rendered.items():
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert not [d for d in docs if d["kind"] == "Secret"], name  # kits are created with kubectl, never kept here
        deployments = [d for d in docs if d["kind"] == "Deployment"]
        assert len(deployments) == 1, name
        pod = deployments[0]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert c["resources"]["limits"] and c["resources"]["requests"], (name, c["name"])
        for c in pod["containers"]:
            assert c["readinessProbe"] and c["livenessProbe"], (name, c["name"])
        kits = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert kits == {"fedkit-kit-startup", "fedkit-kit-local"}, name


def test_a_site_talks_only_to_the_server(rendered) -> None:
    for name, path in rendered.items():
        if "server" in name:
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
        assert policy["spec"]["ingress"] == []
        server_rule = policy["spec"]["egress"][0]
        assert all("ipBlock" in peer and peer["ipBlock"]["cidr"].endswith("/32") for peer in server_rule["to"])
        assert server_rule["ports"] == [{"protocol": "TCP", "port": 8002}]
        others = policy["spec"]["egress"][1:]
        assert others[0]["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
        if "s3" not in name:
            assert len(others) == 1, name  # DNS only besides the server


def test_a_site_reads_its_own_hospitals_file_and_nothing_else(rendered) -> None:
    """Each hospital's site is started with --data naming its own file; the s3-data component copies that file only."""
    for name, path in rendered.items():
        if "server" in name:
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        own = f"processed.{deployment['metadata']['labels']['fedkit.io/hospital']}.data"
        pod = deployment["spec"]["template"]["spec"]
        (site,) = pod["containers"]
        assert site["args"][site["args"].index("--data") + 1] == f"/data/{own}", name
        assert "FEDKIT_DATA_DIR" not in {e["name"] for e in site.get("env", [])}, name  # no folder of files to find
        for init in pod.get("initContainers", []):  # s3-data: one object, under its own name, into /data
            env = {e["name"]: e["value"] for e in init["env"]}
            assert init["args"] == ["s3", "cp", "--no-progress", "$(DATA_OBJECT_URI)", "/data/"], name
            assert env["DATA_OBJECT_URI"].startswith("s3://") and env["DATA_OBJECT_URI"].endswith(f"/{own}"), name


def test_terraform_is_formatted() -> None:
    done = run(tool("terraform"), "fmt", "-check", "-recursive", "-diff", cwd=DEPLOY / "terraform")
    assert done.returncode == 0, done.stdout + done.stderr


def test_terraform_pins_the_eks_module_with_a_private_endpoint_and_kms() -> None:
    text = (DEPLOY / "terraform" / "main.tf").read_text()
    assert 'source  = "terraform-aws-modules/eks/aws"\n  version = "20.31.6"' in text
    assert "cluster_endpoint_public_access  = false" in text
    assert 'resources        = ["secrets"]' in text
    assert 'output "server_endpoint"' in (DEPLOY / "terraform" / "outputs.tf").read_text()


def test_checkov_passes_on_manifests_terraform_and_dockerfile(rendered) -> None:
    checkov = tool("checkov")
    files = [a for f in rendered.values() for a in ("-f", str(f))]
    for args in (
        ["--framework", "kubernetes", "dockerfile", *files, "-f", str(DEPLOY / "docker" / "Dockerfile")],
        ["--framework", "terraform", "-d", str(DEPLOY / "terraform")],
    ):
        done = run(checkov, "--skip-download", "--compact", "--output", "json", *args)
        reports = json.loads(done.stdout)
        for report in reports if isinstance(reports, list) else [reports]:
            failed = report["results"]["failed_checks"]
            assert not failed, [(c["check_id"], c["resource"], c["file_path"]) for c in failed]
            for skipped in report["results"]["skipped_checks"]:  # every skip carries its reason inline
                assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped["check_id"]
