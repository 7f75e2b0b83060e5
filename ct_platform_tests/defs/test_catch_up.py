"""Catch-up ingestion in a whole-pipeline run (`training_job`, as CI runs it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd

from ct_platform.data.ingest import find_valid_batch
from ct_platform.data.landing import file_sha256
from ct_platform_tests.defs.conftest import run_job

CASES = Path(__file__).resolve().parent.parent / "data" / "cases"


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    [failure] = result.get_step_failure_events()
    return failure.step_failure_data.error.message


TRAINING_DATASET = dg.AssetKey("training_dataset")


def dataset_metadata(instance: dg.DagsterInstance) -> dict:
    event = instance.get_latest_materialization_event(TRAINING_DATASET)
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def test_catch_up_names_columns_field_counts_and_ingests_relanded_content(
    spec, instance, bank_frame: pd.DataFrame, write_batch
) -> None:
    rows = bank_frame.iloc[:300]
    write_batch(rows.assign(**{"emp.var.rate": "-0,1"}), "batch-00001.csv")

    first = run_job(spec, instance, "training_job")

    assert not first.success
    assert (
        "batch-00001.csv: data contract failed: column 'emp.var.rate', rule type: 300 values "
        "(100.00%) are not a number: '-0,1'" in failure_message(first)
    )

    corrected = write_batch(rows, "batch-00001.csv")
    shutil.copy(CASES / "trailing-separator.csv", spec.landing_dir)
    key = f"batch-00001.csv@{file_sha256(corrected)[:12]}"

    second = run_job(spec, instance, "training_job", asset_selection=[TRAINING_DATASET])

    # The trailing-separator file is quarantined with its reason; the corrected one is used.
    assert second.success
    assert (
        "trailing-separator.csv: field count mismatch: the header has 17 fields, 200 of 200 "
        "data rows do not: 200 with 18 (lines 2, 3, 4, 5, 6 and 195 more); every data row ends "
        "with the separator ';' and the header does not"
        in dataset_metadata(instance)["quarantined_now"]
    )
    assert set(instance.get_dynamic_partitions("batches")) == {
        "batch-00001.csv",
        key,
        "trailing-separator.csv",
    }
    assert find_valid_batch(spec.paths, key).content_hash == file_sha256(corrected)
    assert find_valid_batch(spec.paths, "batch-00001.csv") is None  # quarantined, kept as it was
    assert (spec.paths.quarantine / "batch-00001.csv").exists()


def test_a_file_whose_ingest_is_pending_is_caught_up_under_its_own_key(
    spec, instance, bank_frame: pd.DataFrame, write_batch
) -> None:
    """A newcomer's demo: a training run's catch-up overlapped the landing sensor, whose
    `batch_job` for batch-00004.csv was still queued; the catch-up saw the name taken and
    ingested the same content again as `batch-00004.csv@<hash>`, so the window held those
    rows twice. A partition without an outcome is that file's own batch."""
    path = write_batch(bank_frame.iloc[:300], "batch-00004.csv")
    instance.add_dynamic_partitions("batches", ["batch-00004.csv"])  # as the sensor does

    run = run_job(spec, instance, "training_job")

    assert run.success
    assert instance.get_dynamic_partitions("batches") == ["batch-00004.csv"]
    batch = find_valid_batch(spec.paths, "batch-00004.csv")
    assert batch is not None and batch.content_hash == file_sha256(path)
    assert [p.name for p in spec.paths.validated.glob("*.json")] == ["batch-00004.csv.json"]


def test_ci_run_quarantines_bad_files_and_trains_the_good_ones(
    spec, instance, bank_frame: pd.DataFrame, land_bank_batches, write_batch
) -> None:
    """A newcomer's CI run: two good files landed with three bad ones (a negative target, a
    comma separator, a trailing separator) failed at catch-up (`blocking gate data_contract
    failed`) and trained nothing. Each bad file is quarantined with its reason and named in
    the run; the good ones train in that same run."""
    land_bank_batches(2)
    write_batch(bank_frame.iloc[8000:8300].assign(y=-1), "negative-target.csv")
    bank_frame.iloc[8300:8600].to_csv(spec.landing_dir / "commas.csv", sep=",", index=False)
    shutil.copy(CASES / "trailing-separator.csv", spec.landing_dir)

    run = run_job(spec, instance, "training_job")

    assert run.success
    metadata = dataset_metadata(instance)
    assert metadata["batches"] == 2
    assert metadata["newest_batch"] == "batch-00002.csv"
    assert instance.get_latest_materialization_event(dg.AssetKey("model_evaluation"))
    quarantined = metadata["quarantined_now"].splitlines()
    assert [line.split(":")[0] for line in sorted(quarantined)] == [
        "commas.csv",
        "negative-target.csv",
        "trailing-separator.csv",
    ]
    assert "rule target" in metadata["quarantined_now"]
    records = sorted(p.name for p in spec.paths.quarantine.glob("*.json"))
    assert len(records) == 3, records
