"""Roll the champion bundle out to the spec's target, and say what the live endpoint serves.

What the Dagster `deployed_endpoint` asset and its `serves_champion` check call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_platform.deployment.admin import AdminClient
from ct_platform.deployment.endpoint import DeploymentError, Endpoint, smoke_request
from ct_platform.deployment.export import pointed_bundle
from ct_platform.deployment.state import admin_token
from ct_platform.deployment.targets import target_for
from ct_platform.settings import Spec

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry


def roll_out(spec: Spec, bundle_dir: Path | None = None) -> Endpoint:
    """Deploy `bundle_dir` (default: the champion bundle) and smoke-test the endpoint."""
    bundle_dir = bundle_dir or pointed_bundle(spec)
    if bundle_dir is None:
        raise DeploymentError("no champion bundle to deploy: export the champion first")
    endpoint = target_for(spec).deploy(bundle_dir)
    smoke_request(endpoint.url, smoke_row(spec), api_key=os.environ.get(spec.serving.api_key_env))
    return endpoint


def smoke_row(spec: Spec) -> dict[str, Any]:
    """One plausible row from the spec alone: mid-range numbers, the first category."""
    row: dict[str, Any] = {}
    for name in spec.dataset.feature_columns:
        column = spec.dataset.columns[name]
        if not column.is_numeric:
            row[name] = column.categories[0] if column.categories else "unknown"
        else:
            low = column.min if column.min is not None else (column.max or 0.0)
            middle = (low + column.max) / 2 if column.max is not None else low
            row[name] = int(middle) if column.type == "int" else middle
    return row


@dataclass(frozen=True)
class LiveEndpointStatus:
    deployed: bool
    healthy: bool
    url: str | None
    served_version: str | None
    champion_version: str | None
    detail: str

    @property
    def serves_champion(self) -> bool:
        return (
            self.healthy
            and self.champion_version is not None
            and self.served_version == self.champion_version
        )

    def figures(self) -> dict[str, str | bool | None]:
        return {
            "deployed": self.deployed,
            "healthy": self.healthy,
            "url": self.url,
            "served_version": self.served_version,
            "champion_version": self.champion_version,
        }

    def describe(self) -> str:
        if not self.deployed:
            return "nothing is deployed"
        if self.serves_champion:
            return f"{self.url} serves the champion, version {self.served_version}"
        return (
            f"{self.url} serves version {self.served_version}, champion is "
            f"{self.champion_version} ({self.detail})"
        )


def live_endpoint_status(spec: Spec, registry: ModelRegistry) -> LiveEndpointStatus:
    """Ask the live server itself (admin API) which version it serves, not our state file."""
    champion = registry.alias_version("champion")
    champion_version = None if champion is None else str(champion.version)
    status = target_for(spec).status()
    if status is None:
        return LiveEndpointStatus(False, False, None, None, champion_version, "not deployed")
    url = status.endpoint.url
    token = admin_token(spec.paths.deployments, spec.serving.admin_token_env)
    served = AdminClient(url, token).stable_version() if status.healthy else None
    return LiveEndpointStatus(True, status.healthy, url, served, champion_version, status.detail)
