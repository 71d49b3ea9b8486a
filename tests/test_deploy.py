"""deploy/kubernetes validates against the Kubernetes schemas (kubernetes-validate, strict),
and says what running embedrpc there needs: non-root, read-only root, gRPC probes on the
standard health service, a startup probe long enough for the self-check, a grace period longer
than the drain, a headless Service for client-side balancing, a PDB and an autoscaler."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


def validate(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([str(VALIDATE), "--strict", *map(str, paths)], capture_output=True,
                          text=True, timeout=120)


def resources() -> dict[str, dict]:
    found = {}
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def test_manifests_validate_and_a_broken_one_does_not(tmp_path):
    done = validate(*MANIFESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "deployment.yaml"
    shutil.copy(ROOT / "deploy/kubernetes/deployment.yaml", broken)
    broken.write_text(broken.read_text().replace("replicas: 3", "replicas: three"))
    assert validate(broken).returncode != 0


def test_the_deployment_runs_embedrpc_as_it_needs():
    found = resources()
    assert set(found) >= {"Deployment/embedrpc", "Service/embedrpc", "Service/embedrpc-headless",
                          "PodDisruptionBudget/embedrpc", "HorizontalPodAutoscaler/embedrpc"}
    pod = found["Deployment/embedrpc"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {p["grpc"]["port"] for p in (container["startupProbe"], container["readinessProbe"],
                                        container["livenessProbe"])} == {50051}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # the self-check
    assert pod["spec"]["terminationGracePeriodSeconds"] > int(env["EMBEDRPC_GRACE_SECONDS"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/bundle"]["readOnly"] is True and env["EMBEDRPC_CACHE"] in mounts
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9090"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert found["Service/embedrpc-headless"]["spec"]["clusterIP"] == "None"
