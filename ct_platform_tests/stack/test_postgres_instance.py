"""deploy/dagster_home.sh writes PostgreSQL storage when DAGSTER_PG_* say so, and a Dagster
instance opened from that dagster.yaml keeps runs and partitions in the real server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import dagster as dg
from dagster_docker.container_context import DockerContainerContext
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


def test_the_docker_run_launcher_block_opens_a_patient_launcher(tmp_path):
    """The compose stack's launcher: its network, the variables and volumes runs get, the
    stack label `make down` removes run containers by, and an engine timeout past docker-py's
    60 s (creating a container under vfs took longer: the run failed to launch)."""
    home = tmp_path / "dagster_home"
    env = {
        "DAGSTER_PG_HOST": "",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "CT_HOME": "/ct_home",
        "CT_RUN_LAUNCHER": "docker",
        "CT_DOCKER_NETWORK": "ct-test",
        "CT_DOCKER_VOLUMES": "ct-test-home:/ct_home,ct-test-landing:/app/data/incoming",
    }
    write_instance(home, env)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        launcher = instance.run_launcher
        client = launcher._get_client(DockerContainerContext())

    assert type(launcher).__name__ == "PatientDockerRunLauncher"
    assert launcher.networks == ["ct-test"]
    assert {"MLFLOW_TRACKING_URI", "CT_HOME"} <= set(launcher.env_vars)
    assert launcher.container_kwargs["volumes"] == [
        "ct-test-home:/ct_home",
        "ct-test-landing:/app/data/incoming",
    ]
    assert launcher.container_kwargs["labels"] == {"ct-platform/stack": "ct-test"}
    assert launcher.container_kwargs["auto_remove"] is True  # 2 GB each under vfs
    assert client.api.timeout == 600


def test_the_docker_run_launcher_block_loads_with_no_variable_to_pass(tmp_path):
    """No variable set: `env_vars: []`, not an empty block Dagster reads as null and refuses."""
    home = tmp_path / "dagster_home"
    names = ("DAGSTER_PG_HOST", "MLFLOW_TRACKING_URI", "CT_HOME", "CT_SPEC", "CT_DOCKER_VOLUMES")
    env = {name: "" for name in names}
    write_instance(home, {**env, "CT_RUN_LAUNCHER": "docker", "CT_DOCKER_NETWORK": "ct-test"})

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_launcher.env_vars == []
