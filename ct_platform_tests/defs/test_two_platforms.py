"""A `ct` command reading the Dagster instance and CT_HOME must read one platform's.

A newcomer with a stale variable (`DAGSTER_HOME` of the bike platform, `CT_HOME` of the bank
one) got `ct status` listing the bikes' batch names with the bank's MLflow verdicts, and the
bank's batches "not seen by the landing sensor yet": no warning.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from ct_platform.cli import main
from ct_platform.defs.platform_tags import HOME_TAG, MODEL_TAG
from ct_platform.settings import load_spec
from ct_platform_tests.defs.conftest import BATCH_ROWS
from ct_platform_tests.defs.test_coalesced_training import Loop

pytestmark = pytest.mark.slow


@pytest.fixture
def bikes(
    tmp_path: Path, spec_file: Path, bank_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A second platform: its own spec (model `bikes`, own landing folder), CT_HOME and
    Dagster instance, with one batch ingested by a real `batch_job` run. Returns its CT_HOME."""
    root = tmp_path / "bikes"
    for folder in ("incoming", "home/dagster"):
        (root / folder).mkdir(parents=True)
    raw = yaml.safe_load(spec_file.read_text())
    raw["model"]["name"] = "bikes"
    bike_spec = root / "ct_platform.yaml"
    bike_spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    bank_frame.iloc[-BATCH_ROWS:].to_csv(
        root / "incoming" / "batch-00001.csv", sep=";", index=False
    )
    with monkeypatch.context() as scoped:  # the bike platform's variables, for its run only
        scoped.setenv("CT_SPEC", str(bike_spec))
        scoped.setenv("CT_HOME", str(root / "home"))
        with dg.instance_for_test(temp_dir=str(root / "home" / "dagster")) as instance:
            [run] = Loop(load_spec(bike_spec), instance).ingest_landed()
            assert run.success
            assert run.dagster_run.tags[HOME_TAG] == str(root / "home")
    yield root / "home"


def test_status_and_approve_refuse_an_instance_of_another_platform(
    spec, spec_file, ct_home, instance, land_bank_batches, bikes, monkeypatch, capsys
):
    land_bank_batches(2)
    runs = Loop(spec, instance).ingest_landed()
    tags = instance.get_run_by_id(runs[0].run_id).tags
    assert (tags[HOME_TAG], tags[MODEL_TAG]) == (str(ct_home), spec.model.name)
    assert main(["status", "--json"]) == 0  # its own instance: read
    assert [row["batch"] for row in json.loads(capsys.readouterr().out)] == [
        "batch-00001.csv",
        "batch-00002.csv",
    ]

    monkeypatch.setenv("DAGSTER_HOME", str(bikes / "dagster"))  # the stale variable
    for command in (["status"], ["approve", "1", "--reason", "fine"]):
        assert main(command) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (
            f"ct {command[0]}: the Dagster instance at {bikes / 'dagster'} belongs to another "
            f"platform: its runs ran on CT_HOME {bikes} for model 'bikes', but this command "
            f"reads spec {spec_file}, CT_HOME {ct_home}, model '{spec.model.name}'. Not "
            "mixing them: set DAGSTER_HOME and CT_HOME for one platform (unset DAGSTER_HOME "
            "reads $CT_HOME/dagster)\n"
        )
    with dg.DagsterInstance.from_config(str(bikes / "dagster")) as bike_instance:
        assert [run.job_name for run in bike_instance.get_runs()] == ["batch_job"]

    monkeypatch.setenv("CT_HOME", str(bikes))  # the bank spec on the bikes' CT_HOME: still not
    assert main(["status"]) == 2
    assert f"runs ran on CT_HOME {bikes} for model 'bikes'" in capsys.readouterr().err
