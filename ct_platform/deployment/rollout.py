"""Roll the champion out to the spec's target, and tell whether the live endpoint serves it.

`roll_out` is what the `deployed_endpoint` asset runs. With `deployment.strategy: direct`
it exports the champion's bundle and compares it with what the endpoint serves (recorded
bundle, health, the version the server reports); only when they differ does it deploy (a
hot swap when a server already runs, a restart when it is dead or hung), prove the result
answers with a smoke request built from the spec's schema, and write one audit line saying
what it found. With any other
strategy the new version holds the `canary` alias (see `release_alias`) and `roll_out`
starts a progressive rollout of it beside the serving champion (`controller`); a first
deployment, with no version ever champion, has nothing to compare with and goes in directly.
"Ever champion" is read from the registry, never from whether a server runs now: a stopped
or lost server is restarted on the champion, and the new version's rollout starts beside it.
One rollout at a time: a version that takes `canary` while another version's rollout is
active waits (that rollout is never cut short for it); once it ended, the
`endpoint_watchdog` requests the `deployed_endpoint` run that starts the waiting one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ct_platform.deployment.admin import AdminClient
from ct_platform.deployment.controller import (
    Rollout,
    RolloutController,
    RolloutError,
    active_rollout,
)
from ct_platform.deployment.endpoint import Endpoint, smoke_request
from ct_platform.deployment.export import default_registry, export_champion_bundle
from ct_platform.deployment.state import admin_token
from ct_platform.deployment.targets import DeploymentTarget, target_for
from ct_platform.governance.audit import BY_HAND
from ct_platform.registry.versions import CANARY, CHAMPION, release_alias
from ct_platform.serving.bundle import read_meta
from ct_platform.settings import DatasetSpec, Spec

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry


@dataclass(frozen=True)
class RollOut:
    """What `roll_out` left serving, and what it did.

    `changed`: something was deployed or a rollout started (each wrote its audit line);
    `reason`: what was compared and what it led to, the deployment line's reason; when
    nothing changed, why nothing needed doing.
    """

    endpoint: Endpoint
    changed: bool
    reason: str


def roll_out(
    spec: Spec,
    registry: ModelRegistry | None = None,
    *,
    run_id: str | None = None,
    actor: str = BY_HAND,
    why: str = "",
) -> RollOut:
    """Bring the champion to the endpoint (direct), or start the rollout of `canary`.

    Acts only on what it finds: the endpoint's recorded bundle, its health and the version
    the server itself reports are compared with the champion's exported bundle, and a
    healthy server already serving that bundle is left alone (no deployment, no audit line:
    e.g. a rerun after a rollout completed, which already moved that bundle into stable).
    Every deployment it makes is one audit line whose reason is what it found ("the server
    at ... did not answer (server process is gone; its target recorded version 4):
    restarted with version 4 (<bundle>)"). `run_id`,
    `actor`: the Dagster run doing it and what started it (`governance.audit.run_actor`);
    `why`: the caller's reason, put first ("rollback from version 8").

    Returns the endpoint as it serves now (for a progressive rollout: still the champion,
    with the new version in the candidate slot).
    """
    registry = registry or default_registry(spec)
    audit = _Audit(spec.model.name, actor, run_id, why)
    canary = registry.alias_version(CANARY) if release_alias(spec) == CANARY else None
    if canary is None:
        return _converge(spec, registry, CHAMPION, audit)
    if registry.alias_version(CHAMPION) is None:
        return _first_deployment(spec, registry, canary.version, audit)
    # A champion was deployed before: it is what serves, so it is brought back first if the
    # server is down or its record lost (a stopped demo), and the new version waits for its
    # rollout beside it, never promoted for want of a running server.
    stable = _converge(spec, registry, CHAMPION, audit)
    current = active_rollout(spec)
    if current is not None and current.version == str(canary.version):
        return RollOut(stable.endpoint, stable.changed, f"rollout {current.id} is {current.status}")
    if current is not None:  # never cut a rollout short for the next one: it waits
        return RollOut(stable.endpoint, stable.changed, queued_behind(current, canary.version))
    bundle_dir = export_champion_bundle(spec, registry, alias=CANARY)
    admin = admin_client(spec, stable.endpoint.url)
    controller = RolloutController(
        spec, admin, registry, run_id=run_id, driver=f"started by {actor}"
    )
    started = controller.begin(str(canary.version), bundle_dir.name)
    return RollOut(stable.endpoint, True, started.history[-1]["reason"])


def _first_deployment(spec: Spec, registry: ModelRegistry, version: int, audit: _Audit) -> RollOut:
    """No version was ever champion: nothing to roll `version` out beside, so it goes in
    directly and takes `champion` (its promotion line says so; `canary` is dropped).

    Raises `RolloutError`, changing nothing, when the audit log records a champion (the
    alias was removed since): `version` would otherwise skip its rollout."""
    from ct_platform.governance.audit import champion_history, read_events
    from ct_platform.governance.lifecycle import move_champion

    served = champion_history(read_events(), spec.model.name)
    if served:
        raise RolloutError(
            f"no version holds `champion`, but the audit log records version {served[-1]} as "
            f"the last champion (champion history {served}): version {version} is not rolled "
            f"out without a champion to roll it out beside; set `champion` back on version "
            f"{served[-1]} (MLflow) and deploy again"
        )
    done = _converge(spec, registry, CANARY, audit)
    _, note = move_champion(
        registry,
        version,
        spec,
        actor=audit.actor,
        how=f"first deployment: no version was champion yet, so there was none to roll "
        f"{release_alias(spec)} out beside and it went in directly",
        dagster_run_id=audit.run_id,
    )
    registry.drop_alias_of(CANARY, version)
    return RollOut(done.endpoint, done.changed, "; ".join(filter(None, [done.reason, note])))


def queued_behind(current: Rollout, version: int) -> str:
    """What happens to `version` (holding `canary`) while `current` rolls out."""
    return (
        f"rollout {current.id} ({current.label} of version {current.version}) is "
        f"{current.status}: version {version}'s rollout starts after it ends (completes, "
        "is rolled back, or `ct rollout promote|abort`); the endpoint_watchdog then starts it"
    )


@dataclass(frozen=True)
class _Audit:
    """Who acts, for the deployment lines `_converge` writes."""

    model: str
    actor: str
    run_id: str | None
    why: str


def _converge(spec: Spec, registry: ModelRegistry, alias: str, audit: _Audit) -> RollOut:
    """Serve the bundle of the version holding `alias`, unless the server already does."""
    from ct_platform.governance.lifecycle import record_deployment

    bundle_dir = export_champion_bundle(spec, registry, alias=alias)
    version = read_meta(bundle_dir).version
    target = target_for(spec)
    finding = Finding.of(target, spec.model.name, bundle_dir, f"the {alias} is version {version}")
    if finding.endpoint is not None and not finding.needs_deploy:
        return RollOut(finding.endpoint, False, finding.text)
    endpoint = target.deploy(bundle_dir)
    smoke_request(endpoint.url, example_row(spec.dataset))
    did = "restarted with" if finding.down else "deployed"
    reason = f"{finding.text}: {did} version {version} ({bundle_dir.name})"
    if audit.why:
        reason = f"{audit.why}; {reason}"
    record_deployment(
        audit.model,
        int(version),
        f"{endpoint.target} {endpoint.url}",
        actor=audit.actor,
        reason=reason,
        dagster_run_id=audit.run_id,
        from_version=finding.served_before,
    )
    return RollOut(endpoint, True, reason)


@dataclass(frozen=True)
class Finding:
    """What a target's endpoint serves, compared with the bundle it should serve.

    `text` says what was compared and found ("the server at ... did not answer (server
    process is gone; its target recorded version 4)", "... already serves the champion,
    version 6, from <bundle>: nothing to deploy");
    `served_before`: the version serving before any deploy (the server's own answer, else
    the recorded one; None: the target records no deployment); `down`: the server did not answer.
    """

    endpoint: Endpoint | None
    needs_deploy: bool
    text: str
    served_before: int | None
    down: bool = False

    @classmethod
    def of(cls, target: DeploymentTarget, model: str, bundle_dir: Path, wanted: str) -> Finding:
        """`bundle_dir` should serve; `wanted` names it ("the champion is version 6")."""
        status = target.status()
        if status is not None and not status.healthy:
            status = target.status()  # once more: a loaded box may answer the second ping
        if status is None:
            return cls(None, True, f"the {target.name} target records no deployment", None)
        recorded = status.endpoint
        url, version = recorded.url, read_meta(bundle_dir).version
        if not status.healthy:
            text = (
                f"the server at {url} did not answer ({status.detail}; its {target.name} target "
                f"recorded version {recorded.version})"
            )
            return cls(recorded, True, text, _int(recorded.version), down=True)
        served = served_version(url, model)
        if served is None:
            text = f"{url} answers /ping but not GET /v2/models/{model} (which version it serves)"
            return cls(recorded, True, text, _int(recorded.version))
        if served != version:
            return cls(recorded, True, f"{url} served version {served}; {wanted}", _int(served))
        if Path(recorded.bundle).resolve() != bundle_dir.resolve():
            text = f"{url} serves version {served} from {recorded.bundle}, not from {bundle_dir}"
            return cls(recorded, True, f"{text} ({wanted})", _int(served))
        outdated = target.outdated()
        if outdated is not None:
            text = f"{url} serves version {served} from {bundle_dir.name}, but {outdated}"
            return cls(recorded, True, f"{text} ({wanted})", _int(served))
        text = f"{url} already serves version {served} from {bundle_dir.name} ({wanted})"
        return cls(recorded, False, f"{text}: nothing to deploy", _int(served))


def _int(version: str | None) -> int | None:
    return int(version) if version and version.isdigit() else None


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
    # The target's own words on the server ("server process is gone", "pid 4242, not ready").
    detail: str = ""
    # Alive but refusing for load (see `EndpointStatus.busy`): never restarted for it.
    busy: bool = False

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
            return "no deployment is recorded"
        if not self.healthy:
            return f"{self.url} does not answer ({self.detail})"
        if self.busy:
            return f"{self.url} is alive but busy ({self.detail})"
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
    return LiveStatus(url, status.healthy, served, champion_version, status.detail, status.busy)


def served_version(url: str, model_name: str) -> str | None:
    """The model version the server itself reports (Open Inference Protocol metadata)."""
    try:
        response = httpx.get(f"{url}/v2/models/{model_name}", timeout=5.0)
        response.raise_for_status()
        versions = response.json().get("versions") or [None]
    except (httpx.HTTPError, ValueError):
        return None
    return versions[-1]
