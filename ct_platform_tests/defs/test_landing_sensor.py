"""The landing sensor against real files and a real Dagster instance."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import dagster as dg

from ct_platform.definitions import build_definitions


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
