"""Differential test of request values and content types against `mlflow models serve`.

Where MLflow's scoring protocol defines the behaviour (JSON literals Python writes, content
type matching), our server answers what MLflow answers: same status, same predictions.
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


@pytest.mark.parametrize(
    "case",
    [
        "NaN literal (issue case file)",
        "NaN literal in a float column",
        "content type in capitals",
        "quoted charset",
        "CSV content type in capitals",
        "bool for a number",
    ],
)
def test_same_answer_as_mlflow(
    mlflow_server: str,  # noqa: F811
    open_server: ThreadedServer,
    holdout: pd.DataFrame,
    bank_spec: Spec,
    case: str,
) -> None:
    content_type, body = _bodies(raw_rows(holdout, bank_spec, 5, start=40))[case]
    headers = {"content-type": content_type}
    theirs = httpx.post(f"{mlflow_server}/invocations", content=body, headers=headers, timeout=60)
    ours = httpx.post(f"{open_server.url}/invocations", content=body, headers=headers, timeout=60)
    assert ours.status_code == theirs.status_code, (theirs.text[:500], ours.text[:500])
    if theirs.status_code == 200:
        assert ours.json() == theirs.json()
