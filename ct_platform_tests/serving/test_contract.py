"""The data contract at the server's door, over real HTTP to the real server.

The newcomer's finding: `age` 500 (the spec says max 100) was scored without a word, where a
batch holding it would be quarantined by the contract gate. By default such a request is
refused with a 422 naming row, column, value as sent and rule, and the champion keeps
serving; under `serving.out_of_contract: score` it is scored. Either way /metrics counts the
breaches by column and rule.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from ct_platform.serving.bundle import read_meta
from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import (
    ThreadedServer,
    copy_bundle,
    raw_rows,
    server_config,
    split_payload,
)
from ct_platform_tests.serving.test_v2_protocol import column_tensors, table_tensor

AGE_500 = "row 0, column 'age': 500 is above the contract's max 100"
INFER = "/v2/models/bank_marketing/infer"


@pytest.fixture
def reject_server(bundle_dir: Path, tmp_path: Path) -> Iterator[ThreadedServer]:
    """The default policy, fresh for each test: its /metrics counts only that test's calls."""
    with ThreadedServer(server_config(bundle_dir, tmp_path)) as server:
        yield server


@pytest.fixture
def score_server(bundle_dir: Path, tmp_path: Path) -> Iterator[ThreadedServer]:
    config = server_config(bundle_dir, tmp_path, out_of_contract="score")
    with ThreadedServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def row(holdout: pd.DataFrame, bank_spec: Spec) -> dict:
    return raw_rows(holdout, bank_spec, 1, start=7)[0]


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(rows[0])
    writer.writerows([["" if v is None else v for v in r.values()] for r in rows])
    return buffer.getvalue()


def _post(server: ThreadedServer, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(server.url + path, timeout=60, **kwargs)


# protocol -> (rows, spec) -> response; the rows' values as a client sends them.
PROTOCOLS: dict[str, Callable[[ThreadedServer, list[dict], Spec], httpx.Response]] = {
    "dataframe_split": lambda s, rows, spec: _post(s, "/invocations", json=split_payload(rows)),
    "dataframe_records": lambda s, rows, spec: _post(
        s, "/invocations", json={"dataframe_records": rows}
    ),
    "inputs_columns": lambda s, rows, spec: _post(
        s, "/invocations", json={"inputs": {k: [r[k] for r in rows] for k in rows[0]}}
    ),
    "csv": lambda s, rows, spec: _post(
        s, "/invocations", content=_csv(rows), headers={"content-type": "text/csv"}
    ),
    "v2_typed_tensors": lambda s, rows, spec: _post(
        s, INFER, json={"inputs": column_tensors(rows, spec)}
    ),
    "v2_table_tensor": lambda s, rows, spec: _post(
        s, INFER, json={"inputs": [table_tensor(rows, spec)]}
    ),
}


def message(response: httpx.Response) -> str:
    body = response.json()
    return body.get("message") or body.get("error")


def violations(server: ThreadedServer) -> dict[tuple[str, str, str], float]:
    """`ct_contract_violations_total` from /metrics: (column, rule, action) -> count."""
    text = httpx.get(f"{server.url}/metrics").text
    pattern = re.compile(
        r'^ct_contract_violations_total\{column="([^"]*)",rule="([^"]*)",action="([^"]*)"\} (\S+)$',
        re.M,
    )
    return {(c, r, a): float(v) for c, r, a, v in pattern.findall(text)}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_age_500_is_refused_with_422_and_the_champion_keeps_serving(
    reject_server: ThreadedServer, row: dict, bank_spec: Spec, protocol: str
) -> None:
    post = PROTOCOLS[protocol]
    response = post(reject_server, [{**row, "age": 500}], bank_spec)
    # CSV carries text: the value is quoted as the text it was.
    sent = '"500"' if protocol == "csv" else "500"
    assert response.status_code == 422, response.text
    assert message(response) == AGE_500.replace("500", sent, 1)
    assert post(reject_server, [row], bank_spec).status_code == 200
    assert violations(reject_server) == {("age", "max", "rejected"): 1.0}


CONTRACT_CASES = {
    "below min": ("age", 5, "row 0, column 'age': 5 is below the contract's min 17"),
    "float above max": (
        "euribor3m",
        10.5,
        "row 0, column 'euribor3m': 10.5 is above the contract's max 10",
    ),
    "negative below min": (
        "cons.conf.idx",
        -80.5,
        "row 0, column 'cons.conf.idx': -80.5 is below the contract's min -80",
    ),
    "unknown category": (
        "marital",
        "widowed",
        "row 0, column 'marital': \"widowed\" is not one of the contract's categories "
        "['divorced', 'married', 'single', 'unknown']",
    ),
}


@pytest.mark.parametrize("protocol", ["dataframe_records", "v2_typed_tensors"])
@pytest.mark.parametrize("case", list(CONTRACT_CASES))
def test_each_contract_rule_is_refused_naming_value_and_rule(
    open_server: ThreadedServer, row: dict, bank_spec: Spec, protocol: str, case: str
) -> None:
    column, value, expected = CONTRACT_CASES[case]
    response = PROTOCOLS[protocol](open_server, [{**row, column: value}], bank_spec)
    assert (response.status_code, message(response)) == (422, expected)


def test_sentinel_and_missing_are_within_the_contract(
    open_server: ThreadedServer, row: dict, bank_spec: Spec
) -> None:
    """pdays 999 is the spec's sentinel (max 999 anyway); null in a nullable column is missing."""
    for changed in ({"pdays": 999}, {"age": None}, {"job": None}):
        response = PROTOCOLS["dataframe_records"](open_server, [{**row, **changed}], bank_spec)
        assert response.status_code == 200, (changed, response.text)


@pytest.mark.parametrize("protocol", ["dataframe_split", "csv", "v2_typed_tensors"])
def test_a_1000_row_batch_is_refused_naming_the_first_bad_row(
    reject_server: ThreadedServer,
    holdout: pd.DataFrame,
    bank_spec: Spec,
    protocol: str,
) -> None:
    rows = raw_rows(holdout, bank_spec, 1000)
    rows[637] = {**rows[637], "age": 500}
    rows[900] = {**rows[900], "job": "astronaut"}
    rows[901] = {**rows[901], "age": 3}
    response = PROTOCOLS[protocol](reject_server, rows, bank_spec)
    sent = '"500"' if protocol == "csv" else "500"
    assert response.status_code == 422, response.text
    assert message(response) == (
        f"row 637, column 'age': {sent} is above the contract's max 100 "
        "(and 2 more out-of-contract value(s) in this request)"
    )
    assert violations(reject_server) == {
        ("age", "max", "rejected"): 1.0,
        ("age", "min", "rejected"): 1.0,
        ("job", "categories", "rejected"): 1.0,
    }
    clean = [r for index, r in enumerate(rows) if index not in (637, 900, 901)]
    assert PROTOCOLS[protocol](reject_server, clean, bank_spec).status_code == 200


def test_score_policy_scores_out_of_contract_values_and_counts_them(
    score_server: ThreadedServer,
    row: dict,
    bank_spec: Spec,
    fitted_pipeline: Pipeline,
) -> None:
    """`serving.out_of_contract: score`: scored as sent (an unknown category as none of
    the known ones, as the fitted one-hot encoder does), counted under `scored`."""
    sent = {**row, "age": 500, "job": "astronaut"}
    invocations = PROTOCOLS["dataframe_records"](score_server, [sent], bank_spec)
    v2 = PROTOCOLS["v2_typed_tensors"](score_server, [sent], bank_spec)
    assert invocations.status_code == 200, invocations.text
    assert v2.status_code == 200, v2.text
    frame = pd.DataFrame([sent])[bank_spec.dataset.feature_columns]
    numeric = bank_spec.dataset.numeric_features
    frame[numeric] = frame[numeric].astype(float)
    expected = fitted_pipeline.predict_proba(frame)[0]
    served = v2.json()["outputs"][1]["data"]
    assert served == pytest.approx(expected.tolist(), abs=1e-4)
    assert invocations.json()["predictions"] == fitted_pipeline.predict(frame).tolist()
    assert violations(score_server) == {
        ("age", "max", "scored"): 2.0,
        ("job", "categories", "scored"): 2.0,
    }


@pytest.fixture
def required_age_server(bundle_dir: Path, tmp_path: Path) -> Iterator[ThreadedServer]:
    """The bank bundle with `age` and `pdays` declared `nullable: false` in its contract."""
    meta = read_meta(bundle_dir)
    columns = [
        dataclasses.replace(column, nullable=False) if column.name in ("age", "pdays") else column
        for column in meta.columns
    ]
    bundle = copy_bundle(bundle_dir, tmp_path / "required-age", columns=columns)
    with ThreadedServer(server_config(bundle, tmp_path / "home")) as server:
        yield server


def test_missing_value_in_a_required_column_is_refused(
    required_age_server: ThreadedServer, row: dict, bank_spec: Spec
) -> None:
    """A missing required value breaks `nullable: false`; a sentinel is a recorded answer."""
    row = {**row, "pdays": 999}  # this row's pdays is the sentinel, sent as null by raw_rows
    post = PROTOCOLS["dataframe_records"]
    missing = post(required_age_server, [{**row, "age": None}], bank_spec)
    assert (missing.status_code, message(missing)) == (
        422,
        "row 0, column 'age': missing value (null) but the contract requires one (nullable: false)",
    )
    assert post(required_age_server, [{**row, "pdays": 999}], bank_spec).status_code == 200
    csv_missing = PROTOCOLS["csv"](required_age_server, [row, {**row, "pdays": None}], bank_spec)
    assert (csv_missing.status_code, message(csv_missing)) == (
        422,
        "row 1, column 'pdays': missing value (\"\") but the contract requires one "
        "(nullable: false)",
    )
    assert violations(required_age_server) == {
        ("age", "nullable", "rejected"): 1.0,
        ("pdays", "nullable", "rejected"): 1.0,
    }
