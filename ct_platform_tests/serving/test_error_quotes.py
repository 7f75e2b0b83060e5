"""Every parser error quotes what was sent, over real HTTP (the newcomer's finding 2).

An unknown column is named with the columns missing and expected; a number beyond float64
(`1e400`) is quoted as written and said to overflow; a malformed structure shows what came.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pandas as pd
import pytest

from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import ThreadedServer, raw_rows

INFER = "/v2/models/bank_marketing/infer"
OVERFLOW = "1e400 overflows to infinity: beyond float64 (±1.798e+308)"


@pytest.fixture(scope="module")
def row(holdout: pd.DataFrame, bank_spec: Spec) -> dict:
    return raw_rows(holdout, bank_spec, 1, start=7)[0]


@pytest.fixture(scope="module")
def expected_columns(bank_spec: Spec) -> str:
    names = bank_spec.dataset.feature_columns
    return f"the model expects {len(names)}: {names}"


def _send(server: ThreadedServer, path: str, body: str | bytes, kind: str = "json") -> tuple:
    content_type = "text/csv" if kind == "csv" else "application/json"
    response = httpx.post(
        server.url + path, content=body, headers={"content-type": content_type}, timeout=30
    )
    payload = response.json()
    return response.status_code, payload.get("message") or payload.get("error")


def _renamed(row: dict) -> dict:
    """`age` sent as `agee` (a typo), in the same place."""
    return {("agee" if key == "age" else key): value for key, value in row.items()}


def test_unknown_column_is_quoted_with_missing_and_expected(
    open_server: ThreadedServer, row: dict, expected_columns: str
) -> None:
    typo = _renamed(row)
    split = {"dataframe_split": {"columns": list(typo), "data": [list(typo.values())]}}
    wanted = f"missing column(s) ['age']; sent unknown column(s) ['agee']; {expected_columns}"
    assert _send(open_server, "/invocations", json.dumps(split)) == (400, wanted)
    records = {"dataframe_records": [row, typo]}
    assert _send(open_server, "/invocations", json.dumps(records)) == (400, f"row 1: {wanted}")
    header = ",".join(typo) + "\n" + ",".join("" if v is None else str(v) for v in typo.values())
    assert _send(open_server, "/invocations", header, kind="csv") == (400, wanted)
    tensors = [
        {"name": name, "shape": [1], "datatype": "BYTES", "data": [value]}
        for name, value in typo.items()
    ]
    assert _send(open_server, INFER, json.dumps({"inputs": tensors})) == (
        400,
        f"missing input tensor(s) for column(s) ['age']; sent unknown tensor(s) ['agee']; "
        f"the model expects one per column: {list(row)}",
    )


def _with_raw_age(payload: Any, literal: str) -> str:
    """`payload` as JSON with age's value written as `literal` (json.dumps cannot write 1e400)."""
    return json.dumps(payload).replace("424242", literal)


def test_number_beyond_float64_is_quoted_as_sent(open_server: ThreadedServer, row: dict) -> None:
    marked = {**row, "age": 424242}
    records = _with_raw_age({"dataframe_records": [marked]}, "1e400")
    assert _send(open_server, "/invocations", records) == (400, f"row 0, column 'age': {OVERFLOW}")
    negative = _with_raw_age({"inputs": {k: [v] for k, v in marked.items()}}, "-1e400")
    assert _send(open_server, "/invocations", negative) == (
        400,
        f"row 0, column 'age': -{OVERFLOW}",
    )
    tensors = [
        {"name": k, "shape": [1], "datatype": "FP64" if k == "age" else "BYTES", "data": [v]}
        for k, v in marked.items()
    ]
    assert _send(open_server, INFER, _with_raw_age({"inputs": tensors}, "1e400")) == (
        400,
        f"row 0, column 'age': {OVERFLOW}",
    )
    header = ",".join(row) + "\n" + ",".join("" if v is None else str(v) for v in marked.values())
    assert _send(open_server, "/invocations", header.replace("424242", "1e400"), kind="csv") == (
        400,
        "row 0, column 'age': \"1e400\" overflows to infinity: beyond float64 (±1.798e+308)",
    )


@pytest.mark.parametrize(
    ("literal", "problem"),
    [
        ("1e-400", "1e-400 is below the contract's min 17"),  # reads as 0.0
        ("41.50", "expected an integer, got 41.50"),  # reads as 41.5
        ("1.7E2", "1.7E2 is above the contract's max 100"),  # reads as 170.0
    ],
)
def test_numbers_are_quoted_as_written(
    open_server: ThreadedServer, row: dict, literal: str, problem: str
) -> None:
    """The newcomer's example: `1e-400` was quoted as `0.0` in the error."""
    marked = {**row, "age": 424242}
    split = {"dataframe_split": {"columns": list(marked), "data": [list(marked.values())]}}
    status = 400 if problem.startswith("expected") else 422
    wanted = (status, f"row 0, column 'age': {problem}")
    assert _send(open_server, "/invocations", _with_raw_age(split, literal)) == wanted
    tensors = [
        {"name": k, "shape": [1], "datatype": "FP64" if k == "age" else "BYTES", "data": [v]}
        for k, v in marked.items()
    ]
    assert _send(open_server, INFER, _with_raw_age({"inputs": tensors}, literal)) == wanted


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (
            lambda r: {"dataframe_split": {"columns": list(r), "data": [list(r.values())[:3]]}},
            "row 0 must be a list of 15 values, one per column; got [{}] (3 values)",
        ),
        (
            lambda r: {"dataframe_split": {"columns": "age", "data": []}},
            "'columns' must be a list of column names: got \"age\"",
        ),
        (
            lambda r: {"dataframe_split": {"columns": list(r), "data": {"a": 1}}},
            "'data' must be a list of rows: got {\"a\": 1}",
        ),
        (
            lambda r: {"dataframe_records": {"age": 41}},
            "'dataframe_records' must be a list of row objects; got {\"age\": 41}",
        ),
        (
            lambda r: {"dataframe_records": [r, 7]},
            "row 1 is not a JSON object: got 7",
        ),
        (
            lambda r: {"inputs": {**{k: [v] for k, v in r.items()}, "age": {"v": 1}}},
            "column 'age': expected a list of values, got {\"v\": 1}",
        ),
    ],
    ids=[
        "short row",
        "columns not a list",
        "data not a list",
        "records not a list",
        "record not an object",
        "column not a list",
    ],
)
def test_malformed_structures_quote_what_came(
    open_server: ThreadedServer, row: dict, build: Any, expected: str
) -> None:
    payload = build(row)
    if expected.startswith("row 0 must be"):
        expected = expected.format(json.dumps(list(row.values())[:3])[1:-1])
    assert _send(open_server, "/invocations", json.dumps(payload)) == (400, expected)


@pytest.mark.parametrize(
    ("tensor_change", "expected"),
    [
        ({"shape": "1"}, "tensor 'age': 'shape' must be a list of sizes; got \"1\""),
        ({"data": 41}, "tensor 'age': 'data' must be a list; got 41"),
        (
            {"datatype": 64},
            "tensor 'age': 'datatype' must be a string such as \"FP64\" or \"BYTES\"; got 64",
        ),
        (
            {"datatype": "FP8"},
            "tensor 'age': datatype FP8 is not numeric; send one of "
            "['INT8', 'INT16', 'INT32', 'INT64', 'UINT8', 'UINT16', 'UINT32', 'UINT64', 'FP16', "
            "'FP32', 'FP64', 'BYTES']",
        ),
    ],
)
def test_v2_tensor_errors_quote_what_came(
    open_server: ThreadedServer, row: dict, tensor_change: dict, expected: str
) -> None:
    tensors = [
        {
            "name": k,
            "shape": [1],
            "datatype": "BYTES",
            "data": [v],
            **(tensor_change if k == "age" else {}),
        }
        for k, v in row.items()
    ]
    assert _send(open_server, INFER, json.dumps({"inputs": tensors})) == (400, expected)
    assert _send(open_server, INFER, json.dumps({"inputs": {"age": 1}})) == (
        400,
        "expected a JSON object with an 'inputs' list of tensors; got 'inputs' is {\"age\": 1}",
    )
