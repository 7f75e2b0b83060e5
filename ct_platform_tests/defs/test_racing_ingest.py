"""Two real `dagster job execute` processes ingesting one landed file: one batch.

The newcomer's demo: a training run's catch-up ingested `batch-00006.csv`, then the landing
sensor's `batch_job` (keyed `batch-00006.csv@<hash12>`, since the name was a partition by
then) ingested the same bytes again, and `ct status` listed both. Here the two keys' runs are
started together as separate processes, in either order of finishing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ct_platform.data.ingest import find_valid_batch
from ct_platform.data.landing import file_sha256, versioned_key

pytestmark = pytest.mark.slow
DAGSTER = Path(sys.executable).with_name("dagster")


def start_batch_job(spec_file: Path, key: str) -> subprocess.Popen[str]:
    command = [str(DAGSTER), "job", "execute", "-m", "ct_platform.definitions", "-j", "batch_job"]
    command += ["--tags", json.dumps({"dagster/partition": key})]
    env = {**os.environ, "CT_SPEC": str(spec_file)}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_the_sensors_run_and_a_catch_up_key_racing_on_one_file_make_one_batch(
    spec_file, spec, instance: dg.DagsterInstance, land_bank_batches
) -> None:
    [path] = land_bank_batches(1, first=5)  # batch-00006.csv
    content_hash = file_sha256(path)
    keys = [path.name, versioned_key(path.name, content_hash)]
    instance.add_dynamic_partitions("batches", keys)  # the catch-up's and the sensor's

    processes = [start_batch_job(spec_file, key) for key in keys]
    outputs = [process.communicate(timeout=1800)[0] for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    [winner] = [key for key in keys if find_valid_batch(spec.paths, key) is not None]
    [loser] = [key for key in keys if key != winner]
    assert [p.name for p in spec.paths.validated.glob("*.json")] == [f"{winner}.json"]
    assert instance.get_dynamic_partitions("batches") == [winner]
    note = f"{loser}: duplicate of batch {winner} (identical content, sha256 {content_hash[:12]}"
    [run] = [r for r in instance.get_runs() if r.tags.get("dagster/partition") == loser]
    logged = [entry.user_message for entry in instance.all_logs(run.run_id)]
    assert any(message.startswith(note) for message in logged), logged
    materialization = instance.fetch_materializations(
        dg.AssetKey("validated_batch"), limit=10
    ).records
    by_key = {record.partition_key: record.asset_materialization for record in materialization}
    assert by_key[loser].metadata["duplicate_of"].value == winner
    assert by_key[loser].metadata["passed_contract"].value is False  # trains nothing
    assert by_key[winner].metadata["passed_contract"].value is True
