"""The endpoint watchdog: a dead or hung deployment is brought back, visibly, as a run.

A tick reads the target's state and pings the server; the restart itself happens in a run
of `deployed_endpoint`, so the sensor stays light and the revival shows in the UI.
"""

import time

import dagster as dg

from ct_platform.defs.serving.assets import DEPLOYED_ENDPOINT
from ct_platform.settings import Spec

# One revival request per deployment per window: a server that keeps dying is not
# restarted in a tight loop (the failing runs say why).
REVIVAL_WINDOW_SECONDS = 300


def build_endpoint_watchdog(spec: Spec) -> dg.SensorDefinition:
    @dg.sensor(
        name="endpoint_watchdog",
        asset_selection=[DEPLOYED_ENDPOINT],
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Redeploys the champion when the live endpoint is found dead or hung.",
    )
    def endpoint_watchdog(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        from ct_platform.deployment.targets import target_for

        status = target_for(spec).status()
        if status is None:
            return dg.SensorResult(skip_reason="nothing deployed yet")
        if status.healthy:
            return dg.SensorResult(skip_reason=f"{status.endpoint.url} is up ({status.detail})")
        window = int(time.time() // REVIVAL_WINDOW_SECONDS)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"revive-{status.endpoint.deployed_at}-{window}",
                    asset_selection=[DEPLOYED_ENDPOINT],
                    tags={"ct/revive": status.detail},
                )
            ]
        )

    return endpoint_watchdog
