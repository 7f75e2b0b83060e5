"""The docker target against a real Docker engine (deploy/start-dockerd.sh starts one).

Without an engine these tests SKIP, loudly: the reason is printed and raised as a warning,
so a run without Docker can never pass for a run that tested it.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from ct_platform.deployment import DeploymentError, ensure_running, smoke_request, target_for
from ct_platform.deployment.container import HOME_LABEL, DockerTarget, docker_client
from ct_platform.settings import Spec

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


def test_deploy_redeploy_revive_and_stop(
    docker_target: DockerTarget,
    engine: docker.DockerClient,
    bundles: dict[str, Path],
    sample_row: dict[str, Any],
    serving_image: str,
    serving_spec: Spec,
) -> None:
    first = docker_target.deploy(bundles["1"])

    assert first.version == "1" and first.target == "docker"
    assert smoke_request(first.url, sample_row) in (0, 1)
    status = docker_target.status()
    assert status is not None and status.healthy, status
    old_container = engine.containers.get(docker_target_state(docker_target)["container_id"])
    assert old_container.image.id == serving_image

    second = docker_target.deploy(bundles["2"])

    assert second.version == "2" and second.url != first.url  # the other blue/green port
    assert smoke_request(second.url, sample_row) in (0, 1)
    new_id = docker_target_state(docker_target)["container_id"]
    assert new_id != old_container.id
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(old_container.id)  # drained, stopped and removed
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{first.url}/ping", timeout=2)

    engine.containers.get(new_id).stop()  # the server dies (say, the host rebooted)
    assert not docker_target.status().healthy
    revived = ensure_running(docker_target)

    assert revived is not None and revived.version == "2" and revived.url == first.url
    assert smoke_request(revived.url, sample_row) in (0, 1)
    revived_id = docker_target_state(docker_target)["container_id"]
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(new_id)

    docker_target.stop()
    assert docker_target.status() is None
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(revived_id)
    # Every container logged its prediction to the host (flushed when it stopped).
    records = [
        json.loads(line)
        for segment in serving_spec.paths.predictions.glob("*.jsonl")
        for line in segment.read_text().splitlines()
    ]
    assert sorted(record["model_version"] for record in records) == ["1", "2", "2"]


def docker_target_state(target: DockerTarget) -> dict[str, Any]:
    return json.loads(target.state_file.read_text())
