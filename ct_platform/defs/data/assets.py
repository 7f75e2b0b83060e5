"""Raw and validated batches: one dynamic partition per landed file.

No `from __future__ import annotations` in asset modules: Dagster reads the `context`
annotation at decoration time and needs the real class, not a string.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING

import dagster as dg

from ct_platform.data.landing import landed_name
from ct_platform.defs.metadata import numbers, severity
from ct_platform.settings import Paths, Spec

if TYPE_CHECKING:  # ingestion loads pandas: imported by the step, not the code location
    from ct_platform.data.ingest import IngestOutcome

batches = dg.DynamicPartitionsDefinition(name="batches")

RAW_BATCH = dg.AssetKey("raw_batch")
VALIDATED_BATCH = dg.AssetKey("validated_batch")
CONTRACT_CHECK = "data_contract"
REDELIVERY_CHECK = "redelivered_rows"
REVALIDATED = "already_validated"
# Run tag set by the landing sensor: the sha256 of the content the batch was keyed on.
CONTENT_TAG = "ct/content_sha256"


def contract_check_result(outcome: "IngestOutcome", spec: Spec) -> dg.AssetCheckResult:
    """The data-contract gate for one batch, with every rule's figures."""
    metadata: dict[str, dg.MetadataValue] = {"batch": dg.MetadataValue.text(outcome.key)}
    if outcome.read_error is not None:
        metadata["read_error"] = dg.MetadataValue.text(outcome.read_error)
    if outcome.contract is not None:
        for rule in outcome.contract.rules:
            name = f"{rule.rule}.{rule.column}" if rule.column else rule.rule
            metadata.update(numbers(name, {"passed": rule.passed, **rule.figures}))
        metadata["rows"] = dg.MetadataValue.int(outcome.contract.n_rows)
    if outcome.quarantined_to is not None:
        metadata["quarantined_to"] = dg.MetadataValue.path(str(outcome.quarantined_to))
    description = outcome.failure_summary or f"{outcome.key}: every contract rule passed"
    return dg.AssetCheckResult(
        asset_key=VALIDATED_BATCH,
        check_name=CONTRACT_CHECK,
        passed=outcome.passed,
        severity=severity(spec.gates.contract.blocking),
        metadata=metadata,
        description=description,
    )


def redelivery_check_result(outcome: "IngestOutcome", spec: Spec) -> dg.AssetCheckResult:
    """WARN when more of the batch than `dataset.duplicate_rate_max` was landed before."""
    redelivered = outcome.valid.redelivered if outcome.valid is not None else None
    if redelivered is None:
        return dg.AssetCheckResult(
            asset_key=VALIDATED_BATCH,
            check_name=REDELIVERY_CHECK,
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{outcome.key}: quarantined, no row kept to compare",
        )
    limit = spec.dataset.duplicate_rate_max
    passed = redelivered.share <= limit
    description = (
        redelivered.describe(outcome.key)
        if redelivered.rows
        else f"{outcome.key}: no row was landed in an earlier batch"
    )
    return dg.AssetCheckResult(
        asset_key=VALIDATED_BATCH,
        check_name=REDELIVERY_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            **numbers("", {"rows": redelivered.rows, "share": redelivered.share, "limit": limit}),
            **numbers("earlier", dict(redelivered.earlier)),
        },
        description=description if passed else f"{description} (over {limit:.0%})",
    )


def build_data_defs(spec: Spec) -> dg.Definitions:
    @dg.asset(
        key=RAW_BATCH,
        partitions_def=batches,
        group_name="data",
        kinds={"file"},
        description="A file as it landed in the landing folder, kept untouched.",
    )
    def raw_batch(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        path = spec.landing_dir / landed_name(context.partition_key)
        if not path.exists():
            raise dg.Failure(f"landed file {path} is gone (moved or deleted before ingestion)")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "bytes": dg.MetadataValue.int(path.stat().st_size),
            }
        )

    @dg.asset(
        key=VALIDATED_BATCH,
        deps=[RAW_BATCH],
        partitions_def=batches,
        group_name="data",
        kinds={"parquet"},
        check_specs=[
            dg.AssetCheckSpec(
                CONTRACT_CHECK,
                asset=VALIDATED_BATCH,
                blocking=spec.gates.contract.blocking,
                description="Columns, types, ranges, categories, completeness, duplicates, "
                "target: a failing batch is quarantined with the reason and never trains.",
            ),
            dg.AssetCheckSpec(
                REDELIVERY_CHECK,
                asset=VALIDATED_BATCH,
                description="Rows identical to rows of earlier batches (a re-cut file "
                "re-delivering them): counted, with the earlier batches named, and counted "
                "once in training windows; warns above dataset.duplicate_rate_max.",
            ),
        ],
        description="The batch after the data contract: typed Parquet, or quarantined.",
    )
    def validated_batch(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        from ct_platform.data.ingest import LandedFileChanged, ingest_batch

        expected = context.run.tags.get(CONTENT_TAG)
        try:
            outcome = ingest_batch(
                context.partition_key, spec, Paths.from_env(), expected_hash=expected
            )
        except LandedFileChanged as error:
            raise dg.Failure(str(error)) from None
        if outcome.duplicate_of is not None:
            yield from _end_as_duplicate(context, outcome)
            return
        if not outcome.passed:
            context.log.error(outcome.failure_summary)
        log_redelivery(context, outcome)
        yield dg.MaterializeResult(
            metadata=ingest_metadata(outcome),
            check_results=[
                contract_check_result(outcome, spec),
                redelivery_check_result(outcome, spec),
            ],
        )

    return dg.Definitions(assets=[raw_batch, validated_batch])


def _end_as_duplicate(
    context: dg.AssetExecutionContext, outcome: "IngestOutcome"
) -> Iterator[dg.MaterializeResult]:
    """Report a run whose content another batch already holds, then drop its partition.

    The partition was added for this run (by the landing sensor) before the other batch was
    known to hold the content; removing it keeps one landed file one batch everywhere
    (`ct status`, training windows). Dagster takes the run's events only while the partition
    exists, so the report comes first.
    """
    context.log.warning(outcome.duplicate_note)
    yield dg.MaterializeResult(
        metadata={
            **ingest_metadata(outcome),
            "duplicate_of": dg.MetadataValue.text(outcome.duplicate_of or ""),
        },
        check_results=[
            dg.AssetCheckResult(
                asset_key=VALIDATED_BATCH,
                check_name=check_name,
                passed=True,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{outcome.duplicate_note}; {outcome.duplicate_of}'s check stands",
            )
            for check_name in (CONTRACT_CHECK, REDELIVERY_CHECK)
        ],
    )
    context.instance.delete_dynamic_partition(batches.name, outcome.key)


def log_redelivery(context: dg.AssetExecutionContext, outcome: "IngestOutcome") -> None:
    """A warning in the run log for a batch repeating rows of earlier batches."""
    redelivered = outcome.valid.redelivered if outcome.valid is not None else None
    if redelivered is not None and redelivered.rows:
        context.log.warning(redelivered.describe(outcome.key))


def ingest_metadata(outcome: "IngestOutcome") -> dict[str, dg.MetadataValue]:
    metadata = {
        "content_sha256": dg.MetadataValue.text(outcome.content_hash),
        "passed_contract": dg.MetadataValue.bool(outcome.passed),
        # Stored before (by a training run's catch-up, or an earlier attempt): this event
        # reports that batch again, it does not bring new data to train on.
        REVALIDATED: dg.MetadataValue.bool(outcome.already_stored),
    }
    if outcome.valid is not None:
        metadata["rows"] = dg.MetadataValue.int(outcome.valid.rows)
        metadata["path"] = dg.MetadataValue.path(str(outcome.valid.parquet_path))
    redelivered = outcome.valid.redelivered if outcome.valid is not None else None
    if redelivered is not None:
        metadata["redelivered_rows"] = dg.MetadataValue.int(redelivered.rows)
        metadata["redelivered_share"] = dg.MetadataValue.float(redelivered.share)
        metadata["redelivered_from"] = dg.MetadataValue.text(
            ", ".join(f"{key}: {rows}" for key, rows in redelivered.earlier.items()) or "-"
        )
    if outcome.quarantined_to is not None:
        metadata["quarantined_to"] = dg.MetadataValue.path(str(outcome.quarantined_to))
    return metadata
