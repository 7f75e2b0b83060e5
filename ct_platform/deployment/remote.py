"""The `endpoint` target: a model server that something else runs, reached at a URL.

In the compose stack the `model-server` service is the endpoint: Docker starts and restarts
it, while `deployed_endpoint` runs in a short-lived run container. A server started there
(the `local` target) would die with that container, and the service would go on serving the
old version without a word. This target never starts, restarts or stops a server: it drives
the running one through its admin API only, as the other targets drive their own servers. A
deploy loads the bundle into the candidate slot and promotes it (one reference swap, no
request fails, the port never closes); the rollout strategies (canary, blue-green, shadow,
A/B) use the same API through the target's URL.

What it needs from the deployment:
- the server sees the platform's `$CT_HOME/bundles` as its own `$CT_HOME/bundles` (a shared
  volume): the admin API loads a bundle by its name there;
- both sides hold the same admin token: the variable `serving.admin_token_env`, else the
  shared `$CT_HOME/deployments/admin-token` (`python -m ct_platform.deployment admin-token`
  prints it, creating it once, for the server's start command);
- the server starts on its own with the champion (`ct serve`), so a restarted server serves
  the champion, as the registry policy of `controller` wants.

A server that does not answer is waited for (`READY_TIMEOUT_S`: its owner may be restarting
it), then the deploy fails naming the URL; the state under `$CT_HOME/deployments/endpoint.json`
records what the stable slot serves.
"""

from __future__ import annotations

from pathlib import Path

from ct_platform.deployment.admin import AdminClient
from ct_platform.deployment.endpoint import (
    DeploymentError,
    Endpoint,
    EndpointStatus,
    probed_status,
    utc_now,
    wait_healthy,
)
from ct_platform.deployment.state import admin_token, exclusive, read_json, write_json_atomic
from ct_platform.serving.bundle import read_meta
from ct_platform.settings import Spec

# Docker restarts a server that exited with a growing delay (up to a minute), and a start
# imports scikit-learn and onnxruntime and may export the champion first: minutes when busy.
READY_TIMEOUT_S = 600.0


def bundle_name(bundles_root: Path, bundle_dir: Path, target: str) -> str:
    """How a server sharing `bundles_root` names `bundle_dir` in admin calls: its path under
    that folder. `DeploymentError` for a bundle elsewhere, which the server cannot see."""
    root = bundles_root.resolve()
    directory = bundle_dir.resolve()
    if directory == root or not directory.is_relative_to(root):
        raise DeploymentError(
            f"bundle {bundle_dir} is not under {root}: the {target} target serves only "
            "bundles in $CT_HOME/bundles (the folder its server shares)"
        )
    return str(directory.relative_to(root))


class EndpointTarget:
    name = "endpoint"

    def __init__(self, spec: Spec) -> None:
        if spec.serving.endpoint_url is None:
            raise DeploymentError("serving.target 'endpoint' needs serving.endpoint_url")
        self.url = spec.serving.endpoint_url.rstrip("/")
        self._serving = spec.serving
        self._paths = spec.paths
        self.state_file = spec.paths.deployments / "endpoint.json"
        self.lock_file = spec.paths.deployments / "endpoint.lock"

    def admin(self) -> AdminClient:
        """The server's admin API (slots, routing, promote, rollback)."""
        token = admin_token(self._paths.deployments, self._serving.admin_token_env)
        return AdminClient(self.url, token)

    def deploy(self, bundle_dir: Path) -> Endpoint:
        """Hot-swap `bundle_dir` into the running server; return once it serves it.

        Raises `DeploymentError` when the server does not answer within `READY_TIMEOUT_S`,
        refuses the admin token, cannot load the bundle, or serves another version after.
        """
        with exclusive(self.lock_file):
            name = bundle_name(self._paths.bundles, bundle_dir, self.name)
            version = read_meta(bundle_dir).version
            try:
                wait_healthy(self.url, READY_TIMEOUT_S)
            except DeploymentError as exc:
                raise DeploymentError(
                    f"{exc}: the endpoint target never starts a server; start the one at "
                    f"{self.url} (compose: the model-server service)"
                ) from None
            admin = self.admin()
            admin.swap_in(Path(name))
            served = admin.stable_version()
            if served != version:
                raise DeploymentError(f"{self.url} serves version {served}, expected {version}")
            return self._record(bundle_dir)

    def status(self) -> EndpointStatus | None:
        state = read_json(self.state_file)
        if state is None:
            return None
        endpoint = Endpoint.from_state(state)
        status = probed_status(endpoint, f"server at {endpoint.url}")
        if status.healthy:
            return status
        detail = "not answering (its owner runs it, not this target)"
        return EndpointStatus(endpoint, False, f"server at {endpoint.url} {detail}")

    def adopt(self, bundle_dir: Path) -> Endpoint:
        """Record `bundle_dir` as what the stable slot serves (a rollout promoted it)."""
        with exclusive(self.lock_file):
            if read_json(self.state_file) is None:
                raise DeploymentError("nothing is deployed: no server serves a bundle to adopt")
            return self._record(bundle_dir)

    def outdated(self) -> str | None:
        """None: the server is its owner's to upgrade."""
        return None

    def stop(self) -> None:
        """Forget the deployment. The server keeps running: it is its owner's to stop."""
        with exclusive(self.lock_file):
            self.state_file.unlink(missing_ok=True)

    def halt(self) -> None:
        """Nothing: the server is its owner's to stop, and the record stays."""

    def _record(self, bundle_dir: Path) -> Endpoint:
        directory = bundle_dir.resolve()
        endpoint = Endpoint(
            self.url, read_meta(directory).version, self.name, utc_now(), str(directory)
        )
        write_json_atomic(self.state_file, endpoint.to_dict())
        return endpoint
