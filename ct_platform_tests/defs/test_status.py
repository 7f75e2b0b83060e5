"""`ct status`: every landed batch with its state and reason, read from a real instance."""

from __future__ import annotations

import json
import os
import time

import pandas as pd
import pytest

from ct_platform.cli import main
from ct_platform_tests.defs.test_coalesced_training import Loop

pytestmark = pytest.mark.slow


def status(capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    assert main(["status", "--json"]) == 0
    return {row["batch"]: row for row in json.loads(capsys.readouterr().out)}


def test_status_names_every_batch_state(spec, instance, land_bank_batches, write_batch, capsys):
    loop = Loop(spec, instance)
    land_bank_batches(2)
    write_batch(pd.DataFrame({"age": [30, 40], "job": ["x", "y"]}), "batch-bad.csv")
    loop.ingest_landed()
    assert loop.train(loop.tick("training_sensor").run_requests[0]).success
    land_bank_batches(1, first=2)
    loop.ingest_landed()  # validated after the training run: waiting for the next one
    in_progress = loop.launched_training_run()
    land_bank_batches(1, first=3)  # landed, but no landing tick yet
    (spec.landing_dir / "notes.txt").write_text("not data")
    still_writing = spec.landing_dir / "batch-00099.csv"
    still_writing.write_text("age;job\n30;admin.")  # no final newline, just modified
    duplicate = spec.landing_dir / "batch-copy.csv"
    duplicate.write_bytes((spec.landing_dir / "batch-00001.csv").read_bytes())
    settled = time.time() - 30  # complete, and newer than the ingested files (a minute old)
    for path in (duplicate, spec.landing_dir / "batch-00004.csv"):
        os.utime(path, (settled, settled))

    rows = status(capsys)

    assert rows["batch-00001.csv"]["state"] == "trained"
    # v1 was judged on the holdout, v2 (its whole-window refit) serves.
    assert rows["batch-00001.csv"]["detail"] == "trained into v1 (passed its gates), v2 (champion)"
    assert rows["batch-00002.csv"]["versions"] == [1, 2]
    bad = rows["batch-bad.csv"]
    assert bad["state"] == "quarantined" and "absent from the file header" in bad["detail"]
    waiting = rows["batch-00003.csv"]
    assert waiting["state"] == "validated"
    assert waiting["detail"] == (
        f"waiting: training run {in_progress.run_id[:8]} (NOT_STARTED) in progress; "
        "it or the next one takes it"
    )
    assert rows["notes.txt"]["state"] == "not a batch yet"
    assert rows["notes.txt"]["detail"].startswith("ignored: unsupported file type")
    assert rows["batch-00099.csv"]["detail"].startswith("still being written")
    assert rows["batch-00004.csv"]["detail"] == "not seen by the landing sensor yet"
    assert rows["batch-copy.csv"]["detail"] == (
        "identical content to batch-00001.csv: not ingested again"
    )
    assert len(rows) == 8


def test_status_without_an_instance_says_so(spec, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    assert main(["status"]) == 2
    assert "DAGSTER_HOME is not set" in capsys.readouterr().err
