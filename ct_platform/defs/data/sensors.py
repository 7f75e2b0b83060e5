"""The landing sensor: each new, complete file becomes a partition and a training run."""

import dagster as dg

from ct_platform.data.landing import LandingCursor, scan_landing
from ct_platform.defs.data.assets import batches
from ct_platform.settings import Spec


def build_landing_sensor(spec: Spec, job_name: str) -> dg.SensorDefinition:
    @dg.sensor(
        name="landing_sensor",
        job_name=job_name,
        minimum_interval_seconds=10,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Watches {spec.landing_dir}: a new file (by content hash) retrains.",
    )
    def landing_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        scan = scan_landing(spec.landing_dir, LandingCursor.from_json(context.cursor))
        cursor = scan.cursor.to_json()
        if not scan.new:
            reasons = []
            if scan.duplicates:
                names = ", ".join(f.partition_key for f in scan.duplicates)
                reasons.append(f"identical to already-ingested content: {names}")
            if scan.pending:
                reasons.append(f"still being written: {', '.join(p.name for p in scan.pending)}")
            return dg.SensorResult(skip_reason="; ".join(reasons) or "no new file", cursor=cursor)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    partition_key=landed.partition_key,
                    run_key=landed.run_key,
                    tags={"ct/content_sha256": landed.content_hash},
                )
                for landed in scan.new
            ],
            dynamic_partitions_requests=[
                batches.build_add_request([landed.partition_key for landed in scan.new])
            ],
            cursor=cursor,
        )

    return landing_sensor
