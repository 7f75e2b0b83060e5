"""Roll the champion out to the spec's target, and tell whether the live endpoint serves it.

`roll_out` is what the `deployed_endpoint` asset runs. With `deployment.strategy: direct`
it exports the champion's bundle, deploys it (a hot swap when a server already runs), then
proves it answers with a smoke request built from the spec's schema. With any other
strategy the new version holds the `canary` alias (see `release_alias`) and `roll_out`
starts a progressive rollout of it beside the serving champion (`controller`); a first
deployment, with nothing deployed yet, has nothing to compare with and goes in directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from ct_platform.deployment.admin import AdminClient
from ct_platform.deployment.controller import RolloutController, RolloutError, active_rollout
from ct_platform.deployment.endpoint import Endpoint, smoke_request
from ct_platform.deployment.export import default_registry, export_champion_bundle
from ct_platform.deployment.state import admin_token
from ct_platform.deployment.targets import target_for
from ct_platform.governance.audit import BY_HAND
from ct_platform.registry.versions import CANARY, CHAMPION, release_alias
from ct_platform.settings import DatasetSpec, Spec

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry


def roll_out(
    spec: Spec,
    registry: ModelRegistry | None = None,
    *,
    run_id: str | None = None,
    actor: str = BY_HAND,
) -> Endpoint:
    """Deploy the champion (direct), or start the rollout of the `canary` version.

    Returns the endpoint as it serves now (for a progressive rollout: still the champion,
    with the new version in the candidate slot). `run_id`, `actor`: the Dagster run doing
    it and what started it (`governance.audit.run_actor`), for the audit lines.
    """
    registry = registry or default_registry(spec)
    canary = registry.alias_version(CANARY) if release_alias(spec) == CANARY else None
    if canary is None:
        return _deploy_alias(spec, registry, CHAMPION)
    if target_for(spec).status() is None or registry.alias_version(CHAMPION) is None:
        # Nothing was ever deployed to compare the new version with: it goes in at once. (A
        # server that is down or slow to answer is not that case: the champion is brought
        # back first, then the rollout starts beside it.)
        from ct_platform.governance.lifecycle import move_champion

        endpoint = _deploy_alias(spec, registry, CANARY)
        move_champion(
            registry,
            canary.version,
            actor=actor,
            how=f"first deployment: nothing served to roll {release_alias(spec)} out beside, so "
            "it went in directly",
            dagster_run_id=run_id,
        )
        registry.delete_alias(CANARY)
        return endpoint
    endpoint = _serving_champion(spec, registry)
    current = active_rollout(spec)
    if current is None or current.version != str(canary.version):
        bundle_dir = export_champion_bundle(spec, registry, alias=CANARY)
        admin = admin_client(spec, endpoint.url)
        controller = RolloutController(
            spec, admin, registry, run_id=run_id, driver=f"started by {actor}"
        )
        controller.begin(str(canary.version), bundle_dir.name)
    return endpoint


def _deploy_alias(spec: Spec, registry: ModelRegistry, alias: str) -> Endpoint:
    bundle_dir = export_champion_bundle(spec, registry, alias=alias)
    endpoint = target_for(spec).deploy(bundle_dir)
    smoke_request(endpoint.url, example_row(spec.dataset))
    return endpoint


def _serving_champion(spec: Spec, registry: ModelRegistry) -> Endpoint:
    """The endpoint, with the champion in its stable slot (deployed only if it is not)."""
    status = target_for(spec).status()
    champion = registry.alias_version(CHAMPION)
    if (
        status is not None
        and champion is not None
        and served_version(status.endpoint.url, spec.model.name) == str(champion.version)
    ):
        return status.endpoint
    return _deploy_alias(spec, registry, CHAMPION)


def admin_client(spec: Spec, url: str | None = None) -> AdminClient:
    """Admin API client for the deployed server (at `url`, else where the target says)."""
    if url is None:
        status = target_for(spec).status()
        if status is None:
            raise RolloutError("nothing is deployed: no server to talk to")
        url = status.endpoint.url
    token = admin_token(spec.paths.deployments, spec.serving.admin_token_env)
    return AdminClient(url, token)


def controller_for(
    spec: Spec,
    registry: ModelRegistry | None = None,
    *,
    run_id: str | None = None,
    driver: str = "",
) -> RolloutController:
    """The rollout controller on the deployed server and the spec's registry; `run_id` and
    `driver` name who acts on its audit lines (see `RolloutController`)."""
    registry = registry or default_registry(spec)
    return RolloutController(spec, admin_client(spec), registry, run_id=run_id, driver=driver)


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
