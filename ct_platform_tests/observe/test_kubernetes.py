"""The Kubernetes manifests and the Dagster Helm values, validated offline.

No `helm` or `kubeconform` binary is installable here (Debian ships neither), so the
manifests are validated with kubernetes-validate (the Kubernetes OpenAPI schemas, shipped in
the package) in strict mode: a misspelled or misplaced field is refused. The Helm values'
Kubernetes objects (env, resources, volumes, mounts) are validated the same way, wrapped in
the Pod the chart renders them into; the queued coordinator and run monitoring must say
what dagster.yaml says.
"""

from __future__ import annotations

import tomllib

import kubernetes_validate
import pytest
import yaml

from ct_platform_tests.conftest import REPO_ROOT
from ct_platform_tests.observe.conftest import TrainedPlatform

# The oldest Kubernetes release still in upstream support when this was written.
KUBERNETES_VERSION = "1.33"
PROBES = {
    "readinessProbe": "/v2/health/ready",
    "livenessProbe": "/v2/health/live",
    "startupProbe": "/v2/health/live",
}
MANIFESTS = REPO_ROOT / "deploy" / "k8s" / "model-server.yaml"
VALUES = REPO_ROOT / "deploy" / "helm" / "dagster-values.yaml"


def manifests() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFESTS.read_text())}


@pytest.mark.parametrize(
    "kind", ["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]
)
def test_manifest_is_valid_kubernetes(kind: str):
    kubernetes_validate.validate(manifests()[kind], KUBERNETES_VERSION, strict=True)


def test_a_misspelled_field_is_refused():
    """The validator is strict: the test above would catch a typo."""
    deployment = manifests()["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# Needs the shared training history's bundle (trained here when this test runs first).
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_probes_are_the_v2_health_routes_and_the_real_server_answers_them(
    trained_platform: TrainedPlatform,
):
    from starlette.testclient import TestClient

    from ct_platform.serving.app import create_app
    from ct_platform.serving.config import ServerConfig

    (container,) = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    probes = {name: container[name]["httpGet"]["path"] for name in PROBES}
    assert probes == PROBES
    assert container["resources"]["requests"] and container["resources"]["limits"]
    bundle = trained_platform.ct_home / "bundles" / f"{trained_platform.spec.model.name}-v1"
    app = create_app(ServerConfig(bundle=bundle, home=trained_platform.ct_home))
    with TestClient(app) as client:
        for path in probes.values():
            assert client.get(path).status_code == 200, path


def test_pdb_and_autoscaler_target_the_deployment():
    found = manifests()
    deployment, service = found["Deployment"], found["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    hpa = found["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    # The PDB's floor stays below the autoscaler's: a drain can always proceed.
    assert found["PodDisruptionBudget"]["spec"]["minAvailable"] < hpa["minReplicas"]


def pod(containers: list[dict], volumes: list[dict]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "rendered-by-the-chart"},
        "spec": {"containers": containers, "volumes": volumes},
    }


def test_helm_values_kubernetes_objects_are_valid():
    values = yaml.safe_load(VALUES.read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    image = deployment["image"]
    code_server = {
        "name": deployment["name"],
        "image": f"{image['repository']}:{image['tag']}",
        "env": deployment["env"],
        "resources": deployment["resources"],
        "volumeMounts": deployment["volumeMounts"],
    }
    kubernetes_validate.validate(
        pod([code_server], deployment["volumes"]), KUBERNETES_VERSION, strict=True
    )
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_worker = {
        "name": "run",
        "image": code_server["image"],
        "env": [
            dict(zip(("name", "value"), e.split("=", 1), strict=True)) for e in launcher["envVars"]
        ],
        "resources": launcher["resources"],
        "volumeMounts": launcher["volumeMounts"],
    }
    kubernetes_validate.validate(
        pod([run_worker], launcher["volumes"]), KUBERNETES_VERSION, strict=True
    )


def test_helm_values_match_the_code_location_and_dagster_yaml():
    values = yaml.safe_load(VALUES.read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    module = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", module["module_name"]]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"

    instance = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    local = instance["run_coordinator"]["config"]
    assert queued["maxConcurrentRuns"] == local["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == local["tag_concurrency_limits"]
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["maxRuntimeSeconds"] == instance["run_monitoring"]["max_runtime_seconds"]
