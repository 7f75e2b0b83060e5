"""deploy/dagster_home.sh writes PostgreSQL storage when DAGSTER_PG_* say so, and a Dagster
instance opened from that dagster.yaml keeps runs and partitions in the real server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import dagster as dg
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage
from sqlalchemy.engine import make_url

from ct_platform_tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "deploy" / "dagster_home.sh"


@dg.op
def nothing() -> None:
    """The op of a job whose run is only recorded, never executed."""


@dg.job
def noop() -> None:
    nothing()


def write_instance(home: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "DAGSTER_HOME": str(home), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def pg_variables(url: str) -> dict[str, str]:
    parsed = make_url(url)
    return {
        "DAGSTER_PG_HOST": parsed.host,
        "DAGSTER_PG_PORT": str(parsed.port),
        "DAGSTER_PG_USERNAME": parsed.username,
        "DAGSTER_PG_DB": parsed.database,
    }


def test_instance_on_postgres_keeps_runs_and_partitions(postgres_server, tmp_path, monkeypatch):
    variables = pg_variables(postgres_server.new_database("dagster_home"))
    home = tmp_path / "dagster_home"

    said = write_instance(home, variables)

    assert "PostgreSQL storage" in said
    written = (home / "dagster.yaml").read_text()
    assert "{env: DAGSTER_PG_HOST}" in written and variables["DAGSTER_PG_HOST"] not in written
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        instance.add_dynamic_partitions("batches", ["batch-00001.csv"])
        run = instance.create_run_for_job(noop)
    # A second instance (another process: the daemon, a run worker) sees the same state.
    with dg.DagsterInstance.from_config(str(home)) as again:
        assert again.get_dynamic_partitions("batches") == ["batch-00001.csv"]
        assert again.get_run_by_id(run.run_id).job_name == "noop"


def test_a_dagster_yaml_already_there_is_never_overwritten(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    mine = "# my own settings\nstorage:\n  sqlite:\n    base_dir: /elsewhere\n"
    (home / "dagster.yaml").write_text(mine)

    write_instance(
        home, {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_USERNAME": "u", "DAGSTER_PG_DB": "d"}
    )

    assert (home / "dagster.yaml").read_text() == mine


def test_without_postgres_variables_the_shipped_file_is_copied(tmp_path):
    home = tmp_path / "dagster_home"
    env = {name: "" for name in ("DAGSTER_PG_HOST", "CT_RUN_LAUNCHER")}

    write_instance(home, env)

    assert (home / "dagster.yaml").read_text() == (REPO_ROOT / "dagster.yaml").read_text()
