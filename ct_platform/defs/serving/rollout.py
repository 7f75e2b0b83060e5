"""The progressive rollout in Dagster: its asset, the sensor that advances it, a control job.

- `rollout` (asset): one materialization per analysis, with the strategy, step, weight and
  the analysis figures and verdict as numeric metadata, so the UI plots them over time.
  Materializing it by hand runs one analysis at once.
- `rollout_sensor`: every tick (each analysis interval, between 5 and 60 s) reads
  `$CT_HOME/rollouts/current.json`; when the current period is over it runs one analysis
  (a GET of the server's per-slot totals, and a routing call when the step moves) and
  reports the new state as a `rollout` materialization. It never waits: the rollout's pace
  is `deployment.analysis.interval_seconds`.
- `rollout_control` (job): pause, resume, promote now or abort from the UI (launchpad
  config `{"ops": {"control_rollout": {"config": {"action": "abort"}}}}`), like
  `ct rollout pause|resume|promote|abort`.
"""

import math
import time
from typing import TYPE_CHECKING, Any

import dagster as dg

from ct_platform.defs.metadata import numbers
from ct_platform.defs.resources import MlflowResource
from ct_platform.defs.serving.assets import DEPLOYED_ENDPOINT
from ct_platform.settings import Spec

if TYPE_CHECKING:
    from ct_platform.deployment.controller import Rollout

ROLLOUT = dg.AssetKey("rollout")
# The sensor looks once per analysis interval, within these bounds (a tick is one file read).
SENSOR_INTERVAL_SECONDS = (5, 60)


class RolloutControlConfig(dg.Config):
    """`action`: pause | resume | promote | abort; `reason`: recorded with the action."""

    action: str
    reason: str = ""


def rollout_metadata(rollout: "Rollout | None") -> dict[str, dg.MetadataValue]:
    """The state as metadata: numbers for the plots (weight, step, figures), text for the rest."""
    if rollout is None:
        return {"status": dg.MetadataValue.text("no rollout yet")}
    last = rollout.history[-1] if rollout.history else {}
    state: dict[str, Any] = {
        "rollout_id": rollout.id,
        "strategy": rollout.strategy,
        "version": rollout.version,
        "previous_version": rollout.previous_version or "",
        "status": rollout.status,
        "phase": rollout.phase,
        "step": rollout.step,
        "weight_percent": 100.0 * rollout.weight,
        "failed_checks": rollout.failed_checks,
        "verdict": last.get("verdict", ""),
        "reason": last.get("reason", ""),
    }
    if rollout.required_samples is not None:
        state["required_samples"] = rollout.required_samples
    metadata = numbers("", state)
    metadata.update(numbers("analysis", last.get("figures", {})))
    if rollout.decision is not None:
        metadata["decision"] = dg.MetadataValue.json(rollout.decision)
    return metadata


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
    def rollout(mlflow: MlflowResource) -> dg.MaterializeResult:
        from ct_platform.deployment.controller import RolloutStore
        from ct_platform.deployment.rollout import controller_for

        advanced = controller_for(spec, mlflow.registry(spec)).advance(force=True)
        state = advanced or RolloutStore(spec.paths.rollouts).read()
        return dg.MaterializeResult(metadata=rollout_metadata(state))

    @dg.sensor(
        name="rollout_sensor",
        minimum_interval_seconds=sensor_interval(spec),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Advances the active rollout one analysis per interval; records each "
        "as a `rollout` materialization.",
    )
    def rollout_sensor(mlflow: MlflowResource) -> dg.SensorResult:
        from ct_platform.deployment.controller import active_rollout, is_due
        from ct_platform.deployment.rollout import controller_for

        current = active_rollout(spec)
        if current is None:
            return dg.SensorResult(skip_reason="no active rollout")
        interval = spec.deployment.analysis.interval_seconds
        if not is_due(current, interval, time.time()):
            return dg.SensorResult(skip_reason=f"rollout {current.id} is {current.status}")
        advanced = controller_for(spec, mlflow.registry(spec)).advance()
        event = dg.AssetMaterialization(ROLLOUT, metadata=rollout_metadata(advanced))
        return dg.SensorResult(asset_events=[event])

    @dg.op(name="control_rollout")
    def control_rollout(
        context: dg.OpExecutionContext, config: RolloutControlConfig, mlflow: MlflowResource
    ) -> None:
        from ct_platform.deployment.rollout import controller_for

        controller = controller_for(spec, mlflow.registry(spec))
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
