"""The docker target against a real Docker engine (deploy/start-dockerd.sh starts one).

Without an engine these tests SKIP, loudly: the reason is printed and raised as a warning,
so a run without Docker can never pass for a run that tested it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from ct_platform.deployment import (
    DeploymentError,
    ensure_running,
    smoke_request,
    target_for,
    wait_healthy,
)
from ct_platform.deployment.container import HOME_LABEL, DockerTarget, docker_client
from ct_platform.deployment.controller import RolloutController
from ct_platform.deployment.rollout import admin_client
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.settings import Spec
from ct_platform_tests.deployment.delivery_proofs import (
    CANDIDATE,
    MIN_REQUESTS,
    delivery_spec,
    drive,
)
from ct_platform_tests.deployment.wrk_load import WrkLoad

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    try:
        return docker_client()
    except DeploymentError as exc:
        reason = f"{exc}: docker-target tests SKIPPED"
        print(f"\n{'#' * 72}\n## {reason}\n{'#' * 72}", file=sys.stderr)
        warnings.warn(reason, stacklevel=1)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def serving_image(engine: docker.DockerClient, bank_spec: Spec) -> str:
    """Built once per session (minutes the very first time, seconds when cached)."""
    return DockerTarget(bank_spec, engine).build_image()


@pytest.fixture
def docker_target(
    serving_spec: Spec, engine: docker.DockerClient, serving_image: str
) -> Iterator[DockerTarget]:
    spec = serving_spec.model_copy(
        update={"serving": serving_spec.serving.model_copy(update={"target": "docker"})}
    )
    target = target_for(spec)
    assert isinstance(target, DockerTarget)
    yield target
    target.stop()
    for leftover in engine.containers.list(
        all=True, filters={"label": f"{HOME_LABEL}={spec.paths.home}"}
    ):
        leftover.remove(force=True)


def test_stable_address_through_deploys_restart_revive_and_stop(
    docker_target: DockerTarget,
    engine: docker.DockerClient,
    bundles: dict[str, Path],
    sample_row: dict[str, Any],
    serving_image: str,
    serving_spec: Spec,
) -> None:
    first = docker_target.deploy(bundles["1"])

    assert first.version == "1" and first.target == "docker"
    assert first.url == f"http://127.0.0.1:{serving_spec.serving.port}"
    status = docker_target.status()
    assert status is not None and status.healthy, status
    container_id = docker_target_state(docker_target)["container_id"]
    assert engine.containers.get(container_id).image.id == serving_image

    with SteadyLoad(first.url, sample_row) as load:
        second = docker_target.deploy(bundles["2"])
        load.until_served("2")

    assert second.version == "2" and second.url == first.url  # the same address
    assert load.failures == [], load.failures[:5]
    assert set(load.versions) == {"1", "2"}, load.versions
    # A hot swap inside the same container, not a new one.
    assert docker_target_state(docker_target)["container_id"] == container_id

    # Docker restarts it (restart policy, daemon restart): it comes back with version 2,
    # the bundle last deployed, not the one it was started with.
    engine.containers.get(container_id).restart(timeout=10)
    wait_healthy(first.url, 120)
    assert docker_target.admin().stable_version() == "2"

    engine.containers.get(container_id).stop()  # the server dies (say, the host rebooted)
    assert not docker_target.status().healthy
    revived = ensure_running(docker_target)

    assert revived is not None and revived.version == "2" and revived.url == first.url
    assert smoke_request(revived.url, sample_row) in (0, 1)
    revived_id = docker_target_state(docker_target)["container_id"]
    assert revived_id != container_id
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(container_id)

    docker_target.stop()
    assert docker_target.status() is None
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(revived_id)
    # Every answered request was logged on the host (flushed when each container stopped).
    records = [
        json.loads(line)
        for segment in serving_spec.paths.predictions.glob("*.jsonl")
        for line in segment.read_text().splitlines()
    ]
    assert len(records) == len(load.versions) + 1
    assert {record["model_version"] for record in records} == {"1", "2"}


def test_bundle_outside_the_bundles_folder_is_refused(
    docker_target: DockerTarget, built_bundles: dict[str, Path]
) -> None:
    with pytest.raises(DeploymentError, match=r"not under .*bundles"):
        docker_target.deploy(built_bundles["1"])
    assert docker_target.status() is None


def test_canary_on_docker_under_load_fails_no_request(
    wrk: str,
    docker_target: DockerTarget,
    serving_spec: Spec,
    bundles: dict[str, Path],
    two_versions: ModelRegistry,
    load_rows: list[dict[str, Any]],
) -> None:
    """The rollout controller drives the container through the same admin API as a local
    server: it neither knows nor cares which target it runs on."""
    docker_target.deploy(bundles["1"])
    container_id = docker_target_state(docker_target)["container_id"]
    spec = delivery_spec(serving_spec, "canary")
    admin = admin_client(spec, docker_target.url)
    controller = RolloutController(spec, admin, two_versions)

    with WrkLoad(docker_target.url, load_rows) as load:
        controller.begin(CANDIDATE, bundles[CANDIDATE].name)
        done = drive(controller, admin, min_requests=MIN_REQUESTS)
    result = load.result

    assert done.rollout.status == "completed", done.rollout.reason
    passed = [entry["weight"] for entry in done.rollout.history if entry["verdict"] == "pass"]
    assert passed == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert (result.non2xx, result.socket_errors) == (0, 0), load.output
    assert admin.stable_version() == CANDIDATE
    assert docker_target_state(docker_target)["container_id"] == container_id


class SteadyLoad:
    """Two client threads posting one row back to back; records versions and failures."""

    def __init__(self, url: str, row: dict[str, Any], clients: int = 2) -> None:
        self._url = url
        self._body = {"dataframe_records": [row]}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]
        self.versions: list[str] = []
        self.failures: list[str] = []

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def until_served(self, version: str, timeout: float = 60.0) -> None:
        """Keep the load on until a few answers came from `version`."""
        deadline = time.monotonic() + timeout
        while self.versions[-20:].count(version) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)

    def _run(self) -> None:
        with httpx.Client(timeout=30.0) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(f"{self._url}/invocations", json=self._body)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code == 200:
                    self.versions.append(response.headers["x-model-version"])
                else:
                    self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")


def docker_target_state(target: DockerTarget) -> dict[str, Any]:
    return json.loads(target.state_file.read_text())
