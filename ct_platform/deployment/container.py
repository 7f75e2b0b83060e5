"""The `docker` target: one long-lived serving container on one stable address.

The container publishes the spec's `serving.port`, and every container replacing it publishes
the same host port (see below): clients never learn a new URL. It mounts `$CT_HOME/bundles`
read-only as its own `$CT_HOME/bundles` (`/ct_home/bundles`), so every bundle the platform
exports is visible inside it under the same name, and the server's admin API (which loads
only bundles under `$CT_HOME/bundles`) can load any of them by name.

A deploy onto a healthy container running the current serving image hot-swaps through that
API, exactly as on the `local` target: load the bundle into the candidate slot, promote it
(one reference swap; no request fails, the port never closes). Rollout strategies drive the
same API through `admin()`, whatever the target.

The container is replaced only when it cannot take a swap: its image is no longer the
current serving image (the server code or its dependencies changed), it is stopped or
unhealthy (hung), or its admin API refuses our token. Two containers cannot publish one host
port, so a replacement has a short gap on the same address: the new container is created
first (on the vfs storage driver that copies the whole image, the slow part), then the old
one stops (uvicorn drains requests in flight), the new one starts and loads the model;
clients see refused connections for those few seconds (benchmarks/delivery/run.py measures
it), and keep the URL. When the new container never gets healthy it is removed and the old
one started again.

The recorded container keeps its address while it exists, running or not: every deploy,
adopt and recreate talks to the host port (and interface) it publishes, not to the port of
the caller's spec, and its replacement publishes the same one and requires the same API key.
A `ct` command from a shell with another `CT_SERVING_PORT` (or `CT_API_KEY`) must neither
miss the live container and replace it as hung, nor move it: the caller's differing port is
only logged. A deployment whose container is gone (removed) starts afresh on the spec's
port; to move a live one on purpose, `stop` it, then deploy.

The server's start-up bundle is `bundles/.serving-docker`, a relative symlink this module
points at the bundle the stable slot serves: the one it last deployed, or the one a rollout
last completed (`adopt`, called once the candidate is promoted, never while it is only a
candidate). A container Docker restarts (its restart policy, a daemon or host restart) comes
back serving that version, the champion: a restart in the middle of a rollout serves stable
alone, and the rollout, finding its candidate gone, ends rolled back.

Prediction-log and feedback folders are mounted read-write so monitoring on the host reads
what the container logs; the container runs as the host user so those files belong to it.
(Mounts need an engine on this host; a remote engine would need a copy-in variant.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container

from ct_platform.deployment.admin import AdminAuthError, AdminClient
from ct_platform.deployment.endpoint import (
    DeploymentError,
    Endpoint,
    EndpointStatus,
    probe,
    server_arguments,
    utc_now,
    wait_healthy,
)
from ct_platform.deployment.image import ensure_serving_image, source_tag
from ct_platform.deployment.remote import bundle_name
from ct_platform.deployment.state import (
    OwnServer,
    admin_token,
    exclusive,
    read_json,
    write_json_atomic,
)
from ct_platform.serving.bundle import read_meta
from ct_platform.serving.platform_figures import FIGURES_DIR
from ct_platform.settings import Spec

CONTAINER_PORT_NUMBER = 8080
CONTAINER_PORT = f"{CONTAINER_PORT_NUMBER}/tcp"
CONTAINER_HOME = "/ct_home"
CONTAINER_BUNDLES = f"{CONTAINER_HOME}/bundles"
# The start-up bundle: a symlink in the bundles folder, relative so it resolves on both sides.
SERVING_POINTER = ".serving-docker"
ROLE_LABEL = "ct-platform.role"
HOME_LABEL = "ct-platform.home"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10
API_TIMEOUT_S = 300

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """Where a container's server port is published on the host: interface and port."""

    host: str
    port: int

    @property
    def url(self) -> str:
        # A server published on every interface is reached through loopback.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


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


class DockerTarget(OwnServer):
    name = "docker"

    def __init__(self, spec: Spec, client: docker.DockerClient | None = None) -> None:
        self._serving = spec.serving
        self._paths = spec.paths
        self._model_name = spec.model.name
        self._client = client
        self.state_file = spec.paths.deployments / "docker.json"
        self.lock_file = spec.paths.deployments / "docker.lock"

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client()
        return self._client

    @property
    def url(self) -> str:
        """The one address clients use, through every deploy: the recorded container's while
        it exists (running or not), else the spec's `serving.host`/`serving.port`."""
        return self._address(self._current_container()).url

    def _address(self, container: Container | None) -> Published:
        """Where `container` is published (a replacement publishes there too); the spec's
        address when there is no container (or it publishes nothing)."""
        published = None if container is None else _published(container)
        return published or Published(self._serving.host, self._serving.port)

    def _recorded_address(self) -> tuple[Container | None, Published]:
        """The recorded container and its address, naming a caller's port that differs
        (which is never acted on)."""
        container = self._current_container()
        address = self._address(container)
        if address.url != self._address(None).url:
            logger.warning(
                "serving at the recorded %s; this shell's port %s differs (CT_SERVING_PORT)",
                address.url,
                self._serving.port,
            )
        return container, address

    def build_image(self) -> str:
        """Build (or reuse) the serving image; returns its id."""
        return ensure_serving_image(self.client, self._serving.docker_image)

    def admin(self) -> AdminClient:
        """The serving container's admin API (slots, routing, promote, rollback)."""
        return self._admin(self.url)

    def _admin(self, url: str) -> AdminClient:
        return AdminClient(url, self._token())

    def server_bundle(self, bundle_dir: Path) -> str:
        """How the server names `bundle_dir` in admin calls: its path under the bundles
        folder (mounted as the container's own). `DeploymentError` for a bundle elsewhere."""
        return bundle_name(self._paths.bundles, bundle_dir, self.name)

    def deploy(self, bundle_dir: Path) -> Endpoint:
        with exclusive(self.lock_file):
            return self._deploy(bundle_dir.resolve())

    def _deploy(self, bundle_dir: Path) -> Endpoint:
        """Serve `bundle_dir` on `url`: hot swap into the running container, else replace it."""
        name = self.server_bundle(bundle_dir)
        version = read_meta(bundle_dir).version
        image_id = self.build_image()
        current, address = self._recorded_address()
        url = address.url
        if (
            current is not None
            and self._takes_swaps(current, image_id, url)
            and self._swap_in(name, url)
        ):
            self._check_serves(version, url)
            container = current
        else:
            container = self._replace(current, image_id, name, version)
        return self._record(bundle_dir, container)

    def recreate(self) -> Endpoint:
        """Replace the serving container by a fresh one of the current serving image, serving
        the deployed bundle: what a deploy does when the image changed (the same short gap
        on the same address)."""
        with exclusive(self.lock_file):
            state = read_json(self.state_file)
            if state is None:
                raise DeploymentError("nothing is deployed: no container to recreate")
            bundle_dir = Path(state["bundle"])
            container = self._replace(
                self._recorded_address()[0],
                self.build_image(),
                self.server_bundle(bundle_dir),
                read_meta(bundle_dir).version,
            )
            return self._record(bundle_dir, container)

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

    def outdated(self) -> str | None:
        """Why the recorded container runs other server code than a deploy would start: its
        image is not the one built from the serving sources here (a platform upgrade). None
        when it is, or when no container exists."""
        container = self._current_container()
        if container is None:
            return None
        running = container.attrs["Image"]
        wanted = source_tag(self._serving.docker_image)
        try:
            current = self.client.images.get(wanted).id
        except NotFound:
            current = None
        if current == running:
            return None
        now = f"{wanted} ({current[:19]})" if current else f"{wanted}, not built yet"
        return (
            f"container {container.short_id} runs image {running[:19]}, built from other "
            f"serving sources than the image a deploy would run now: {now}"
        )

    def adopt(self, bundle_dir: Path) -> Endpoint:
        """Point the start-up symlink (and the state) at `bundle_dir`, which the container's
        stable slot serves now (promoted through the admin API): a restart serves it."""
        with exclusive(self.lock_file):
            container, _ = self._recorded_address()
            if container is None:
                raise DeploymentError("no serving container: nothing to adopt a bundle")
            return self._record(bundle_dir.resolve(), container)

    def _halt(self) -> None:
        container = self._current_container()
        if container is not None:
            _remove(container)

    # --- internals ---------------------------------------------------------------------

    def _record(self, bundle_dir: Path, container: Container) -> Endpoint:
        self._point_at(self.server_bundle(bundle_dir))
        url = self._address(container).url
        endpoint = Endpoint(
            url, read_meta(bundle_dir).version, self.name, utc_now(), str(bundle_dir)
        )
        write_json_atomic(
            self.state_file,
            {**endpoint.to_dict(), "container_id": container.id, "container": container.name},
        )
        return endpoint

    def _current_container(self) -> Container | None:
        state = read_json(self.state_file)
        if state is None:
            return None
        try:
            return self.client.containers.get(state["container_id"])
        except NotFound:
            return None

    def _takes_swaps(self, container: Container, image_id: str, url: str) -> bool:
        """Running the current image, healthy, answering at its `url`: a hot swap can serve
        the bundle."""
        return (
            container.attrs["Image"] == image_id
            and container.status == "running"
            and _health(container) == "healthy"
            and probe(url).alive
        )

    def _swap_in(self, bundle: str, url: str) -> bool:
        """Load and promote `bundle`; False when the admin API refuses our token (a container
        started with another one), which a replacement fixes."""
        try:
            self._admin(url).swap_in(Path(bundle))
        except AdminAuthError:
            return False
        return True

    def _replace(
        self, old: Container | None, image_id: str, bundle: str, version: str
    ) -> Container:
        """Start a fresh container serving `bundle` in place of `old`: on its address, with its
        API key (the spec's and the caller's when there is no `old`)."""
        previous_pointer = self._pointer()
        address = self._address(old)
        # Before the gap: on vfs this copies the image.
        new = self._create(image_id, address, self._api_key(old))
        self._point_at(bundle)
        if old is not None:
            old.stop(timeout=STOP_TIMEOUT_S)  # SIGTERM: uvicorn drains requests in flight
        try:
            self._start(new, address)
            self._wait_ready(new, version, address.url)
        except DeploymentError:
            _remove(new)
            if old is not None:
                # The old one goes back to serving what it served (best effort: it may be
                # the broken one being replaced).
                self._point_at(previous_pointer)
                with contextlib.suppress(APIError):
                    old.start()
            raise
        if old is not None:
            _remove(old)
        return new

    def _create(self, image_id: str, address: Published, api_key: str | None) -> Container:
        mounts = {str(self._bundles_dir()): {"bind": CONTAINER_BUNDLES, "mode": "ro"}}
        for folder in (self._paths.predictions, self._paths.feedback):
            folder.mkdir(parents=True, exist_ok=True)
            mounts[str(folder)] = {"bind": f"{CONTAINER_HOME}/{folder.name}", "mode": "rw"}
        # The monitoring figures the server exports on /metrics (serving.platform_figures).
        figures = self._paths.home / FIGURES_DIR
        figures.mkdir(parents=True, exist_ok=True)
        mounts[str(figures)] = {"bind": f"{CONTAINER_HOME}/{FIGURES_DIR.as_posix()}", "mode": "ro"}
        environment = {"CT_HOME": CONTAINER_HOME, self._serving.admin_token_env: self._token()}
        if api_key:
            environment[self._serving.api_key_env] = api_key
        name = f"ct-serving-{self._model_name}-{time.time_ns()}"
        try:
            return self.client.containers.create(
                image_id,
                command=server_arguments(
                    self._serving,
                    f"{CONTAINER_BUNDLES}/{SERVING_POINTER}",
                    "0.0.0.0",
                    CONTAINER_PORT_NUMBER,
                ),
                name=name,
                labels={ROLE_LABEL: "serving", HOME_LABEL: str(self._paths.home)},
                ports={CONTAINER_PORT: (address.host, address.port)},
                volumes=mounts,
                environment=environment,
                user=f"{os.getuid()}:{os.getgid()}",
                restart_policy={"Name": "unless-stopped"},
            )
        except APIError as exc:
            raise DeploymentError(f"cannot create container {name}: {exc.explanation}") from None

    def _start(self, container: Container, address: Published) -> None:
        try:
            container.start()
        except APIError as exc:
            raise DeploymentError(
                f"cannot start container {container.name} on port {address.port}: {exc.explanation}"
            ) from None

    def _api_key(self, old: Container | None) -> str | None:
        """The API key a container replacing `old` requires: `old`'s own (its clients hold
        it), whatever the caller's environment says; the caller's when there is no `old`."""
        variable = self._serving.api_key_env
        callers = os.environ.get(variable) or None
        if old is None:
            return callers
        recorded = _environment(old).get(variable) or None
        if callers != recorded:
            # Never the keys themselves: only that they differ.
            logger.warning(
                "the serving container keeps the API key it was started with; this shell's "
                "%s differs (stop the deployment, then deploy, to change it)",
                variable,
            )
        return recorded

    def _bundles_dir(self) -> Path:
        folder = self._paths.bundles
        folder.mkdir(parents=True, exist_ok=True)
        return folder.resolve()

    def _pointer(self) -> str | None:
        try:
            return os.readlink(self._bundles_dir() / SERVING_POINTER)
        except FileNotFoundError:
            return None

    def _point_at(self, bundle: str | None) -> None:
        """Replace the start-up symlink atomically (a new link renamed over the old)."""
        pointer = self._bundles_dir() / SERVING_POINTER
        if bundle is None:
            pointer.unlink(missing_ok=True)
            return
        staging = pointer.with_name(f"{SERVING_POINTER}.{os.getpid()}.new")
        staging.unlink(missing_ok=True)
        staging.symlink_to(bundle)
        os.replace(staging, pointer)

    def _token(self) -> str:
        return admin_token(self._paths.deployments, self._serving.admin_token_env)

    def _wait_ready(self, container: Container, version: str, url: str) -> None:
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
            time.sleep(0.2)
        wait_healthy(url, max(deadline - time.monotonic(), 5.0))
        self._check_serves(version, url)

    def _check_serves(self, version: str, url: str) -> None:
        # Someone else's server on our port would answer /ping just as well.
        served = self._admin(url).stable_version()
        if served != version:
            raise DeploymentError(f"{url} serves version {served}, expected {version}")


def _health(container: Container) -> str:
    container.reload()
    return container.attrs["State"].get("Health", {}).get("Status", "none")


def _published(container: Container) -> Published | None:
    """The host interface and port `container` was created to publish the server on."""
    bindings = (container.attrs["HostConfig"].get("PortBindings") or {}).get(CONTAINER_PORT)
    if not bindings:
        return None
    return Published(bindings[0].get("HostIp", ""), int(bindings[0]["HostPort"]))


def _environment(container: Container) -> dict[str, str]:
    """The environment `container` was created with (`KEY=value` entries)."""
    entries = container.attrs["Config"].get("Env") or []
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def _remove(container: Container) -> None:
    """Stop (SIGTERM, uvicorn drains, SIGKILL after the timeout) and delete the container."""
    try:
        container.stop(timeout=STOP_TIMEOUT_S)
        container.remove()
    except NotFound:
        pass
