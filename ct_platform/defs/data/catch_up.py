"""Catch-up ingestion for whole-pipeline runs (`dagster job execute`, CI).

The landing sensor ingests each file in its own run. A run of `training_job` may find files
that landed while no sensor was running; it ingests them through the same code path, adds
their partitions and records their materializations, so lineage stays complete. The landing
rules are the sensor's: content already ingested (under any name) is not ingested again,
content re-landed under a taken name is keyed `<name>@<hash12>`, and every file that is not
ingested is named in the run log with why. A name whose partition exists but has no outcome
yet is that partition's own batch (the sensor's `batch_job` is queued, or was killed): it is
ingested under that key, never as `<name>@<hash12>` beside it, which put the same rows in the
training window twice when a training run overlapped the sensor's ingest.
"""

from __future__ import annotations

import dagster as dg

from ct_platform.data.claims import holding_batches, judged_names
from ct_platform.data.landing import LandedFile, LandingCursor, scan_landing
from ct_platform.defs.data.assets import (
    RAW_BATCH,
    VALIDATED_BATCH,
    batches,
    ingest_metadata,
    log_redelivery,
)
from ct_platform.settings import Paths, Spec


def catch_up_landing(context: dg.AssetExecutionContext, spec: Spec, paths: Paths) -> list[str]:
    """Ingest landed files not ingested yet; return one line per file quarantined.

    A quarantined file does not fail the run: it is moved to `CT_HOME/quarantine` with its
    reason, named in the run log (ERROR), and the files that passed train in this same run,
    as under the daemon, where each file is its own ingest run.
    """
    from ct_platform.data.ingest import ingest_batch  # pandas: step only

    known = set(context.instance.get_dynamic_partitions(batches.name))
    # No settle time: whoever starts a whole-pipeline run means the files present now.
    # Format end markers are still checked, so a file caught mid-write waits for the sensor.
    scan = scan_landing(spec.landing_dir, LandingCursor(), settle_seconds=0)
    for notice in scan.notices():
        context.log.warning(f"not ingested: {notice}")
    done = holding_batches(paths)
    judged = judged_names(paths)
    fresh = {
        catch_up_key(landed, known, judged): landed
        for landed in scan.new
        if landed.content_hash not in done
    }
    for landed in scan.new:
        if landed.content_hash in done:
            # Named, never skipped without a word: same content as a batch already judged.
            context.log.info(
                f"not ingested again: {landed.path.name}: content {landed.content_hash[:12]} is "
                f"batch {done[landed.content_hash]}'s (validated, or quarantined with its reason "
                "in CT_HOME/quarantine)"
            )
    if not fresh:
        context.log.info(f"no landed file to catch up on ({len(scan.new)} already ingested)")
        return []
    context.instance.add_dynamic_partitions(batches.name, [k for k in fresh if k not in known])
    failures, duplicates = [], 0
    for key, landed in fresh.items():
        outcome = ingest_batch(key, spec, paths, expected_hash=landed.content_hash)
        if outcome.duplicate_of is not None:
            # Another run stored this content since `done` was read: its batch stands.
            context.log.warning(outcome.duplicate_note)
            if key not in known:
                context.instance.delete_dynamic_partition(batches.name, key)
            duplicates += 1
            continue
        context.log_event(dg.AssetMaterialization(RAW_BATCH, partition=key))
        context.log_event(
            dg.AssetMaterialization(
                VALIDATED_BATCH, partition=key, metadata=ingest_metadata(outcome)
            )
        )
        log_redelivery(context, outcome)
        if not outcome.passed:
            context.log.error(outcome.failure_summary)
            failures.append(outcome.failure_summary)
    context.log.info(
        f"caught up on {len(fresh) - duplicates} landed file(s), {len(failures)} quarantined"
        + (f", {duplicates} duplicate(s) of batches stored meanwhile" if duplicates else "")
    )
    return failures


def catch_up_key(landed: LandedFile, known: set[str], judged: set[str]) -> str:
    """The partition key a landed file is ingested under: its own name when that partition
    exists without an outcome (its ingest is pending elsewhere), else the landing rule's key."""
    name = landed.path.name
    if name in known and name not in judged:
        return name
    return landed.key_among(known)
