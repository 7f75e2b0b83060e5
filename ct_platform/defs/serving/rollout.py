"""The progressive rollout in Dagster: its asset, the sensor that advances it, a control job.

- `rollout` (asset): one materialization per analysis, with the strategy, step, weight and
  the analysis figures and verdict as numeric metadata, so the UI plots them over time.
  Materializing it by hand runs one analysis at once.
- `rollout_sensor`: every tick (each analysis interval, between 5 and 60 s) reads
  `$CT_HOME/rollouts/current.json`; when the current period is over it runs one analysis
  (a GET of the server's per-slot totals, and a routing call when the step moves). It then
  reports every history entry its cursor has not reported yet as a `rollout`
  materialization, so an analysis whose tick never reached the daemon (a code server
  missing its gRPC deadline on a busy box) still shows up at the next tick. It never
  waits: the rollout's pace is `deployment.analysis.interval_seconds`.
- `rollout_control` (job): pause, resume, promote now or abort from the UI (launchpad
  config `{"ops": {"control_rollout": {"config": {"action": "abort"}}}}`), like
  `ct rollout pause|resume|promote|abort`.
"""

import json
import math
import time
from typing import TYPE_CHECKING, Any

import dagster as dg

from ct_platform.defs.metadata import numbers
from ct_platform.defs.resources import MlflowResource
from ct_platform.defs.serving.assets import DEPLOYED_ENDPOINT
from ct_platform.settings import Spec

if TYPE_CHECKING:
    from ct_platform.deployment.controller import Rollout, RolloutStore

ROLLOUT = dg.AssetKey("rollout")
ROLLOUT_SENSOR = "rollout_sensor"
# The sensor looks once per analysis interval, within these bounds (a tick is one file read).
SENSOR_INTERVAL_SECONDS = (5, 60)


class RolloutControlConfig(dg.Config):
    """`action`: pause | resume | promote | abort; `reason`: recorded with the action."""

    action: str
    reason: str = ""


def rollout_metadata(
    rollout: "Rollout | None", index: int | None = None
) -> dict[str, dg.MetadataValue]:
    """The state as metadata: numbers for the plots (weight, step, figures), text for the rest.

    `index`: one entry of `rollout.history` (by default the last): its verdict and figures,
    and the step, weight and status the rollout had right after it (what the next entry
    started from), so a report that comes late reads as it would have on time.
    """
    if rollout is None:
        return {"status": dg.MetadataValue.text("no rollout yet")}
    history = rollout.history
    index = len(history) - 1 if index is None else index
    entry = history[index] if history else {}
    after = history[index + 1] if index + 1 < len(history) else None
    if after is None:
        step, weight, status = rollout.step, rollout.weight, rollout.status
    else:
        paused = entry.get("verdict") == "pause"
        step, weight, status = after["step"], after["weight"], "paused" if paused else "running"
    state: dict[str, Any] = {
        "rollout_id": rollout.id,
        "strategy": rollout.strategy,
        "version": rollout.version,
        "previous_version": rollout.previous_version or "",
        "status": status,
        "phase": rollout.phase,
        "step": step,
        "weight_percent": 100.0 * weight,
        "failed_checks": rollout.failed_checks,
        "verdict": entry.get("verdict", ""),
        "reason": entry.get("reason", ""),
    }
    if rollout.required_samples is not None:
        state["required_samples"] = rollout.required_samples
    metadata = numbers("", state)
    metadata.update(numbers("analysis", entry.get("figures", {})))
    if "period" in entry:  # the two snapshots the figures are the difference of
        metadata["analysis_period"] = dg.MetadataValue.json(entry["period"])
    if rollout.decision is not None:
        metadata["decision"] = dg.MetadataValue.json(rollout.decision)
    return metadata


def unreported_entries(
    store: "RolloutStore", cursor: str | None, current: "Rollout"
) -> list[tuple["Rollout", int]]:
    """(rollout, history index) the sensor has not reported yet, oldest first: the rest of
    the rollout its cursor names when that one has ended and been archived since (a new
    rollout started between two ticks), then the current rollout's."""
    reported = json.loads(cursor) if cursor else {}
    pending: list[tuple[Rollout, int]] = []
    previous_id = reported.get("rollout")
    if previous_id is not None and previous_id != current.id:
        previous = store.archived(previous_id)
        if previous is not None:
            start = int(reported.get("reported", 0))
            pending += [(previous, i) for i in range(start, len(previous.history))]
    start = int(reported.get("reported", 0)) if previous_id == current.id else 0
    return pending + [(current, i) for i in range(start, len(current.history))]


def sensor_interval(spec: Spec) -> int:
    """Seconds between two `rollout_sensor` ticks: the analysis interval, within bounds."""
    shortest, longest = SENSOR_INTERVAL_SECONDS
    interval = math.ceil(spec.deployment.analysis.interval_seconds)
    return min(longest, max(shortest, interval))


def build_rollout_defs(spec: Spec) -> dg.Definitions:
    @dg.asset(
        key=ROLLOUT,
        deps=[DEPLOYED_ENDPOINT],
        group_name="serving",
        kinds={spec.deployment.strategy},
        description=f"The progressive rollout of a new champion ({spec.deployment.strategy}): "
        "strategy, step, weights and each analysis. Materializing it runs one analysis now; "
        "the rollout_sensor does so every interval.",
    )
    def rollout(context: dg.AssetExecutionContext, mlflow: MlflowResource) -> dg.MaterializeResult:
        from ct_platform.deployment.controller import RolloutStore
        from ct_platform.deployment.rollout import controller_for
        from ct_platform.governance.audit import run_actor

        driver = f"{run_actor(context.run)}, materializing {ROLLOUT.to_user_string()}"
        controller = controller_for(
            spec, mlflow.registry(spec), run_id=context.run.run_id, driver=driver
        )
        advanced = controller.advance(force=True)
        state = advanced or RolloutStore(spec.paths.rollouts).read()
        return dg.MaterializeResult(metadata=rollout_metadata(state))

    @dg.sensor(
        name=ROLLOUT_SENSOR,
        minimum_interval_seconds=sensor_interval(spec),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Advances the active rollout one analysis per interval; records each "
        "as a `rollout` materialization.",
    )
    def rollout_sensor(
        context: dg.SensorEvaluationContext, mlflow: MlflowResource
    ) -> dg.SensorResult:
        from ct_platform.deployment.controller import RolloutStore, is_due
        from ct_platform.deployment.rollout import controller_for

        store = RolloutStore(spec.paths.rollouts)
        current = store.read()
        if current is None:
            return dg.SensorResult(skip_reason="no rollout yet")
        if is_due(current, spec.deployment.analysis.interval_seconds, time.time()):
            # No run exists for a tick: the audit lines name the sensor instead.
            driver = f"sensor {ROLLOUT_SENSOR} tick"
            controller = controller_for(spec, mlflow.registry(spec), driver=driver)
            current = controller.advance() or current
        events = [
            dg.AssetMaterialization(ROLLOUT, metadata=rollout_metadata(rollout, index))
            for rollout, index in unreported_entries(store, context.cursor, current)
        ]
        cursor = json.dumps({"rollout": current.id, "reported": len(current.history)})
        if not events:
            return dg.SensorResult(
                skip_reason=f"rollout {current.id} is {current.status}", cursor=cursor
            )
        return dg.SensorResult(asset_events=events, cursor=cursor)

    @dg.op(name="control_rollout")
    def control_rollout(
        context: dg.OpExecutionContext, config: RolloutControlConfig, mlflow: MlflowResource
    ) -> None:
        from ct_platform.deployment.rollout import controller_for
        from ct_platform.governance.audit import run_actor

        who = f"{run_actor(context.run)} via the rollout_control job"
        registry = mlflow.registry(spec)
        controller = controller_for(spec, registry, run_id=context.run.run_id, driver=who)
        rollout = controller.control(config.action, config.reason)
        context.log.info(f"rollout {rollout.id}: {config.action} -> {rollout.status}")
        context.log_event(dg.AssetMaterialization(ROLLOUT, metadata=rollout_metadata(rollout)))

    @dg.job(
        name="rollout_control",
        description="Pause, resume, promote now or abort the active rollout "
        "(config: action, reason).",
    )
    def rollout_control() -> None:
        control_rollout()

    return dg.Definitions(assets=[rollout], sensors=[rollout_sensor], jobs=[rollout_control])
