"""The landing sensor against real files and a real Dagster instance."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ct_platform.data.landing import file_sha256
from ct_platform.definitions import build_definitions
from ct_platform.defs.data.assets import CONTENT_TAG, RAW_BATCH, VALIDATED_BATCH
from ct_platform_tests.conftest import both_storages


def settled(path: Path) -> Path:
    """Backdate a file as if its writer finished a minute ago."""
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):
    """One sensor evaluation, as the daemon runs it, returning the sensor's own result.

    (`evaluate_tick` would resolve the requested partition before the partition-add request
    it carries is applied, which the daemon does first, so the sensor is invoked directly.)
    """
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return defs.get_sensor_def("landing_sensor")(context)


def test_new_file_adds_a_partition_and_requests_a_run(spec, instance, land_bank_batches):
    landed = settled(land_bank_batches(1)[0])
    defs = build_definitions(spec)

    result = tick(defs, instance, None)

    assert [r.partition_key for r in result.run_requests] == [landed.name]
    assert result.run_requests[0].run_key.startswith("sha256-")
    assert result.dynamic_partitions_requests[0].partition_keys == [landed.name]
    assert landed.name in result.cursor


def test_identical_file_under_another_name_does_not_retrain(spec, instance, land_bank_batches):
    original = settled(land_bank_batches(1)[0])
    defs = build_definitions(spec)
    first = tick(defs, instance, None)
    settled(shutil.copyfile(original, original.with_name("batch-again.csv")))

    second = tick(defs, instance, first.cursor)

    assert second.run_requests == []
    assert (
        "identical" in second.skip_reason.skip_message
        and "batch-again.csv" in second.skip_reason.skip_message
    )


def test_half_written_file_waits_until_complete(spec, instance, bank_frame):
    path = spec.landing_dir / "batch-slow.csv"
    text = bank_frame.head(500).to_csv(sep=";", index=False)
    path.write_text(text[: len(text) // 2].rstrip("\n"))  # the writer is mid-row, right now
    defs = build_definitions(spec)

    waiting = tick(defs, instance, None)
    assert waiting.run_requests == []
    assert "still being written" in waiting.skip_reason.skip_message

    path.write_text(text)
    settled(path)
    done = tick(defs, instance, waiting.cursor)
    assert [r.partition_key for r in done.run_requests] == ["batch-slow.csv"]


def ingest(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest):
    """Run the requested partition's data assets (what the sensor's run does first)."""
    instance.add_dynamic_partitions("batches", [request.partition_key])
    return dg.materialize(
        [defs.get_assets_def(RAW_BATCH), defs.get_assets_def(VALIDATED_BATCH)],
        partition_key=request.partition_key,
        instance=instance,
        tags=request.tags,
        raise_on_error=False,
    )


def contract_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    """The run's `data_contract` evaluation (`validated_batch` has other checks too)."""
    [evaluation] = [
        event.asset_check_evaluation_data
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and event.asset_check_evaluation_data.check_name == "data_contract"
    ]
    return evaluation


def test_corrected_file_relanded_under_the_same_name_is_a_new_batch(
    spec, instance, bank_frame: pd.DataFrame
) -> None:
    path = spec.landing_dir / "batch-00001.csv"
    rows = bank_frame.iloc[:300]
    settled_text = rows.assign(age=-rows["age"]).to_csv(sep=";", index=False)
    path.write_text(settled_text)  # negative ages: quarantined
    settled(path)
    defs = build_definitions(spec)
    first = tick(defs, instance, None)
    [bad_request] = first.run_requests
    assert bad_request.partition_key == "batch-00001.csv"
    bad_run = ingest(defs, instance, bad_request)
    assert not contract_check(bad_run).passed
    assert not path.exists()  # moved to quarantine with its reason

    rows.to_csv(path, sep=";", index=False)  # corrected, same name
    settled(path)
    second = tick(defs, instance, first.cursor)

    content_hash = file_sha256(path)
    [request] = second.run_requests
    assert request.partition_key == f"batch-00001.csv@{content_hash[:12]}"
    assert request.run_key == f"sha256-{content_hash}" != bad_request.run_key
    assert request.tags[CONTENT_TAG] == content_hash
    assert second.dynamic_partitions_requests[0].partition_keys == [request.partition_key]
    good_run = ingest(defs, instance, request)
    assert good_run.success and contract_check(good_run).passed
    quarantined = spec.paths.quarantine / "batch-00001.csv"
    assert quarantined.read_text() == settled_text  # the old batch stays as it was
    assert "no new file" in tick(defs, instance, second.cursor).skip_reason.skip_message


@both_storages
def test_a_name_already_a_partition_gets_a_versioned_key(spec, instance, land_bank_batches):
    # The cursor may not know the batch (a whole-pipeline run ingested it): the instance does.
    landed = settled(land_bank_batches(1)[0])
    instance.add_dynamic_partitions("batches", [landed.name])

    [request] = tick(build_definitions(spec), instance, None).run_requests

    assert request.partition_key == f"{landed.name}@{file_sha256(landed)[:12]}"


def test_content_a_catch_up_already_stored_requests_no_run(spec, instance, land_bank_batches):
    """The newcomer's demo: a training run's catch-up stored batch-00006.csv 11 s before the
    tick; the tick keyed it `batch-00006.csv@<hash12>` and its run stored it again."""
    from ct_platform.data.ingest import ingest_batch

    landed = settled(land_bank_batches(1, first=5)[0])
    instance.add_dynamic_partitions("batches", [landed.name])
    assert ingest_batch(landed.name, spec, spec.paths).passed  # as the catch-up does

    result = tick(build_definitions(spec), instance, None)

    assert not result.run_requests
    assert result.skip_reason.skip_message == (
        f"{landed.name}: identical to content already landed as batch {landed.name}, "
        "not a new batch"
    )
    assert instance.get_dynamic_partitions("batches") == [landed.name]


def test_file_changed_after_the_tick_fails_the_run_naming_both_hashes(
    spec, instance, land_bank_batches, bank_frame
):
    landed = settled(land_bank_batches(1)[0])
    defs = build_definitions(spec)
    [request] = tick(defs, instance, None).run_requests
    seen = file_sha256(landed)
    bank_frame.iloc[5000:5300].to_csv(landed, sep=";", index=False)  # overwritten meanwhile

    result = ingest(defs, instance, request)

    assert not result.success
    [failure] = result.get_step_failure_events()
    message = failure.step_failure_data.error.message
    assert f"sha256 {seen[:12]}..., now {file_sha256(landed)[:12]}..." in message
    assert "ingested as its own batch" in message
    assert landed.exists()  # nothing quarantined or lost: the next tick keys the new content


def test_every_file_that_is_not_a_batch_is_named_in_the_tick(spec, instance):
    folder = spec.landing_dir
    (folder / "notes.txt").write_text("hello\n")
    (folder / "archive").mkdir()
    (folder / ".upload.csv.tmp").write_text("age;y\n")
    (folder / "empty.csv").touch()
    settled(folder / "empty.csv")

    result = tick(build_definitions(spec), instance, None)

    assert result.run_requests == []
    assert result.skip_reason.skip_message.split("; ") == [
        "empty.csv: empty (0 bytes): becomes a batch once it has content",
        ".upload.csv.tmp: hidden or temporary name: not a batch (a writer renames it when done)",
        "archive: subfolder: not scanned (batches are files directly in the landing folder)",
        "notes.txt: unsupported file type (expected one of .csv.gz, .csv, .parquet)",
    ]


def test_notices_are_logged_when_runs_are_requested_too(
    spec, instance, land_bank_batches, capfd: pytest.CaptureFixture[str]
):
    landed = settled(land_bank_batches(1)[0])
    (spec.landing_dir / "notes.txt").write_text("hello\n")

    result = tick(build_definitions(spec), instance, None)

    assert [r.partition_key for r in result.run_requests] == [landed.name]
    logged = capfd.readouterr().err  # the sensor's log, which the daemon keeps with the tick
    assert "notes.txt: unsupported file type" in logged
    assert f"{landed.name}: new batch {landed.name}" in logged
