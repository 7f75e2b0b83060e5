"""The endpoint watchdog: the live endpoint serves the champion, or a run is requested to fix it.

A tick reads the target's state, pings the server for the version it serves and reads the
registry's champion alias; the deployment itself happens in a run of `deployed_endpoint`, so
the sensor stays light and every repair shows in the UI. It repairs three states:

- the server is dead or hung: it is brought back;
- a champion exists but no deployment is recorded, or the server serves another version (the
  deployment after a promotion never ran, failed to launch, or a CI run promoted elsewhere):
  the champion is deployed;
- a deployment run is already queued or running: the tick waits for it.

While a progressive rollout is active the watchdog stands aside (a redeploy would replace
the candidate under analysis); the rollout ends itself if its server loses the version.
Once none is active, a version still holding `canary` (approved while another version
rolled out: its rollout waits) gets the `deployed_endpoint` run that starts its rollout.
A server that is alive but busy (at its connection cap: /ping 200 with `x-ct-busy`; or
/ping 429/503) is left alone, never restarted, and the tick says so.

Right after a promotion, automation deploys the new bundle; the watchdog gives it
`automation_grace_seconds` before stepping in, so one promotion is one deployment.
"""

import time
from typing import TYPE_CHECKING

import dagster as dg

from ct_platform.defs.resources import MlflowResource
from ct_platform.defs.run_workers import dead_run_reason
from ct_platform.defs.serving.assets import DEPLOYED_ENDPOINT, MODEL_BUNDLE, REPAIR_TAG
from ct_platform.settings import Spec

if TYPE_CHECKING:
    from ct_platform.deployment.rollout import LiveStatus
    from ct_platform.registry.mlflow_registry import ModelRegistry

# One repair request per deployment per window: a server that keeps dying is not
# restarted in a tight loop (the failing runs say why).
REVIVAL_WINDOW_SECONDS = 300
AUTOMATION_GRACE_SECONDS = 120
UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def deployment_in_flight(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """A queued or running run that materializes `deployed_endpoint`, if any; one Dagster
    shows as STARTED whose processes are gone (killed with -9) is not running."""
    runs = instance.get_runs(dg.RunsFilter(statuses=UNFINISHED), limit=100)
    deploying = (run for run in runs if DEPLOYED_ENDPOINT in (run.asset_selection or ()))
    return next((run for run in deploying if dead_run_reason(instance, run) is None), None)


def seconds_since_export(instance: dg.DagsterInstance, version: str) -> float | None:
    """Age of the latest `model_bundle` of champion `version`; None if none was built here."""
    event = instance.get_latest_materialization_event(MODEL_BUNDLE)
    if event is None or event.asset_materialization is None:
        return None
    exported = event.asset_materialization.metadata.get("version")
    if exported is None or str(exported.value) != version:
        return None
    return time.time() - event.timestamp


def repair_request(reason: str, key: str) -> dg.RunRequest:
    window = int(time.time() // REVIVAL_WINDOW_SECONDS)
    return dg.RunRequest(
        run_key=f"{key}-{window}", asset_selection=[DEPLOYED_ENDPOINT], tags={REPAIR_TAG: reason}
    )


def build_endpoint_watchdog(
    spec: Spec, automation_grace_seconds: float = AUTOMATION_GRACE_SECONDS
) -> dg.SensorDefinition:
    @dg.sensor(
        name="endpoint_watchdog",
        asset_selection=[DEPLOYED_ENDPOINT],
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Deploys the champion when the live endpoint is dead or hung, serves "
        "another version, or no deployment is recorded while a champion exists.",
    )
    def endpoint_watchdog(
        context: dg.SensorEvaluationContext, mlflow: MlflowResource
    ) -> dg.SensorResult:
        from ct_platform.deployment.controller import active_rollout
        from ct_platform.deployment.rollout import live_endpoint_status

        rollout = active_rollout(spec)
        if rollout is not None:  # its own analysis ends it if the server loses the version
            return skip(f"rollout {rollout.id} is {rollout.status}: the rollout_sensor drives it")
        registry = mlflow.registry(spec)
        status = live_endpoint_status(spec, registry)
        running = deployment_in_flight(context.instance)
        if running is not None:
            return skip(f"deployment run {running.run_id[:8]} is {running.status.value}")
        if status.busy:  # alive: a restart would drop every request it holds
            return skip(f"{status.describe()}: left alone")
        waiting = waiting_rollout(spec, registry)
        if waiting is not None and status.healthy:
            return start_waiting_rollout(context, status, waiting, automation_grace_seconds)
        if status.url is not None and not status.healthy:
            reason = status.describe()
            return dg.SensorResult(run_requests=[repair_request(reason, f"revive-{status.url}")])
        champion = status.champion_version
        if champion is None or status.serves_champion:
            no_champion = "" if champion else " (no champion yet: nothing to deploy)"
            return skip(status.describe() + no_champion)
        age = seconds_since_export(context.instance, champion)
        if age is not None and age < automation_grace_seconds:
            return skip(
                f"{status.describe()}; version {champion} was exported {age:.0f} s ago: "
                f"automation deploys it (watchdog steps in after {automation_grace_seconds:g} s)"
            )
        request = repair_request(status.describe(), f"deploy-champion-{champion}")
        return dg.SensorResult(run_requests=[request])

    return endpoint_watchdog


def waiting_rollout(spec: Spec, registry: "ModelRegistry") -> str | None:
    """The version holding `canary` with no rollout active: approved while another version
    rolled out, its rollout waits to start (None: none waits)."""
    from ct_platform.registry.versions import CANARY, release_alias

    if release_alias(spec) != CANARY:
        return None
    canary = registry.alias_version(CANARY)
    return str(canary.version) if canary is not None else None


def start_waiting_rollout(
    context: dg.SensorEvaluationContext, status: "LiveStatus", version: str, grace: float
) -> dg.SensorResult:
    """A `deployed_endpoint` run that starts `version`'s rollout, after automation's grace."""
    age = seconds_since_export(context.instance, version)
    if age is not None and age < grace:
        return skip(
            f"version {version} holds `canary` and was exported {age:.0f} s ago: automation "
            f"starts its rollout (watchdog steps in after {grace:g} s)"
        )
    reason = (
        f"{status.describe()}; version {version} holds `canary` and no rollout is active "
        "(approved while another version rolled out): its rollout starts"
    )
    return dg.SensorResult(run_requests=[repair_request(reason, f"start-rollout-v{version}")])


def skip(reason: str) -> dg.SensorResult:
    return dg.SensorResult(skip_reason=reason)
