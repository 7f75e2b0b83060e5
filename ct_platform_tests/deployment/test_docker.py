"""The docker target against a real Docker engine (deploy/start-dockerd.sh starts one).

Without an engine these tests SKIP, loudly (see conftest). The rollouts on docker are the
delivery proofs and the restart tests, run on both targets (test_delivery_proofs.py,
test_restart.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from ct_platform.deployment import (
    DeploymentError,
    ensure_running,
    image,
    smoke_request,
    target_for,
    wait_healthy,
)
from ct_platform.deployment.container import DockerTarget
from ct_platform.deployment.endpoint import is_healthy
from ct_platform.deployment.rollout import Finding
from ct_platform.settings import Spec
from ct_platform_tests.deployment.conftest import (
    free_port_pair,
    remove_leftover_containers,
    with_port,
    with_target,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def docker_target(
    serving_spec: Spec, engine: docker.DockerClient, serving_image: str
) -> Iterator[DockerTarget]:
    spec = with_target(serving_spec, "docker")
    target = target_for(spec)
    assert isinstance(target, DockerTarget)
    yield target
    target.stop()
    remove_leftover_containers(engine, spec)


def test_stable_address_through_deploys_restart_revive_and_stop(
    docker_target: DockerTarget,
    engine: docker.DockerClient,
    bundles: dict[str, Path],
    sample_row: dict[str, Any],
    serving_image: str,
    serving_spec: Spec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = docker_target.deploy(bundles["1"])

    assert first.version == "1" and first.target == "docker"
    assert first.url == f"http://127.0.0.1:{serving_spec.serving.port}"
    status = docker_target.status()
    assert status is not None and status.healthy, status
    container_id = docker_target_state(docker_target)["container_id"]
    assert engine.containers.get(container_id).image.id == serving_image
    assert_an_upgrade_of_the_serving_sources_is_found(
        docker_target, bundles["1"], serving_spec, container_id, monkeypatch
    )

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
    # The watchdog of a shell with another port brings it back where it was.
    other_port = free_port_pair()
    revived = ensure_running(
        DockerTarget(with_target(with_port(serving_spec, other_port), "docker"), engine)
    )

    assert revived is not None and revived.version == "2" and revived.url == first.url
    assert not is_healthy(f"http://127.0.0.1:{other_port}")
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


def assert_an_upgrade_of_the_serving_sources_is_found(
    target: DockerTarget,
    bundle: Path,
    spec: Spec,
    container_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A container serving the champion is left alone while its image is the one the serving
    sources here build, and deployed again once they change (a platform upgrade)."""
    wanted = "the champion is version 1"
    assert target.outdated() is None
    current = Finding.of(target, spec.model.name, bundle, wanted)
    assert not current.needs_deploy and current.text.endswith("nothing to deploy"), current
    with monkeypatch.context() as upgrade:
        upgrade.setattr(image, "_source_hash", lambda requirements: "0" * 16)
        upgraded = Finding.of(target, spec.model.name, bundle, wanted)
    assert upgraded.needs_deploy and not upgraded.down, upgraded
    assert f"container {container_id[:12]} runs image sha256:" in upgraded.text, upgraded
    assert f":src-{'0' * 16}, not built yet" in upgraded.text, upgraded


def test_a_shell_with_another_port_swaps_into_the_recorded_container(
    docker_target: DockerTarget,
    engine: docker.DockerClient,
    bundles: dict[str, Path],
    serving_spec: Spec,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # `make demo` serves on its port; a shell without CT_SERVING_PORT has the spec's default.
    recorded = docker_target.deploy(bundles["1"]).url
    container_id = docker_target_state(docker_target)["container_id"]
    other_port = free_port_pair()
    elsewhere = DockerTarget(with_target(with_port(serving_spec, other_port), "docker"), engine)

    endpoint = elsewhere.deploy(bundles["2"])

    assert (endpoint.url, endpoint.version) == (recorded, "2")
    # The same container, hot-swapped: not replaced as hung, not moved to the other port.
    assert docker_target_state(docker_target)["container_id"] == container_id
    assert docker_target.admin().stable_version() == "2"
    assert elsewhere.url == recorded
    assert not is_healthy(f"http://127.0.0.1:{other_port}")
    assert (
        f"serving at the recorded {recorded}; this shell's port {other_port} differs "
        "(CT_SERVING_PORT)"
    ) in caplog.text
    # A rollout completed from that shell records the promoted bundle, not its address.
    assert elsewhere.adopt(bundles["2"]).url == recorded
    assert docker_target_state(docker_target)["url"] == recorded


def test_a_hung_container_restarts_on_its_recorded_port_with_its_api_key(
    docker_target: DockerTarget,
    engine: docker.DockerClient,
    bundles: dict[str, Path],
    serving_spec: Spec,
    sample_row: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key_variable = serving_spec.serving.api_key_env
    monkeypatch.setenv(key_variable, "the-clients-key")
    recorded = docker_target.deploy(bundles["1"]).url
    hung = engine.containers.get(docker_target_state(docker_target)["container_id"])
    # Another shell: another port, and no API key in its environment.
    monkeypatch.delenv(key_variable)
    other_port = free_port_pair()
    elsewhere = DockerTarget(with_target(with_port(serving_spec, other_port), "docker"), engine)
    server_pid = hung.attrs["State"]["Pid"]  # the server is the container's init, host pid
    os.kill(server_pid, signal.SIGSTOP)  # running, /ping silent
    try:
        endpoint = elsewhere.deploy(bundles["2"])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server_pid, signal.SIGCONT)

    assert (endpoint.url, endpoint.version) == (recorded, "2")
    replacement_id = docker_target_state(docker_target)["container_id"]
    assert replacement_id != hung.id
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(hung.id)
    assert not is_healthy(f"http://127.0.0.1:{other_port}")
    # The replacement requires the key its clients hold, not the caller's (none).
    with pytest.raises(DeploymentError, match="HTTP 401"):
        smoke_request(recorded, sample_row)
    assert smoke_request(recorded, sample_row, api_key="the-clients-key") in (0, 1)
    assert f"this shell's {key_variable} differs" in caplog.text
    assert "the-clients-key" not in caplog.text
    assert docker_target_state(docker_target)["url"] == recorded


def test_bundle_outside_the_bundles_folder_is_refused(
    docker_target: DockerTarget, built_bundles: dict[str, Path]
) -> None:
    with pytest.raises(DeploymentError, match=r"not under .*bundles"):
        docker_target.deploy(built_bundles["1"])
    assert docker_target.status() is None


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
