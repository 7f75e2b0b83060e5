"""A real `mlflow server` (deploy/mlflow-server.sh) for the tests that talk to MLflow over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ct_platform_tests.conftest import REPO_ROOT

# The Dagster instance and batch fixtures, and a small fitted bank pipeline, shared with the
# defs and registry tests.
from ct_platform_tests.defs.conftest import instance, land_bank_batches  # noqa: F401
from ct_platform_tests.registry.conftest import bank_spec, fitted, train_frame  # noqa: F401

SERVER_SCRIPT = REPO_ROOT / "deploy" / "mlflow-server.sh"
# MLflow imports for a minute or more when the shared box is loaded; it answers /health once
# its database is migrated and its workers are up.
START_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class MlflowServer:
    url: str
    backend: str  # "postgresql" or "sqlite"
    artifacts: Path  # the server's --artifacts-destination


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    pytest.fail(f"mlflow server not healthy after {START_TIMEOUT_SECONDS}s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def mlflow_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """`deploy/mlflow-server.sh` on a free port: PostgreSQL backend when the session has a
    PostgreSQL server, else SQLite; artifacts served by the server from its own folder."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    try:
        backend_uri = request.getfixturevalue("postgres_server").new_database("mlflow_server")
    except pytest.skip.Exception:  # no PostgreSQL here: the server still runs, on SQLite
        backend_uri = f"sqlite:///{folder / 'mlflow.db'}"
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CT_HOME": str(folder),
        "MLFLOW_BACKEND_STORE_URI": backend_uri,
        "MLFLOW_ARTIFACTS_DESTINATION": str(folder / "served-artifacts"),
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = folder / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", str(SERVER_SCRIPT)],
            cwd=folder,  # anything MLflow defaults to ./ stays in the test's folder
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log)
        yield MlflowServer(url, backend_uri.split(":", 1)[0], folder / "served-artifacts")
    finally:
        os.killpg(process.pid, 15)  # the script exec's mlflow, which starts uvicorn workers
        process.wait(timeout=60)
