"""Roll the champion out to the spec's target, and tell whether the live endpoint serves it.

`roll_out` is what the `deployed_endpoint` asset runs: export the champion's bundle, deploy
it (a hot swap when a server already runs), then prove it answers with a smoke request
built from the spec's schema, so it needs no data at hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from ct_platform.deployment.endpoint import Endpoint, smoke_request
from ct_platform.deployment.export import export_champion_bundle
from ct_platform.deployment.targets import target_for
from ct_platform.registry.versions import CHAMPION
from ct_platform.settings import DatasetSpec, Spec

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry


def roll_out(spec: Spec, registry: ModelRegistry | None = None) -> Endpoint:
    bundle_dir = export_champion_bundle(spec, registry)
    endpoint = target_for(spec).deploy(bundle_dir)
    smoke_request(endpoint.url, example_row(spec.dataset))
    return endpoint


def example_row(dataset: DatasetSpec) -> dict[str, Any]:
    """A row the contract accepts: each numeric at its lower bound, each category its first."""
    row: dict[str, Any] = {}
    for name in dataset.feature_columns:
        column = dataset.columns[name]
        if column.is_numeric:
            row[name] = column.min if column.min is not None else 0.0
        else:
            row[name] = column.categories[0] if column.categories else "unknown"
    return row


@dataclass(frozen=True)
class LiveStatus:
    url: str | None
    healthy: bool
    served_version: str | None
    champion_version: str | None

    @property
    def serves_champion(self) -> bool:
        return (
            self.healthy
            and self.champion_version is not None
            and (self.served_version == self.champion_version)
        )

    def figures(self) -> dict[str, str | bool]:
        return {
            "url": self.url or "",
            "healthy": self.healthy,
            "served_version": self.served_version or "",
            "champion_version": self.champion_version or "",
        }

    def describe(self) -> str:
        if self.url is None:
            return "nothing is deployed yet"
        if not self.healthy:
            return f"{self.url} does not answer"
        if self.serves_champion:
            return f"{self.url} serves the champion, version {self.champion_version}"
        if self.champion_version is None:
            return (
                f"{self.url} serves version {self.served_version}, but MLflow has no "
                "champion (alias removed or version deleted): the served bundle is stale"
            )
        return (
            f"{self.url} serves version {self.served_version}, "
            f"but the champion is version {self.champion_version}: the served bundle is stale"
        )


def live_endpoint_status(spec: Spec, registry: ModelRegistry) -> LiveStatus:
    status = target_for(spec).status()
    champion = registry.alias_version(CHAMPION)
    champion_version = str(champion.version) if champion else None
    if status is None:
        return LiveStatus(None, False, None, champion_version)
    url = status.endpoint.url
    served = served_version(url, spec.model.name)
    return LiveStatus(url, status.healthy, served, champion_version)


def served_version(url: str, model_name: str) -> str | None:
    """The model version the server itself reports (Open Inference Protocol metadata)."""
    try:
        response = httpx.get(f"{url}/v2/models/{model_name}", timeout=5.0)
        response.raise_for_status()
        versions = response.json().get("versions") or [None]
    except (httpx.HTTPError, ValueError):
        return None
    return versions[-1]
