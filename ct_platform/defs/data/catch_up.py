"""Catch-up ingestion for whole-pipeline runs (`dagster job execute`, CI).

The landing sensor ingests each file in its own run. A run of `training_job` may find files
that landed while no sensor was running; it ingests them through the same code path, adds
their partitions and records their materializations, so lineage stays complete.
"""

from __future__ import annotations

import dagster as dg

from ct_platform.data.landing import LandingCursor, scan_landing
from ct_platform.defs.data.assets import RAW_BATCH, VALIDATED_BATCH, batches, ingest_metadata
from ct_platform.settings import Paths, Spec


def catch_up_landing(context: dg.AssetExecutionContext, spec: Spec, paths: Paths) -> None:
    """Ingest landed files with no partition yet; fail naming the batch if a blocking gate fails."""
    from ct_platform.data.ingest import ingest_batch  # pandas: loaded by the step only

    known = set(context.instance.get_dynamic_partitions(batches.name))
    # No settle time: whoever starts a whole-pipeline run means the files present now.
    # Format end markers are still checked, so a file caught mid-write waits for the sensor.
    scan = scan_landing(spec.landing_dir, LandingCursor.from_json(None), settle_seconds=0)
    fresh = [landed for landed in scan.new if landed.partition_key not in known]
    if not fresh:
        return
    context.instance.add_dynamic_partitions(batches.name, [f.partition_key for f in fresh])
    failures = []
    for landed in fresh:
        outcome = ingest_batch(landed.path, spec, paths)
        key = landed.partition_key
        context.log_event(dg.AssetMaterialization(RAW_BATCH, partition=key))
        context.log_event(
            dg.AssetMaterialization(
                VALIDATED_BATCH, partition=key, metadata=ingest_metadata(outcome)
            )
        )
        if not outcome.passed:
            context.log.error(outcome.failure_summary)
            failures.append(outcome.failure_summary)
    context.log.info(f"caught up on {len(fresh)} landed file(s), {len(failures)} quarantined")
    if failures and spec.gates.contract.blocking:
        raise dg.Failure(
            "blocking gate data_contract failed; the batch was quarantined with the reason:\n"
            + "\n".join(failures)
        )
