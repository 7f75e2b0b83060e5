"""The landing sensor: each new, complete file becomes a partition and a training run.

Every landed file that does not become a run is named in the tick, with why (the skip
reason when nothing runs, the tick's log otherwise): see the landing rules in
`ct_platform.data.landing` and the README.
"""

import dagster as dg

from ct_platform.data.claims import holding_batches
from ct_platform.data.landing import LandedFile, LandingCursor, scan_landing
from ct_platform.defs.data.assets import CONTENT_TAG, batches
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
        new, held = _not_held(scan.new, spec) if scan.new else ([], [])
        notices = scan.notices() + held
        for notice in notices:
            context.log.info(notice)
        if not new:
            handled = f"no new file ({len(scan.cursor.files)} already handled)"
            return dg.SensorResult(skip_reason="; ".join(notices) or handled, cursor=cursor)
        existing = set(context.instance.get_dynamic_partitions(batches.name))
        keyed = [(landed.key_among(existing), landed) for landed in new]
        for key, landed in keyed:
            context.log.info(f"{landed.path.name}: new batch {key}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    partition_key=key,
                    run_key=landed.run_key,
                    tags={CONTENT_TAG: landed.content_hash},
                )
                for key, landed in keyed
            ],
            dynamic_partitions_requests=[batches.build_add_request([key for key, _ in keyed])],
            cursor=cursor,
        )

    return landing_sensor


def _not_held(landed: list[LandedFile], spec: Spec) -> tuple[list[LandedFile], list[str]]:
    """The files whose content no batch holds yet, and a notice for each one that a batch
    holds (a training run's catch-up ingested it before this sensor saw it): no run for
    those. An ingest still racing with this tick is settled by the content claim
    (`data.claims`): the later run ends as a duplicate."""
    holders = holding_batches(spec.paths)
    notices = [
        f"{file.path.name}: identical to content already landed as batch "
        f"{holders[file.content_hash]}, not a new batch"
        for file in landed
        if file.content_hash in holders
    ]
    return [file for file in landed if file.content_hash not in holders], notices
