"""The same value reads the same in every protocol, over real HTTP (newcomer's findings).

`value_cases.AGE_CASES`, each sent as `age` of one bank row in every JSON protocol
(dataframe_split, dataframe_records, instances, inputs, V2 FP64 and INT64 tensors) and
every text protocol (CSV, V2 BYTES column tensors, V2 BYTES table tensor): accepted and
scored like its canonical age, or refused with the same status and message, quoting the
value as written (`-0`, `1e-400`, `30.50`). `ct drift` counts the same texts alike
(`monitoring/test_drift_contract.py`). Also: a column sent twice is refused by name in
every protocol (JSON keeps the last of two keys silently), and a UTF-8 byte-order mark is
ignored in CSV and JSON bodies, as `ct drift` ignores it in files.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx
import pandas as pd
import pytest

from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import ThreadedServer, raw_rows
from ct_platform_tests.value_cases import AGE_CASES, AgeCase

INFER = "/v2/models/bank_marketing/infer"
MARK = 424242  # age's place in a body, replaced by the literal under test
BOM = "\ufeff".encode()


@pytest.fixture(scope="module")
def row(holdout: pd.DataFrame, bank_spec: Spec) -> dict:
    return raw_rows(holdout, bank_spec, 1, start=7)[0]


@pytest.fixture(scope="module")
def kinds(bank_spec: Spec) -> dict[str, str]:
    """Column -> its spec type (int, float, category)."""
    return {
        name: bank_spec.dataset.columns[name].type for name in bank_spec.dataset.feature_columns
    }


def _tensors(row: dict, datatype: dict[str, str]) -> dict:
    return {
        "inputs": [
            {"name": name, "shape": [1], "datatype": datatype[name], "data": [value]}
            for name, value in row.items()
        ]
    }


def json_bodies(row: dict, kinds: dict[str, str]) -> dict[str, tuple[str, dict]]:
    """Protocol -> (path, payload) carrying `row`, in every JSON protocol."""
    fp64 = {name: "BYTES" if kind == "category" else "FP64" for name, kind in kinds.items()}
    int64 = {name: "INT64" if kind == "int" else fp64[name] for name, kind in kinds.items()}
    return {
        "dataframe_split": (
            "/invocations",
            {"dataframe_split": {"columns": list(row), "data": [list(row.values())]}},
        ),
        "dataframe_records": ("/invocations", {"dataframe_records": [row]}),
        "instances": ("/invocations", {"instances": [row]}),
        "inputs": ("/invocations", {"inputs": {name: [value] for name, value in row.items()}}),
        "v2_fp64_tensors": (INFER, _tensors(row, fp64)),
        "v2_int64_tensors": (INFER, _tensors(row, int64)),
    }


def text_bodies(row: dict) -> dict[str, tuple[str, str, bytes]]:
    """Protocol -> (path, content type, body) carrying `row` as text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(row)
    writer.writerow(["" if value is None else value for value in row.values()])
    texts = {name: "" if value is None else str(value) for name, value in row.items()}
    table = {
        "inputs": [
            {"name": "t", "shape": [1, len(row)], "datatype": "BYTES", "data": list(texts.values())}
        ]
    }
    json_type = "application/json"
    return {
        "csv": ("/invocations", "text/csv", buffer.getvalue().encode()),
        "v2_bytes_tensors": (
            INFER,
            json_type,
            json.dumps(_tensors(texts, dict.fromkeys(texts, "BYTES"))).encode(),
        ),
        "v2_bytes_table": (INFER, json_type, json.dumps(table).encode()),
    }


def post(server: ThreadedServer, path: str, body: bytes, content_type: str) -> httpx.Response:
    return httpx.post(
        server.url + path, content=body, headers={"content-type": content_type}, timeout=30
    )


def outcome(response: httpx.Response) -> tuple[int, Any]:
    """(200, the predictions) or (status, the message)."""
    body = response.json()
    if response.status_code == 200:
        return 200, body.get("predictions", body.get("outputs"))
    return response.status_code, body.get("message") or body.get("error")


def _json_outcomes(server: ThreadedServer, row: dict, kinds: dict, literal: str) -> dict:
    return {
        protocol: outcome(
            post(
                server,
                path,
                json.dumps(payload).replace(str(MARK), literal).encode(),
                "application/json",
            )
        )
        for protocol, (path, payload) in json_bodies({**row, "age": MARK}, kinds).items()
    }


def _text_outcomes(server: ThreadedServer, row: dict, text: str) -> dict:
    return {
        protocol: outcome(post(server, path, body, content_type))
        for protocol, (path, content_type, body) in text_bodies({**row, "age": text}).items()
    }


@pytest.mark.parametrize("case", [c for c in AGE_CASES if c.json is not None], ids=lambda c: c.json)
def test_a_json_value_reads_alike_in_every_json_protocol(
    open_server: ThreadedServer, row: dict, kinds: dict[str, str], case: AgeCase
) -> None:
    got = _json_outcomes(open_server, row, kinds, case.json)
    if case.scores_as is not None:
        wanted = _json_outcomes(open_server, row, kinds, str(case.scores_as))
        assert {p: status for p, (status, _) in got.items()} == dict.fromkeys(got, 200)
    else:
        wanted = dict.fromkeys(got, (case.status, case.message(case.json)))
    assert got == wanted


@pytest.mark.parametrize("case", AGE_CASES, ids=lambda c: repr(c.text))
def test_a_text_value_reads_alike_in_every_text_protocol(
    open_server: ThreadedServer, row: dict, case: AgeCase
) -> None:
    got = _text_outcomes(open_server, row, case.text)
    if case.scores_as is not None:
        wanted = _text_outcomes(open_server, row, str(case.scores_as))
        assert {p: status for p, (status, _) in got.items()} == dict.fromkeys(got, 200)
    else:
        wanted = dict.fromkeys(got, (case.status, case.text_message()))
    assert got == wanted


def test_a_column_sent_twice_is_refused_by_name_in_every_protocol(
    open_server: ThreadedServer, row: dict, kinds: dict[str, str]
) -> None:
    """The newcomer's example: a second `age` silently won (CSV header and JSON keys)."""
    names = list(row)
    last = len(names)
    split = {"dataframe_split": {"columns": [*names, "age"], "data": [[*row.values(), 99]]}}
    csv_body = ",".join([*names, "age"]) + "\n" + ",".join(str(v) for v in row.values()) + ",99\n"
    # JSON objects cannot hold a key twice in Python: the second `age` is written by hand.
    record = json.dumps(row)[:-1] + ', "age": 99}'
    again = f"'age' (positions {names.index('age')} and {last})"
    columns = f"column(s) sent more than once: {again}; send each once"
    keys = f"key(s) sent more than once: {again}; send each once (JSON keeps only the last)"
    tensors = json_bodies(row, kinds)["v2_fp64_tensors"][1]
    tensors["inputs"].append({"name": "age", "shape": [1], "datatype": "FP64", "data": [99]})
    sent = {
        "dataframe_split": ("/invocations", json.dumps(split), "application/json"),
        "csv": ("/invocations", csv_body, "text/csv"),
        "dataframe_records": (
            "/invocations",
            f'{{"dataframe_records": [{json.dumps(row)}, {record}]}}',
            "application/json",
        ),
        "instances": ("/invocations", f'{{"instances": [{record}]}}', "application/json"),
        "inputs": (
            "/invocations",
            json.dumps({"inputs": {k: [v] for k, v in row.items()}})[:-2] + ', "age": [99]}}',
            "application/json",
        ),
        "v2_tensors": (INFER, json.dumps(tensors), "application/json"),
    }
    got = {
        protocol: outcome(post(open_server, path, body.encode(), content_type))
        for protocol, (path, body, content_type) in sent.items()
    }
    assert got == {
        "dataframe_split": (400, columns),
        "csv": (400, columns),
        "dataframe_records": (400, f"dataframe_records[1]: {keys}"),
        "instances": (400, f"instances[0]: {keys}"),
        "inputs": (400, f"inputs: {keys}"),
        "v2_tensors": (400, f"'inputs': tensor(s) sent more than once: {again}; send each once"),
    }


def test_a_colon_inside_a_text_value_is_not_taken_for_a_repeated_key(
    open_server: ThreadedServer, row: dict
) -> None:
    """The cheap check counts colons: text holding one sends the body to the exact check,
    which accepts it (an unknown category here: the contract's 422, not a 400)."""
    body = json.dumps({"dataframe_records": [{**row, "job": "a:b"}]}).encode()
    status, message = outcome(post(open_server, "/invocations", body, "application/json"))
    assert status == 422 and message.startswith("row 0, column 'job': \"a:b\" is not one of")


def test_a_utf8_byte_order_mark_is_ignored_in_csv_and_json(
    open_server: ThreadedServer, row: dict, kinds: dict[str, str]
) -> None:
    """The newcomer's example: a CSV saved by Excel (BOM first) was refused with `sent
    unknown column(s) ['\\ufeffage']` while `ct drift` read it. JSON bodies likewise."""
    path, content_type, body = text_bodies(row)["csv"]
    plain = outcome(post(open_server, path, body, content_type))
    assert plain[0] == 200
    assert outcome(post(open_server, path, BOM + body, content_type)) == plain
    for protocol, (path, payload) in json_bodies(row, kinds).items():
        body = json.dumps(payload).encode()
        plain = outcome(post(open_server, path, body, "application/json"))
        assert plain[0] == 200, protocol
        assert outcome(post(open_server, path, BOM + body, "application/json")) == plain, protocol
