"""Differential test of request values and content types against `mlflow models serve`.

Where MLflow's scoring protocol defines the behaviour (the NaN literals Python writes), our
server answers what MLflow answers: same status, same predictions. Where MLflow departs
from the HTTP standard or coerces silently, we deliberately differ, and the test pins both
answers so a change on either side shows: MLflow matches content types case-sensitively
and refuses a quoted charset (RFC 9110 says neither), and scores `true` in a numeric
column as 1 (we answer 400 naming the column and the value).
The MLflow server is the one `test_mlflow_differential` starts (its module fixture).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest

from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import ThreadedServer, raw_rows
from ct_platform_tests.serving.test_mlflow_differential import mlflow_server  # noqa: F401

CASES_DIR = Path(__file__).parent / "cases"


def _split(rows: list[dict]) -> bytes:
    # json.dumps, as a Python client writes it: NaN and Infinity literals included.
    columns = list(rows[0])
    return json.dumps(
        {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}}
    ).encode()


def _bodies(rows: list[dict]) -> dict[str, tuple[str, bytes]]:
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


SAME = [
    "NaN literal (issue case file)",
    "NaN literal in a float column",
]
# case -> (MLflow's status, our status)
DELIBERATELY_DIFFERENT = {
    "content type in capitals": (415, 200),
    "quoted charset": (415, 200),
    "CSV content type in capitals": (415, 200),
    "bool for a number": (200, 400),
}


def _both(
    mlflow_url: str, ours_url: str, rows: list[dict], case: str
) -> tuple[httpx.Response, httpx.Response]:
    content_type, body = _bodies(rows)[case]
    headers = {"content-type": content_type}
    return tuple(  # type: ignore[return-value]
        httpx.post(f"{url}/invocations", content=body, headers=headers, timeout=60)
        for url in (mlflow_url, ours_url)
    )


@pytest.fixture(scope="module")
def rows(holdout: pd.DataFrame, bank_spec: Spec) -> list[dict]:
    return raw_rows(holdout, bank_spec, 5, start=40)


@pytest.mark.parametrize("case", SAME)
def test_same_answer_as_mlflow(
    mlflow_server: str,  # noqa: F811
    open_server: ThreadedServer,
    rows: list[dict],
    case: str,
) -> None:
    theirs, ours = _both(mlflow_server, open_server.url, rows, case)
    assert theirs.status_code == ours.status_code == 200, (theirs.text[:500], ours.text[:500])
    assert ours.json() == theirs.json()


@pytest.mark.parametrize("case", list(DELIBERATELY_DIFFERENT))
def test_deliberate_differences_from_mlflow(
    mlflow_server: str,  # noqa: F811
    open_server: ThreadedServer,
    rows: list[dict],
    case: str,
) -> None:
    theirs, ours = _both(mlflow_server, open_server.url, rows, case)
    assert (theirs.status_code, ours.status_code) == DELIBERATELY_DIFFERENT[case], (
        theirs.text[:500],
        ours.text[:500],
    )
