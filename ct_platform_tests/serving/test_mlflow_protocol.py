"""MLflow scoring protocol over real HTTP: formats, answers, and every kind of bad input."""

from __future__ import annotations

import io

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from ct_platform.serving.config import DEFAULT_MAX_BODY_BYTES
from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import (
    ThreadedServer,
    expected_labels,
    raw_rows,
    split_payload,
)

N = 25


@pytest.fixture(scope="module")
def rows(holdout: pd.DataFrame, bank_spec: Spec) -> list[dict]:
    return raw_rows(holdout, bank_spec, N)


@pytest.fixture(scope="module")
def labels(fitted_pipeline: Pipeline, holdout: pd.DataFrame, bank_spec: Spec) -> list:
    return expected_labels(fitted_pipeline, holdout, bank_spec, N)


def invoke(server: ThreadedServer, payload: object = None, **kwargs: object) -> httpx.Response:
    if payload is not None:
        kwargs["json"] = payload
    return httpx.post(f"{server.url}/invocations", timeout=10, **kwargs)


def test_health_and_version(open_server: ThreadedServer) -> None:
    for path in ("/ping", "/health"):
        response = httpx.get(open_server.url + path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
    assert httpx.get(f"{open_server.url}/version").text


@pytest.mark.parametrize(
    "layout", ["dataframe_split", "dataframe_records", "instances", "inputs", "inputs_columns"]
)
def test_json_layouts_give_pipeline_labels(
    open_server: ThreadedServer, rows: list[dict], labels: list, layout: str
) -> None:
    payload = {
        "dataframe_split": split_payload(rows),
        "dataframe_records": {"dataframe_records": rows},
        "instances": {"instances": rows},
        "inputs": {"inputs": rows},
        "inputs_columns": {"inputs": {column: [r[column] for r in rows] for column in rows[0]}},
    }[layout]
    response = invoke(open_server, payload)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": labels}


def test_csv_gives_pipeline_labels(
    open_server: ThreadedServer, rows: list[dict], labels: list
) -> None:
    buffer = io.StringIO()
    pd.DataFrame(rows).to_csv(buffer, index=False)  # nulls become empty fields
    response = invoke(open_server, content=buffer.getvalue(), headers={"content-type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": labels}


def test_sentinel_is_scored_as_missing(open_server: ThreadedServer, rows: list[dict]) -> None:
    """pdays=999 means "never contacted": the server maps it to NaN, as training did."""
    never_contacted = [row for row in rows if row["pdays"] is None][:1]
    assert never_contacted, "holdout sample has no never-contacted row"
    with_sentinel = [{**never_contacted[0], "pdays": 999}]
    as_null = invoke(open_server, {"dataframe_records": never_contacted}).json()
    as_sentinel = invoke(open_server, {"dataframe_records": with_sentinel}).json()
    assert as_null == as_sentinel


def test_request_id_is_echoed(open_server: ThreadedServer, rows: list[dict]) -> None:
    response = invoke(
        open_server, {"dataframe_records": rows[:1]}, headers={"x-request-id": "abc-1"}
    )
    assert response.headers["x-request-id"] == "abc-1"
    assert response.headers["x-model-slot"] == "stable"
    generated = invoke(open_server, {"dataframe_records": rows[:1]}).headers["x-request-id"]
    assert len(generated) == 32


def _without(row: dict, column: str) -> dict:
    return {key: value for key, value in row.items() if key != column}


BAD_JSON_CASES = {
    "missing column": (lambda r: {"dataframe_records": [_without(r, "age")]}, "age"),
    "string for a number": (lambda r: {"dataframe_records": [{**r, "age": "old"}]}, "age"),
    "bool for a number": (lambda r: {"dataframe_records": [{**r, "campaign": True}]}, "campaign"),
    "number for a category": (lambda r: {"dataframe_records": [{**r, "marital": 3}]}, "marital"),
    "fraction for an int": (lambda r: {"dataframe_records": [{**r, "age": 41.5}]}, "age"),
    "nested value": (lambda r: {"dataframe_records": [{**r, "age": [1]}]}, "age"),
    "no rows": (lambda r: {"dataframe_records": []}, "no rows"),
    "two formats": (lambda r: {"dataframe_records": [r], "instances": [r]}, "exactly one"),
    "no format": (lambda r: {"rows": [r]}, "exactly one"),
    "list body": (lambda r: [r], "exactly one"),
    "split without columns": (lambda r: {"dataframe_split": {"data": [[1]]}}, "columns"),
    "ragged split row": (
        lambda r: {"dataframe_split": {"columns": list(r), "data": [list(r.values())[:-1]]}},
        "row 0",
    ),
    "positional instances": (lambda r: {"instances": [list(r.values())]}, "positional"),
    "ragged columns": (
        lambda r: {"inputs": {**{k: [v] for k, v in r.items()}, "age": [30, 40]}},
        "columns have different numbers of values: 1 in ['job', ",
    ),
}


@pytest.mark.parametrize("case", list(BAD_JSON_CASES))
def test_bad_json_input_is_400_naming_the_problem(
    open_server: ThreadedServer, rows: list[dict], case: str
) -> None:
    build, expected_in_message = BAD_JSON_CASES[case]
    response = invoke(open_server, build(rows[0]))
    assert response.status_code == 400, response.text
    body = response.json()
    # Schema misfits are INVALID_PARAMETER_VALUE in MLflow, unusable payloads BAD_REQUEST.
    assert body["error_code"] in {"BAD_REQUEST", "INVALID_PARAMETER_VALUE"}
    assert expected_in_message in body["message"]


@pytest.mark.parametrize(
    ("content", "expected_in_message"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b'{"dataframe_records": [', "valid JSON"),
        (b"\xff\xfe", "valid JSON"),
    ],
)
def test_malformed_or_empty_body_is_400(
    open_server: ThreadedServer, content: bytes, expected_in_message: str
) -> None:
    response = invoke(open_server, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert expected_in_message in response.json()["message"]


def test_nan_where_not_nullable_is_422(bundle_dir, rows: list[dict], tmp_path) -> None:
    """A missing value in a `nullable: false` column breaks the data contract."""
    from dataclasses import replace

    from ct_platform.serving.bundle import read_meta
    from ct_platform.serving.config import ServerConfig
    from ct_platform_tests.serving.conftest import copy_bundle

    meta = read_meta(bundle_dir)
    strict_columns = [replace(c, nullable=c.name != "age") for c in meta.columns]
    strict = copy_bundle(bundle_dir, tmp_path / "strict", columns=strict_columns)
    with ThreadedServer(ServerConfig(bundle=strict, home=tmp_path / "home")) as server:
        response = invoke(server, {"dataframe_records": [{**rows[0], "age": None}]})
        ok = invoke(server, {"dataframe_records": [{**rows[0], "pdays": None}]})
    assert (response.status_code, response.json()["message"]) == (
        422,
        "row 0, column 'age': missing value (null) but the contract requires one (nullable: false)",
    )
    assert ok.status_code == 200


def test_csv_errors_are_400(open_server: ThreadedServer) -> None:
    response = invoke(
        open_server, content="age,job\n41,admin.\n", headers={"content-type": "text/csv"}
    )
    assert response.status_code == 400
    assert "missing column" in response.json()["message"]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/json; charset=latin-1",
        "application/json; format=pandas-split",
        None,
    ],
)
def test_unsupported_content_type_is_415(
    open_server: ThreadedServer, rows: list[dict], content_type
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = invoke(open_server, content=b'{"inputs": {}}', headers=headers)
    assert response.status_code == 415
    assert response.headers["content-type"].startswith("text/plain")


def test_body_over_limit_is_413(open_server: ThreadedServer) -> None:
    too_big = b'{"inputs": {"age": [' + b"1," * DEFAULT_MAX_BODY_BYTES + b"1]}}"
    response = invoke(open_server, content=too_big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "limit" in response.json()["message"]


def test_body_over_limit_without_length_is_413(open_server: ThreadedServer) -> None:
    def chunks():
        for _ in range(20):
            yield b" " * (DEFAULT_MAX_BODY_BYTES // 10)

    response = invoke(open_server, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_a_body_sent_in_chunks_is_read_whole(
    open_server: ThreadedServer, rows: list[dict], labels: list
) -> None:
    """`read_body` joins a body that arrives as several ASGI messages (chunked transfer,
    no Content-Length): scored as the same body sent at once, on the scoring route and on
    Starlette's (feedback)."""
    body = orjson.dumps(split_payload(rows[:1]))
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    headers = {"content-type": "application/json", "x-request-id": "chunked-1"}
    chunked = invoke(open_server, content=iter(pieces), headers=headers)
    whole = invoke(open_server, content=body, headers={"content-type": "application/json"})
    assert chunked.status_code == whole.status_code == 200
    assert chunked.json() == whole.json() == {"predictions": labels[:1]}
    feedback = orjson.dumps({"request_id": "chunked-1", "label": labels[0]})
    answer = httpx.post(
        f"{open_server.url}/feedback",
        content=iter([feedback[:5], feedback[5:]]),
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 200 and answer.json() == {"recorded": 1}


def test_thousand_rows_in_one_request(
    open_server: ThreadedServer, fitted_pipeline: Pipeline, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    rows = raw_rows(holdout, bank_spec, 1000)
    response = invoke(open_server, split_payload(rows))
    assert response.status_code == 200
    predicted = np.array(response.json()["predictions"])
    assert (predicted == np.array(expected_labels(fitted_pipeline, holdout, bank_spec, 1000))).all()


def test_openapi_describes_the_surface(open_server: ThreadedServer) -> None:
    document = httpx.get(f"{open_server.url}/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert {"/invocations", "/v2/models/{name}/infer", "/feedback"} <= set(document["paths"])
    row = document["components"]["schemas"]["Row"]
    assert "emp.var.rate" in row["required"]
