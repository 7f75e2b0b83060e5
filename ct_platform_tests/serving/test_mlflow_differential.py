"""Differential test: our server and a real `mlflow models serve` on the same model agree.

The pipeline is logged to a throwaway MLflow store through the platform's registry (skops,
explicit trusted types, signature), served by MLflow's own scoring server, and the same
bodies go to both servers: answers must be identical, error statuses the same.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import (
    ThreadedServer,
    free_port,
    raw_rows,
    split_payload,
    wait_until_up,
)

N = 40
MLFLOW_START_TIMEOUT = 180


@pytest.fixture(scope="module")
def mlflow_server(
    fitted_pipeline: Pipeline, train_frame: pd.DataFrame, bank_spec: Spec, tmp_path_factory
) -> Iterator[str]:
    from mlflow import MlflowClient

    from ct_platform.registry.mlflow_registry import ModelRegistry

    store = tmp_path_factory.mktemp("mlflow_store")
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
    registry = ModelRegistry(tracking_uri, model_name="bank_marketing", experiment="differential")
    info = registry.log_candidate(
        fitted_pipeline,
        train=train_frame,
        params={},
        metrics={},
        fingerprint="differential",
        dagster_run_id=None,
    )
    # The version's own artifact folder, asked of this store's registry (a `models:/` URI
    # would be resolved against whatever registry the environment points at).
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    download_uri = client.get_model_version_download_uri(info.name, str(info.version))
    # The SQLite store reports its artifact root as "//tmp/...", which `mlflow models serve`
    # would read as a URI with host "tmp": hand it a plain absolute path.
    model_dir = "/" + download_uri.lstrip("/")
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        # `mlflow models serve` runs `uvicorn` from PATH: it must be this venv's.
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = store / "mlflow-serve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                f"{venv_bin}/mlflow", "models", "serve", "-m", model_dir,
                "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", MLFLOW_START_TIMEOUT, process)
    except (RuntimeError, TimeoutError) as exc:
        process.kill()
        tail = log.read_text(errors="replace")[-2000:]
        pytest.skip(f"`mlflow models serve` could not start ({exc}); its output:\n{tail}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def rows(holdout: pd.DataFrame, bank_spec: Spec) -> list[dict]:
    return raw_rows(holdout, bank_spec, N, start=300)


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    pd.DataFrame(rows).to_csv(buffer, index=False)
    return buffer.getvalue()


def _bodies(rows: list[dict]) -> dict[str, tuple[str, bytes | str | dict]]:
    columns = {column: [row[column] for row in rows] for column in rows[0]}
    return {
        "dataframe_split": ("application/json", split_payload(rows)),
        "dataframe_records": ("application/json", {"dataframe_records": rows}),
        "single row": ("application/json", {"dataframe_records": rows[:1]}),
        "inputs as columns": ("application/json", {"inputs": columns}),
        "csv": ("text/csv", _csv(rows)),
        "charset parameter": ("application/json; charset=utf-8", split_payload(rows[:3])),
        "missing column": (
            "application/json",
            {"dataframe_records": [{k: v for k, v in rows[0].items() if k != "age"}]},
        ),
        "malformed json": ("application/json", b'{"dataframe_split": '),
        "no format key": ("application/json", {"rows": rows[:1]}),
        "unsupported content type": ("text/plain", b"age\n1\n"),
        "latin-1 charset": ("application/json; charset=latin-1", b"{}"),
    }


def _post(url: str, content_type: str, body: bytes | str | dict) -> httpx.Response:
    headers = {"content-type": content_type}
    if isinstance(body, dict):
        return httpx.post(f"{url}/invocations", json=body, headers=headers, timeout=60)
    return httpx.post(f"{url}/invocations", content=body, headers=headers, timeout=60)


@pytest.mark.parametrize(
    "case",
    [
        "dataframe_split",
        "dataframe_records",
        "single row",
        "inputs as columns",
        "csv",
        "charset parameter",
        "missing column",
        "malformed json",
        "no format key",
        "unsupported content type",
        "latin-1 charset",
    ],
)
def test_same_answer_as_mlflow(
    mlflow_server: str, open_server: ThreadedServer, rows: list[dict], case: str
) -> None:
    content_type, body = _bodies(rows)[case]
    theirs = _post(mlflow_server, content_type, body)
    ours = _post(open_server.url, content_type, body)
    assert ours.status_code == theirs.status_code, (theirs.text[:500], ours.text[:500])
    if theirs.status_code == 200:
        assert ours.json() == theirs.json()
    elif theirs.headers["content-type"].startswith("application/json"):
        assert ours.json()["error_code"] == theirs.json()["error_code"]
    else:
        assert ours.headers["content-type"].startswith("text/plain")


def test_health_endpoints_match(mlflow_server: str, open_server: ThreadedServer) -> None:
    for path in ("/ping", "/health"):
        theirs, ours = httpx.get(mlflow_server + path), httpx.get(open_server.url + path)
        assert (ours.status_code, ours.text) == (theirs.status_code, theirs.text)
    assert (
        httpx.get(open_server.url + "/version").text == httpx.get(mlflow_server + "/version").text
    )
