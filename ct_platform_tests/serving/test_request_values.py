"""One strict rule for request values, the same in every protocol, over real HTTP.

Each case sends one row whose value in one column is under test, in every protocol that
can carry it (MLflow dataframe_split / dataframe_records / instances / inputs, CSV, V2
column tensors, V2 BYTES tensors, V2 table tensor). A value is either accepted and scored
exactly like its canonical spelling (NaN like null, "41" in a text protocol like 41), or
refused with a 400 whose message names the column and the value as sent. Nothing is
silently coerced (true is not 1, 1e39 is not float32 infinity, 3.5 is not category "3").
A well-formed value outside the data contract (here: an unknown category) gets a 422 whose
message is exact (test_contract.py has the contract's other rules).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import (
    ThreadedServer,
    raw_rows,
    season_bundle,
    server_config,
)

CASES_DIR = Path(__file__).parent / "cases"
MISSING = object()  # "this protocol cannot say it": the case is skipped there
ASTRONAUT = (
    422,
    "row 0, column 'job': \"astronaut\" is not one of the contract's categories ['admin.', "
    "'blue-collar', 'entrepreneur', 'housemaid', 'management', 'retired', 'self-employed', "
    "'services', 'student', 'technician', 'unemployed', 'unknown']",
)


# --- protocols: (server, row, column kinds) -> answer --------------------------------------


def _post_json(server: ThreadedServer, path: str, payload: Any) -> httpx.Response:
    # json.dumps writes NaN / Infinity literals and big integers, as Python clients do.
    return httpx.post(
        server.url + path,
        content=json.dumps(payload),
        headers={"content-type": "application/json"},
        timeout=30,
    )


def _invocations(build: Callable[[dict], Any]) -> Callable[..., httpx.Response]:
    return lambda server, row, numeric: _post_json(server, "/invocations", build(row))


def _csv(server: ThreadedServer, row: dict, numeric: set[str]) -> httpx.Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(row)
    writer.writerow(["" if value is None else value for value in row.values()])
    return httpx.post(
        f"{server.url}/invocations",
        content=buffer.getvalue(),
        headers={"content-type": "text/csv"},
        timeout=30,
    )


def _v2_columns(*, all_bytes: bool) -> Callable[..., httpx.Response]:
    def post(server: ThreadedServer, row: dict, numeric: set[str]) -> httpx.Response:
        tensors = [
            {
                "name": name,
                "shape": [1],
                "datatype": "FP64" if name in numeric and not all_bytes else "BYTES",
                "data": [value],
            }
            for name, value in row.items()
        ]
        return _post_json(server, f"/v2/models/{server.model}/infer", {"inputs": tensors})

    return post


def _v2_table(server: ThreadedServer, row: dict, numeric: set[str]) -> httpx.Response:
    tensor = {
        "name": "table",
        "shape": [1, len(row)],
        "datatype": "BYTES",
        "data": [list(row.values())],
    }
    return _post_json(server, f"/v2/models/{server.model}/infer", {"inputs": [tensor]})


JSON_PROTOCOLS = {
    "dataframe_split": _invocations(
        lambda row: {"dataframe_split": {"columns": list(row), "data": [list(row.values())]}}
    ),
    "dataframe_records": _invocations(lambda row: {"dataframe_records": [row]}),
    "instances": _invocations(lambda row: {"instances": [row]}),
    "inputs_columns": _invocations(lambda row: {"inputs": {k: [v] for k, v in row.items()}}),
    "v2_typed_tensors": _v2_columns(all_bytes=False),
}
TEXT_PROTOCOLS = {
    "csv": _csv,
    "v2_bytes_tensors": _v2_columns(all_bytes=True),
    "v2_table_tensor": _v2_table,
}


def answer(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    return body["predictions"] if "predictions" in body else body["outputs"]


def message(response: httpx.Response) -> str:
    body = response.json()
    return body.get("message") or body.get("error")


# --- the table ------------------------------------------------------------------------------

# (column, value sent, canonical value it must score like | a list of message parts of a 400
# | (status, the exact message))
BANK_JSON_CASES: dict[str, tuple[str, Any, Any]] = {
    "int as float": ("age", 41.0, ("same", 41)),
    "NaN literal is missing": ("pdays", float("nan"), ("same", None)),
    "NaN literal is missing like the sentinel": ("pdays", float("nan"), ("same", 999)),
    "NaN in a category is missing": ("job", float("nan"), ("same", None)),
    "Infinity": ("age", float("inf"), ["age", "Infinity"]),
    "-Infinity": ("euribor3m", float("-inf"), ["euribor3m", "-Infinity"]),
    "Infinity in a category": ("job", float("inf"), ["job", "Infinity"]),
    "bool for a number": ("age", True, ["age", "true"]),
    "bool for a float": ("euribor3m", False, ["euribor3m", "false"]),
    "string for a number": ("age", "41", ["age", '"41"']),
    "object for a number": ("age", {"v": 41}, ["age", '{"v": 41}']),
    "fraction for an int": ("age", 41.5, ["age", "41.5"]),
    "huge int": ("age", 10**400, ["age", "1000000000"]),
    "beyond float32": ("euribor3m", 1e39, ["euribor3m", "1e+39"]),
    "number for a category": ("job", 3, ["job", "3"]),
    "bool for a category": ("job", True, ["job", "true"]),
    "unknown category": ("job", "astronaut", ASTRONAUT),
}
# A JSON string is never a missing-value spelling (null and NaN are): "NaN" is a category.
# (V2 BYTES tensors are text: there "NaN" is missing, see BANK_TEXT_CASES.)
MLFLOW_JSON_CASES: dict[str, tuple[str, Any, Any]] = {
    "NaN string in a category": ("job", "NaN", (422, ASTRONAUT[1].replace("astronaut", "NaN"))),
}
BANK_TEXT_CASES: dict[str, tuple[str, Any, Any]] = {
    "number as text": ("age", "41", ("same", 41)),
    "float as text": ("euribor3m", "4.857", ("same", 4.857)),
    "empty is missing": ("pdays", "", ("same", None)),
    "NaN text is missing": ("pdays", "NaN", ("same", None)),
    # One list of missing-value spellings for text (serving.schema.MISSING_TEXT), every column.
    "NaN text in a category is missing": ("job", "NaN", ("same", None)),
    "nan text in any case, spaced": ("job", " nAn ", ("same", None)),
    "empty category is missing": ("job", "", ("same", None)),
    "text 42 for a number is 42 (CSV and V2 BYTES alike)": ("age", "42", ("same", 42)),
    "inf text": ("age", "inf", ["age", '"inf"']),
    "underscore digits": ("age", "4_1", ["age", '"4_1"']),
    "non-ASCII digits": ("age", "\u0664\u0661", ["age", '"\u0664\u0661"']),  # as sent
    "word for a number": ("age", "forty", ["age", '"forty"']),
    "unknown category": ("job", "astronaut", ASTRONAUT),
}
# Text protocols that are JSON too (V2 BYTES) carry JSON values: the same rules apply.
BANK_BYTES_CASES: dict[str, tuple[str, Any, Any]] = {
    "bool in BYTES for a number": ("age", True, ["age", "true"]),
    "number in BYTES": ("age", 41, ("same", 41)),
    "object in BYTES": ("age", {"v": 1}, ["age", '{"v": 1}']),
    "bool in BYTES for a category": ("job", False, ["job", "false"]),
}


def _cases(table: dict[str, tuple[str, Any, Any]], protocols: dict[str, Callable]) -> list[Any]:
    return [
        pytest.param(protocol, *case, id=f"{protocol}-{name}")
        for name, case in table.items()
        for protocol in protocols
    ]


@pytest.fixture(scope="module")
def bank(open_server: ThreadedServer, holdout: pd.DataFrame, bank_spec: Spec) -> Iterator[Any]:
    open_server.model = "bank_marketing"
    row = raw_rows(holdout, bank_spec, 1, start=7)[0]
    yield open_server, row, set(bank_spec.dataset.numeric_features)


def _check(
    post: Callable[..., httpx.Response],
    server: ThreadedServer,
    row: dict,
    numeric: set[str],
    column: str,
    value: Any,
    expected: Any,
) -> None:
    response = post(server, {**row, column: value}, numeric)
    if isinstance(expected, tuple) and expected[0] == "same":
        assert answer(response) == answer(post(server, {**row, column: expected[1]}, numeric))
        return
    if isinstance(expected, tuple):
        assert (response.status_code, message(response)) == expected
        return
    assert response.status_code == 400, response.text
    for part in expected:
        assert part in message(response), (part, message(response))


@pytest.mark.parametrize(
    ("protocol", "column", "value", "expected"),
    _cases(BANK_JSON_CASES, JSON_PROTOCOLS)
    + _cases(MLFLOW_JSON_CASES, {k: JSON_PROTOCOLS[k] for k in JSON_PROTOCOLS if k[:2] != "v2"})
    + _cases(BANK_TEXT_CASES, TEXT_PROTOCOLS)
    + _cases(BANK_BYTES_CASES, {k: TEXT_PROTOCOLS[k] for k in TEXT_PROTOCOLS if k != "csv"}),
)
def test_bank_values(bank: Any, protocol: str, column: str, value: Any, expected: Any) -> None:
    server, row, numeric = bank
    post = {**JSON_PROTOCOLS, **TEXT_PROTOCOLS}[protocol]
    _check(post, server, row, numeric, column, value, expected)


def test_nan_literal_case_file_scores_pdays_as_missing(bank: Any) -> None:
    """The issue's example: Python's json.dumps wrote NaN; MLflow accepts it, and so do we."""
    server, _, _ = bank
    body = (CASES_DIR / "nan-literal-request.json").read_bytes()
    assert b"NaN" in body
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{server.url}/invocations", content=body, headers=headers)
    as_null = body.replace(b"NaN", b"null")
    as_sentinel = body.replace(b"NaN", b"999")
    for other in (as_null, as_sentinel):
        same = httpx.post(f"{server.url}/invocations", content=other, headers=headers)
        assert answer(response) == answer(same)
    assert answer(response) in ([0], [1])


def test_boolean_in_bytes_case_file_is_refused_naming_age(bank: Any) -> None:
    """The issue's example: `true` in age's BYTES tensor was scored as age 1."""
    server, _, _ = bank
    body = (CASES_DIR / "v2-boolean-in-bytes-request.json").read_bytes()
    response = httpx.post(f"{server.url}/v2/models/bank_marketing/infer", content=body)
    assert response.status_code == 400
    assert message(response) == "row 0, column 'age': expected a number, got true"


def test_bool_in_typed_tensor_names_tensor_and_value(bank: Any) -> None:
    server, row, numeric = bank
    response = JSON_PROTOCOLS["v2_typed_tensors"](server, {**row, "campaign": True}, numeric)
    assert response.status_code == 400
    assert message(response) == "tensor 'campaign' element 0: true is not a FP64 value"


def test_int_tensor_values_must_fit_the_datatype(bank: Any) -> None:
    server, row, _ = bank
    tensors = [{"name": k, "shape": [1], "datatype": "BYTES", "data": [v]} for k, v in row.items()]

    def infer(name: str, datatype: str, value: Any) -> httpx.Response:
        changed = [
            {**t, "datatype": datatype, "data": [value]} if t["name"] == name else t
            for t in tensors
        ]
        return _post_json(server, "/v2/models/bank_marketing/infer", {"inputs": changed})

    assert infer("age", "INT32", 41).status_code == 200
    for datatype, value in (("UINT8", -1), ("INT8", 300), ("INT64", "41"), ("INT8", 300.0)):
        refused = infer("age", datatype, value)
        assert refused.status_code == 400
        assert f"not a {datatype} value" in message(refused) and "'age'" in message(refused)


def test_an_integral_float_in_an_int_tensor_is_its_integer(bank: Any) -> None:
    """The newcomer's example: an INT64 tensor refused age 30.0, which FP64 tensors and the
    JSON formats take as 30; 30.5 is refused as a fraction, in the words of every protocol."""
    server, row, _ = bank
    tensors = [{"name": k, "shape": [1], "datatype": "BYTES", "data": [v]} for k, v in row.items()]

    def infer(value: Any) -> httpx.Response:
        changed = [
            {**t, "datatype": "INT64", "data": [value]} if t["name"] == "age" else t
            for t in tensors
        ]
        return _post_json(server, "/v2/models/bank_marketing/infer", {"inputs": changed})

    assert answer(infer(30.0)) == answer(infer(30))
    refused = infer(30.5)
    assert (refused.status_code, message(refused)) == (
        400,
        "row 0, column 'age': expected an integer, got 30.5",
    )


def test_nan_and_null_in_an_int_tensor_are_missing(bank: Any) -> None:
    """The newcomer's example: NaN in a V2 INT64 tensor was a 400, while NaN is missing in
    every other protocol. Null and NaN are missing in any numeric tensor; a column that may
    not miss a value then says so like elsewhere (the contract's 422)."""
    server, row, _ = bank
    tensors = [{"name": k, "shape": [1], "datatype": "BYTES", "data": [v]} for k, v in row.items()]

    def infer(name: str, value: Any) -> httpx.Response:
        changed = [
            {**t, "datatype": "INT64", "data": [value]} if t["name"] == name else t for t in tensors
        ]
        return _post_json(server, "/v2/models/bank_marketing/infer", {"inputs": changed})

    as_sentinel = answer(infer("pdays", 999))
    assert answer(infer("pdays", float("nan"))) == as_sentinel
    assert answer(infer("pdays", None)) == as_sentinel


# --- integer-coded categories (a season written 1-4 in the data) --------------------------


@pytest.fixture(scope="module")
def season_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    """A real regression bundle whose category `season` is coded "1".."4" in its data."""
    folder = tmp_path_factory.mktemp("season")
    with ThreadedServer(server_config(season_bundle(folder), folder / "home")) as server:
        server.model = "seasons"
        yield server


SEASON_PROTOCOLS = {**JSON_PROTOCOLS, "v2_bytes_tensors": TEXT_PROTOCOLS["v2_bytes_tensors"]}
SEASON_CASES: dict[str, tuple[str, Any, Any]] = {
    "integer for an integer-coded category": ("season", 3, ("same", "3")),
    "integral float": ("season", 3.0, ("same", "3")),
    "fraction": ("season", 3.5, ["season", "3.5"]),
    "integer outside the categories": (
        "season",
        5,
        (
            422,
            "row 0, column 'season': 5 is not one of the contract's categories "
            "['1', '2', '3', '4']",
        ),
    ),
    "bool": ("season", True, ["season", "true"]),
}


@pytest.mark.parametrize(
    ("protocol", "column", "value", "expected"),
    _cases(SEASON_CASES, SEASON_PROTOCOLS),
)
def test_integer_coded_category(
    season_server: ThreadedServer, protocol: str, column: str, value: Any, expected: Any
) -> None:
    post = SEASON_PROTOCOLS[protocol]
    row = {"season": "2", "temp": 12.5}
    _check(post, season_server, row, {"temp"}, column, value, expected)


def test_season_three_scores_as_season_three(season_server: ThreadedServer) -> None:
    """The issue's example: `3` from a JSON client is season "3", not a 400 (nor season 1)."""
    three = _post_json(
        season_server, "/invocations", {"dataframe_records": [{"season": 3, "temp": 10.0}]}
    )
    one = _post_json(
        season_server, "/invocations", {"dataframe_records": [{"season": "1", "temp": 10.0}]}
    )
    assert answer(three)[0] > answer(one)[0] + 10  # y = 10 * season + temp


def test_an_int_tensor_carries_an_integer_coded_category(season_server: ThreadedServer) -> None:
    """The JSON formats take 3 for season "3": so does a V2 INT64 tensor (a BYTES tensor was
    the only way before), with the same words for what the JSON formats refuse."""

    def infer(datatype: str, season: Any) -> httpx.Response:
        tensors = [
            {"name": "season", "shape": [1], "datatype": datatype, "data": [season]},
            {"name": "temp", "shape": [1], "datatype": "FP64", "data": [12.5]},
        ]
        return _post_json(season_server, "/v2/models/seasons/infer", {"inputs": tensors})

    def records(season: Any) -> httpx.Response:
        row = {"season": season, "temp": 12.5}
        return _post_json(season_server, "/invocations", {"dataframe_records": [row]})

    assert answer(infer("INT64", 3)) == answer(infer("INT64", 3.0)) == answer(infer("BYTES", "3"))
    for season in (3.5, 5, True):
        refused, json_refused = infer("INT64", season), records(season)
        assert json_refused.status_code in (400, 422)
        if season is True:  # not a number at all: the datatype says so
            assert message(refused) == "tensor 'season' element 0: true is not a INT64 value"
            continue
        assert (refused.status_code, message(refused)) == (
            json_refused.status_code,
            message(json_refused),
        )
    assert message(infer("FP64", 3)) == (
        "tensor 'season': categorical column needs datatype BYTES (or an integer datatype: "
        "its categories are integers), got FP64"
    )
