"""dagster-docker's `DockerRunLauncher` with an engine request timeout a slow engine can meet.

dagster-docker talks to the engine with docker-py's default of 60 s per request. Creating a
container under the vfs storage driver copies the image's whole file tree (2 GB for the
platform image): on a loaded machine that took longer, the launch failed with `ReadTimeout
... (read timeout=60)` and the run failed with it although the engine was still creating
its container. Same launcher, same settings, plus `engine_timeout_seconds` (default 600, as
the compose files' `COMPOSE_HTTP_TIMEOUT`). The daemon imports it from `dagster.yaml`
(`module: ct_platform.defs.run_launcher`); the code location never does.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import docker
from dagster_docker import DockerRunLauncher
from dagster_docker.container_context import DockerContainerContext
from dagster_docker.utils import DOCKER_CONFIG_SCHEMA

DEFAULT_ENGINE_TIMEOUT_SECONDS = 600


class PatientDockerRunLauncher(DockerRunLauncher):
    """`DockerRunLauncher` whose Docker engine requests wait `engine_timeout_seconds`."""

    def __init__(
        self, engine_timeout_seconds: int = DEFAULT_ENGINE_TIMEOUT_SECONDS, **config: Any
    ) -> None:
        self.engine_timeout_seconds = engine_timeout_seconds
        super().__init__(**config)

    @classmethod
    def config_type(cls) -> dict[str, dg.Field]:
        return {
            **DOCKER_CONFIG_SCHEMA,
            "engine_timeout_seconds": dg.Field(
                int,
                is_required=False,
                default_value=DEFAULT_ENGINE_TIMEOUT_SECONDS,
                description="Seconds each Docker engine request may take (docker-py: 60).",
            ),
        }

    def _get_client(self, container_context: DockerContainerContext) -> docker.DockerClient:
        client = super()._get_client(container_context)
        client.api.timeout = self.engine_timeout_seconds
        return client
