"""One interface over the deployment targets, and the choice between them.

`target_for(spec)` picks `serving.target` from the spec. Every target keeps what it needs
to find its server again under `$CT_HOME/deployments/`, so each call (another Dagster
run, the CLI) sees the deployment the previous one made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ct_platform.deployment.container import DockerTarget
from ct_platform.deployment.endpoint import Endpoint, EndpointStatus
from ct_platform.deployment.local import LocalTarget
from ct_platform.deployment.remote import EndpointTarget
from ct_platform.settings import Spec


class DeploymentTarget(Protocol):
    name: str

    def deploy(self, bundle_dir: Path) -> Endpoint:
        """Serve `bundle_dir`; return once the new version answers requests."""
        ...

    def status(self) -> EndpointStatus | None:
        """The current deployment and whether it is healthy; None when nothing is deployed."""
        ...

    def adopt(self, bundle_dir: Path) -> Endpoint:
        """Record `bundle_dir` as what the running server's stable slot serves now (a rollout
        promoted it through the admin API): a restarted server starts with it."""
        ...

    def outdated(self) -> str | None:
        """Why the running server would be replaced even serving the right bundle (the docker
        target: its image was built from other serving sources); None when nothing says so."""
        ...

    def stop(self) -> None:
        """Stop serving and forget the deployment."""
        ...

    def halt(self) -> None:
        """Stop serving but keep the record of what the stable slot served (a stopped demo):
        the next deploy or `ensure_running` finds the server down and restarts that bundle."""
        ...


def target_for(spec: Spec) -> DeploymentTarget:
    if spec.serving.target == "docker":
        return DockerTarget(spec)
    if spec.serving.target == "endpoint":
        return EndpointTarget(spec)
    return LocalTarget(spec)


def ensure_running(target: DeploymentTarget) -> Endpoint | None:
    """Bring a dead or hung deployment back with the same bundle; None if none was made.

    For a sensor or schedule: a server that crashed (or a container that stopped) since
    the last deploy is replaced, a healthy one is left alone.
    """
    status = target.status()
    if status is None:
        return None
    if status.healthy:
        return status.endpoint
    return target.deploy(Path(status.endpoint.bundle))
