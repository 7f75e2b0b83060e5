"""The `docker` target: one container per deployed version, blue/green on two host ports.

A deploy starts a new container next to the one serving, waits until Docker reports it
healthy (the image's HEALTHCHECK probes /ping) and it answers through its published port
with the expected model version, then switches: `docker.json` now names the new container
and its URL. The old container gets a few seconds to drain in-flight requests before it is
stopped and removed. When the new one never gets healthy it is removed and the old one
keeps serving.

The two containers cannot publish the same host port at once, so versions alternate between
`serving.port` and `serving.port + 1`; clients follow `status().endpoint.url`.

The bundle is bind-mounted read-only rather than copied into a per-version image: bundles
are immutable, versioned folders already, so a mount is just as reproducible, and it costs
nothing, whereas every extra image layer on the vfs storage driver (what CI sandboxes can
run) is a full copy of the filesystem. Prediction-log and feedback folders are mounted
read-write so monitoring on the host reads what the container logs; the container runs as
the host user so those files belong to it. (A mount needs an engine on this host; a remote
engine would need the copy-in variant.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container

from ct_platform.deployment.admin import AdminClient
from ct_platform.deployment.endpoint import (
    DeploymentError,
    Endpoint,
    EndpointStatus,
    server_arguments,
    utc_now,
    wait_healthy,
)
from ct_platform.deployment.image import ensure_serving_image
from ct_platform.deployment.state import admin_token, exclusive, read_json, write_json_atomic
from ct_platform.serving.bundle import read_meta
from ct_platform.serving.platform_figures import FIGURES_DIR
from ct_platform.settings import Spec

CONTAINER_PORT_NUMBER = 8080
CONTAINER_PORT = f"{CONTAINER_PORT_NUMBER}/tcp"
CONTAINER_BUNDLE = "/bundle"
CONTAINER_HOME = "/ct_home"
ROLE_LABEL = "ct-platform.role"
HOME_LABEL = "ct-platform.home"
START_TIMEOUT_S = 180.0
DRAIN_SECONDS = 3.0
STOP_TIMEOUT_S = 10
API_TIMEOUT_S = 300


def docker_client() -> docker.DockerClient:
    """A client for the local engine, or `DeploymentError` saying why there is none."""
    try:
        # Generous API timeout: removing a container on the vfs storage driver deletes a
        # full copy of the image's filesystem, which takes a minute on a busy machine.
        client = docker.from_env(version="auto", timeout=API_TIMEOUT_S)
        client.ping()
    except DockerException as exc:
        raise DeploymentError(
            f"NO DOCKER ENGINE: {exc} (run deploy/start-dockerd.sh to start one)"
        ) from None
    return client


class DockerTarget:
    name = "docker"

    def __init__(self, spec: Spec, client: docker.DockerClient | None = None) -> None:
        self._serving = spec.serving
        self._paths = spec.paths
        self._client = client
        self.state_file = spec.paths.deployments / "docker.json"
        self.lock_file = spec.paths.deployments / "docker.lock"

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def build_image(self) -> str:
        """Build (or reuse) the serving image; returns its id."""
        return ensure_serving_image(self.client, self._serving.docker_image)

    def deploy(self, bundle_dir: Path) -> Endpoint:
        with exclusive(self.lock_file):
            return self._deploy(bundle_dir.resolve())

    def _deploy(self, bundle_dir: Path) -> Endpoint:
        version = read_meta(bundle_dir).version
        image_id = self.build_image()
        old = self._current_container()
        port = self._free_slot_port(old)
        container = self._run(image_id, bundle_dir, version, port)
        url = f"http://{self._client_host()}:{port}"
        try:
            self._wait_ready(container, url, version)
        except DeploymentError:
            _remove(container)
            raise
        endpoint = Endpoint(url, version, self.name, utc_now(), str(bundle_dir))
        write_json_atomic(
            self.state_file,
            {**endpoint.to_dict(), "container_id": container.id, "container": container.name},
        )
        if old is not None:
            # Traffic follows the state file from now on; let requests in flight finish.
            time.sleep(DRAIN_SECONDS)
            _remove(old)
        return endpoint

    def status(self) -> EndpointStatus | None:
        state = read_json(self.state_file)
        if state is None:
            return None
        endpoint = Endpoint.from_state(state)
        container = self._current_container()
        if container is None:
            return EndpointStatus(endpoint, healthy=False, detail="container is gone")
        health = _health(container)
        detail = f"container {container.short_id} ({container.status}, {health})"
        healthy = container.status == "running" and health == "healthy"
        return EndpointStatus(endpoint, healthy=healthy, detail=detail)

    def stop(self) -> None:
        with exclusive(self.lock_file):
            self._stop()

    def _stop(self) -> None:
        container = self._current_container()
        if container is not None:
            _remove(container)
        self.state_file.unlink(missing_ok=True)

    # --- internals ---------------------------------------------------------------------

    def _current_container(self) -> Container | None:
        state = read_json(self.state_file)
        if state is None:
            return None
        try:
            return self.client.containers.get(state["container_id"])
        except NotFound:
            return None

    def _free_slot_port(self, old: Container | None) -> int:
        blue = self._serving.port
        green = blue + 1 if blue < 65535 else blue - 1
        if old is None:
            return blue
        return green if _published_port(old) == blue else blue

    def _client_host(self) -> str:
        # A server published on every interface is reached through loopback.
        host = self._serving.host
        return "127.0.0.1" if host in ("0.0.0.0", "") else host

    def _run(self, image_id: str, bundle_dir: Path, version: str, port: int) -> Container:
        mounts = {str(bundle_dir): {"bind": CONTAINER_BUNDLE, "mode": "ro"}}
        for folder in (self._paths.predictions, self._paths.feedback):
            mounts[str(folder)] = {"bind": f"{CONTAINER_HOME}/{folder.name}", "mode": "rw"}
        # The monitoring figures the server exports on /metrics (serving.platform_figures).
        figures = self._paths.home / FIGURES_DIR
        figures.mkdir(parents=True, exist_ok=True)
        mounts[str(figures)] = {"bind": f"{CONTAINER_HOME}/{FIGURES_DIR.as_posix()}", "mode": "ro"}
        environment = {self._serving.admin_token_env: self._token()}
        api_key = os.environ.get(self._serving.api_key_env)
        if api_key:
            environment[self._serving.api_key_env] = api_key
        name = f"ct-serving-{read_meta(bundle_dir).name}-v{version}-{int(time.time())}"
        try:
            return self.client.containers.run(
                image_id,
                command=server_arguments(
                    self._serving, CONTAINER_BUNDLE, "0.0.0.0", CONTAINER_PORT_NUMBER
                ),
                name=name,
                detach=True,
                labels={ROLE_LABEL: "serving", HOME_LABEL: str(self._paths.home)},
                ports={CONTAINER_PORT: (self._serving.host, port)},
                volumes=mounts,
                environment=environment,
                user=f"{os.getuid()}:{os.getgid()}",
                restart_policy={"Name": "unless-stopped"},
            )
        except APIError as exc:
            raise DeploymentError(f"cannot start container {name}: {exc.explanation}") from None

    def _token(self) -> str:
        return admin_token(self._paths.deployments, self._serving.admin_token_env)

    def _wait_ready(self, container: Container, url: str, version: str) -> None:
        """Docker's own health verdict first, then the same check through the host port."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while (health := _health(container)) != "healthy":
            # The restart policy would bring a crashing server back forever: one crash fails.
            crashed = container.attrs["RestartCount"] > 0 or container.status != "running"
            if crashed or health == "unhealthy" or time.monotonic() > deadline:
                logs = container.logs(tail=30).decode(errors="replace")
                raise DeploymentError(
                    f"container {container.name} not healthy ({container.status}, {health}):\n"
                    f"{logs}"
                )
            time.sleep(0.5)
        wait_healthy(url, max(deadline - time.monotonic(), 5.0))
        served = AdminClient(url, self._token()).stable_version()
        if served != version:
            raise DeploymentError(f"{url} serves version {served}, expected {version}")


def _health(container: Container) -> str:
    container.reload()
    return container.attrs["State"].get("Health", {}).get("Status", "none")


def _published_port(container: Container) -> int | None:
    bindings = container.attrs["HostConfig"]["PortBindings"].get(CONTAINER_PORT) or []
    return int(bindings[0]["HostPort"]) if bindings else None


def _remove(container: Container) -> None:
    """Stop (SIGTERM, uvicorn drains, SIGKILL after the timeout) and delete the container."""
    try:
        container.stop(timeout=STOP_TIMEOUT_S)
        container.remove()
    except NotFound:
        pass
