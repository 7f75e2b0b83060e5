"""Differential test: our server and a real `mlflow models serve` on the same model agree.

The pipeline is logged to a throwaway MLflow store through the platform's registry (skops,
explicit trusted types, signature) and promoted; MLflow's own scoring server serves it from
the registry URI `models:/<name>@champion`, as users do, from a store named the way the
platform names its own (`sqlite:////abs/path`). The same bodies go to both servers: answers
must be identical, error statuses the same. The rows are raw bank rows (pdays=999, the
"never contacted" sentinel; the dropped `duration` column): the logged model must prepare
them as the platform's server does, and the model is trained on data where pdays varies, so
a model that skipped the preparation would answer differently.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from ct_platform.data.contract import check_contract
from ct_platform.governance.lifecycle import set_champion
from ct_platform.registry.versions import CHAMPION
from ct_platform.settings import Spec
from ct_platform.training.bundling import build_bundle
from ct_platform.training.fit import fit_pipeline
from ct_platform_tests.serving.conftest import (
    ThreadedServer,
    free_port,
    server_config,
    split_payload,
    wait_until_up,
)

N = 40
# Generous: `mlflow models serve` imports MLflow and the model in a fresh process, which
# takes minutes on a busy shared machine; a server that never answers still fails the test.
MLFLOW_START_TIMEOUT = 600
MODEL_NAME = "bank_marketing"
# The newest rows of the file: pdays varies there (709 of the last 2,000 rows were contacted
# before), so the sentinel matters to the model.
TRAIN = slice(-8000, -2000)
HOLDOUT = slice(-2000, None)


def _cleaned(rows: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    result = check_contract(rows.reset_index(drop=True), spec.dataset)
    assert result.clean is not None, [rule.message for rule in result.failed]
    return result.clean


@pytest.fixture(scope="module")
def train(bank_frame: pd.DataFrame, bank_spec: Spec) -> pd.DataFrame:
    return _cleaned(bank_frame.iloc[TRAIN], bank_spec)


@pytest.fixture(scope="module")
def pipeline(train: pd.DataFrame, bank_spec: Spec) -> Pipeline:
    return fit_pipeline(train, bank_spec)


@pytest.fixture(scope="module")
def platform_server(
    pipeline: Pipeline, bank_frame: pd.DataFrame, bank_spec: Spec, tmp_path_factory
) -> Iterator[ThreadedServer]:
    """The platform's own server on this model's bundle (its ONNX graph, parity-checked)."""
    bundle = build_bundle(
        pipeline,
        bank_spec,
        name=MODEL_NAME,
        version=1,
        fingerprint="differential",
        holdout=_cleaned(bank_frame.iloc[HOLDOUT], bank_spec),
        directory=tmp_path_factory.mktemp("bundles") / f"{MODEL_NAME}-v1",
    )
    home = tmp_path_factory.mktemp("platform_server_home")
    with ThreadedServer(server_config(bundle, home)) as server:
        yield server


@pytest.fixture(scope="module")
def champion(
    pipeline: Pipeline, train: pd.DataFrame, bank_spec: Spec, tmp_path_factory
) -> tuple[str, str]:
    """(tracking URI, `models:/<name>@champion`) of the model logged and promoted."""
    from ct_platform.registry.mlflow_registry import ModelRegistry

    store = tmp_path_factory.mktemp("mlflow_store")
    # SQLAlchemy's form for an absolute file, as the platform's default store has it.
    tracking_uri = f"sqlite:////{(store / 'mlflow.db').relative_to('/')}"
    registry = ModelRegistry(tracking_uri, model_name=MODEL_NAME, experiment="differential")
    info = registry.log_candidate(
        pipeline, train=train, params={}, metrics={}, fingerprint="differential",
        dagster_run_id=None,
    )  # fmt: skip
    set_champion(registry, info.version, bank_spec)
    return tracking_uri, f"models:/{MODEL_NAME}@{CHAMPION}"


@pytest.fixture(scope="module")
def mlflow_server(champion: tuple[str, str], tmp_path_factory) -> Iterator[str]:
    tracking_uri, model_uri = champion
    store = tmp_path_factory.mktemp("mlflow_serve")
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
                f"{venv_bin}/mlflow", "models", "serve", "-m", model_uri,
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
        process.wait()
        tail = log.read_text(errors="replace")[-2000:]
        pytest.fail(f"`mlflow models serve -m {model_uri}` did not start ({exc}):\n{tail}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            # On a loaded box its workers can take longer than 30 s to stop (CI did).
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def raw_frame(bank_frame: pd.DataFrame, bank_spec: Spec) -> pd.DataFrame:
    """Raw holdout rows as the file has them, without the label: 30 never contacted
    (pdays=999) and 10 contacted before."""
    holdout = bank_frame.iloc[HOLDOUT].drop(columns=[bank_spec.dataset.target])
    never = holdout[holdout["pdays"] == 999].head(N - 10)
    contacted = holdout[holdout["pdays"] != 999].head(10)
    return pd.concat([never, contacted]).sort_index().reset_index(drop=True)


@pytest.fixture(scope="module")
def rows(raw_frame: pd.DataFrame) -> list[dict]:
    """The raw rows as a JSON client sends them: integers stay integers (pdays 999)."""
    return orjson.loads(raw_frame.to_json(orient="records"))


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
    mlflow_server: str, platform_server: ThreadedServer, rows: list[dict], case: str
) -> None:
    content_type, body = _bodies(rows)[case]
    theirs = _post(mlflow_server, content_type, body)
    ours = _post(platform_server.url, content_type, body)
    assert ours.status_code == theirs.status_code, (theirs.text[:500], ours.text[:500])
    if theirs.status_code == 200:
        assert ours.json() == theirs.json()
    elif theirs.headers["content-type"].startswith("application/json"):
        assert ours.json()["error_code"] == theirs.json()["error_code"]
    else:
        assert ours.headers["content-type"].startswith("text/plain")


def test_raw_rows_get_the_platform_answers_from_every_consumer(
    mlflow_server: str,
    platform_server: ThreadedServer,
    champion: tuple[str, str],
    rows: list[dict],
    raw_frame: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's example: on raw rows with the sentinel, `mlflow models serve` on the
    champion and `pyfunc.load_model` (int64 columns as read from the file) answer exactly what
    the platform's server answers."""
    import mlflow

    assert {999} < set(raw_frame["pdays"])  # the sentinel and real day counts
    body = {"dataframe_records": rows}
    ours = _post(platform_server.url, "application/json", body)
    theirs = _post(mlflow_server, "application/json", body)
    assert ours.status_code == theirs.status_code == 200, (ours.text[:500], theirs.text[:500])
    assert theirs.json() == ours.json()

    tracking_uri, model_uri = champion
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    logged = mlflow.pyfunc.load_model(model_uri)
    assert raw_frame["pdays"].dtype == "int64"
    predictions = logged.predict(raw_frame).tolist()
    assert {"predictions": predictions} == ours.json()


def test_health_endpoints_match(mlflow_server: str, platform_server: ThreadedServer) -> None:
    for path in ("/ping", "/health"):
        theirs, ours = httpx.get(mlflow_server + path), httpx.get(platform_server.url + path)
        assert (ours.status_code, ours.text) == (theirs.status_code, theirs.text)
    ours = httpx.get(platform_server.url + "/version").text
    assert ours == httpx.get(mlflow_server + "/version").text


# --- Request values and content types (issue: one strict rule for every protocol) -------
# Where MLflow's scoring protocol defines the behaviour (the NaN literals Python writes), our
# server answers what MLflow answers: same status, same predictions. Where MLflow departs
# from the HTTP standard or coerces silently, we deliberately differ, and the test pins both
# answers so a change on either side shows: MLflow matches content types case-sensitively
# and refuses a quoted charset (RFC 9110 says neither), and scores `true` in a numeric
# column as 1 (we answer 400 naming the column and the value).

CASES_DIR = Path(__file__).parent / "cases"


def _split(rows: list[dict]) -> bytes:
    # json.dumps, as a Python client writes it: NaN and Infinity literals included.
    columns = list(rows[0])
    return json.dumps(
        {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}}
    ).encode()


def _value_bodies(rows: list[dict]) -> dict[str, tuple[str, bytes]]:
    row = rows[0]
    return {
        "NaN literal (issue case file)": (
            "application/json",
            (CASES_DIR / "nan-literal-request.json").read_bytes(),
        ),
        "NaN literal in a float column": (
            "application/json",
            _split([{**row, "euribor3m": float("nan")}, *rows[1:]]),
        ),
        "content type in capitals": ("Application/JSON", _split(rows)),
        "quoted charset": ('application/json; charset="utf-8"', _split(rows)),
        "CSV content type in capitals": (
            "Text/CSV",
            pd.DataFrame(rows).to_csv(index=False).encode(),
        ),
        "bool for a number": ("application/json", _split([{**row, "age": True}])),
    }


SAME_AS_MLFLOW = ["NaN literal in a float column"]
# case -> (MLflow's status, our status)
DELIBERATELY_DIFFERENT = {
    # The case file: NaN for `pdays`, a spec `int` column. The registry's signature
    # types int columns as `long` (so int64 frames score, as MLflow users send them), and
    # MLflow refuses a missing value in a `long` column; our server reads NaN as missing,
    # the same answer as the sentinel 999 (test_request_values pins that).
    "NaN literal (issue case file)": (400, 200),
    "content type in capitals": (415, 200),
    "quoted charset": (415, 200),
    "CSV content type in capitals": (415, 200),
    "bool for a number": (200, 400),
}


def _both_answers(
    mlflow_url: str, ours_url: str, rows: list[dict], case: str
) -> tuple[httpx.Response, httpx.Response]:
    content_type, body = _value_bodies(rows)[case]
    headers = {"content-type": content_type}
    return tuple(  # type: ignore[return-value]
        httpx.post(f"{url}/invocations", content=body, headers=headers, timeout=60)
        for url in (mlflow_url, ours_url)
    )


@pytest.mark.parametrize("case", SAME_AS_MLFLOW)
def test_value_literals_get_the_same_answer_as_mlflow(
    mlflow_server: str,
    platform_server: ThreadedServer,
    rows: list[dict],
    case: str,
) -> None:
    theirs, ours = _both_answers(mlflow_server, platform_server.url, rows, case)
    assert theirs.status_code == ours.status_code == 200, (theirs.text[:500], ours.text[:500])
    assert ours.json() == theirs.json()


@pytest.mark.parametrize("case", list(DELIBERATELY_DIFFERENT))
def test_deliberate_differences_from_mlflow(
    mlflow_server: str,
    platform_server: ThreadedServer,
    rows: list[dict],
    case: str,
) -> None:
    theirs, ours = _both_answers(mlflow_server, platform_server.url, rows, case)
    assert (theirs.status_code, ours.status_code) == DELIBERATELY_DIFFERENT[case], (
        theirs.text[:500],
        ours.text[:500],
    )
