"""A `ct` command reading the Dagster instance and CT_HOME must read one platform's.

A newcomer with a stale variable (`DAGSTER_HOME` of the bike platform, `CT_HOME` of the bank
one) got `ct status` listing the bikes' batch names with the bank's MLflow verdicts, and the
bank's batches "not seen by the landing sensor yet": no warning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import dagster as dg
import pandas as pd
import pytest
import yaml

from ct_platform.cli import main
from ct_platform.defs.platform_tags import HOME_TAG, MODEL_TAG
from ct_platform.settings import load_spec
from ct_platform_tests.defs.conftest import BATCH_ROWS, spec_variant
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
    said = capsys.readouterr().err  # the home's own record tells, before the instance is read
    assert (
        f"CT_HOME {bikes} belongs to another platform: it holds the state of model 'bikes'" in said
    )


# Every `ct` command that reads a platform's state (CT_HOME or the instance), with arguments
# that would act on it; `drift` reads the spec's column definitions only.
STATE_COMMANDS = (
    ["status"],
    ["history"],
    ["history", "--json"],
    ["rollout", "status"],
    ["rollback", "--reason", "test"],
    ["approve", "1", "--reason", "fine"],
    ["reject", "1", "--reason", "no"],
    ["serve", "--port", "19401"],
    ["simulate", "--once"],
)


def ct(args: list[str], spec_file: Path, home: Path, dagster_home: Path) -> CompletedProcess:
    """A real `ct` process with one platform's variables."""
    env = {
        **os.environ,
        "CT_SPEC": str(spec_file),
        "CT_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
    }
    return subprocess.run(
        [sys.executable, "-m", "ct_platform.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )


def test_every_state_command_refuses_a_ct_home_of_another_model(
    spec, spec_file, ct_home, instance, land_bank_batches
):
    """The newcomer's `CT_SPEC=houses.yaml ct history` printed the bank's audit log."""
    land_bank_batches(1)
    [run] = Loop(spec, instance).ingest_landed()
    assert run.success
    record = ct_home / "platform.json"
    assert json.loads(record.read_text()) == {"model": spec.model.name}  # the step's claim
    houses = spec_variant(spec_file, "houses", {"model": {"name": "houses"}})
    dagster_home = Path(instance.root_directory)
    refusal = (
        f"CT_HOME {ct_home} belongs to another platform: it holds the state of model "
        f"'{spec.model.name}' (recorded in {record}), but this command reads spec {houses}, "
        f"CT_HOME {ct_home}, model 'houses'. Not mixing them: set CT_SPEC and CT_HOME for one "
        "platform\n"
    )
    for command in STATE_COMMANDS:
        done = ct(command, houses, ct_home, dagster_home)
        assert done.returncode != 0, command
        said = done.stderr if command[0] != "simulate" else done.stdout  # simulate: stdout
        name = " ".join(command[:2]) if command[0] == "rollout" else command[0]
        assert said == f"ct {name}: {refusal}", command

    own = ct(["history", "--json"], spec_file, ct_home, dagster_home)  # its own spec: read
    assert (own.returncode, json.loads(own.stdout)) == (0, [])


def test_a_ct_home_from_before_the_record_is_told_by_its_audit_log(spec_file, bank_frame, tmp_path):
    """A home whose steps ran before `platform.json` existed: its audit log names the model."""
    from ct_platform.governance.audit import AuditEvent, append_event, audit_path
    from ct_platform.settings import Paths

    home = tmp_path / "old_home"
    log = audit_path(Paths(home))
    append_event(AuditEvent("rejection", "bank_marketing", "gate", "below the floor"), log)
    houses = spec_variant(spec_file, "houses", {"model": {"name": "houses"}})
    done = ct(["history"], houses, home, tmp_path / "no_instance")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"ct history: CT_HOME {home} belongs to another platform: it holds the state of model "
        f"'bank_marketing' (recorded in {log}), but this command reads spec {houses}, "
        f"CT_HOME {home}, model 'houses'. Not mixing them: set CT_SPEC and CT_HOME for one "
        "platform\n"
    )
    files = []
    for name, rows in (("reference", slice(0, 2000)), ("current", slice(2000, 4000))):
        files.append(tmp_path / f"{name}.csv")
        bank_frame.iloc[rows].to_csv(files[-1], sep=";", index=False)
    drift = ct(["drift", *map(str, files), "--json"], houses, home, tmp_path / "no_instance")
    # It compares two files with the spec's column definitions: it reads no platform state.
    assert drift.returncode == 0, drift.stderr[-2000:]
    assert json.loads(drift.stdout)["verdict"]
