"""One reading of text values, wherever a row arrives (`ct_platform.text_values`).

A newcomer's finding: ingest quarantined `job` = "nan" ("outside the declared categories")
and `euribor3m` = "NaN" ("not a number"), `ct drift` counted neither as missing, and the
model server's `text/csv` scored both as missing. The same cell now gets the same verdict
from ingest (`read_batch` + `check_contract`), `ct drift` (`summarise_file`) and the server
(real HTTP, `text/csv`): the empty field and `nan` in any case and sign are missing in every
column; `NA`, `null`, `N/A`, `None` are values (not a number; an undeclared category), and
`4_1`, `0x10`, non-ASCII digits are not numbers in any of the three.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import pandas as pd
import pytest

from ct_platform.data.contract import check_contract
from ct_platform.data.reader import read_batch
from ct_platform.monitoring.sources import summarise_file
from ct_platform.monitoring.summaries import NumericSummary
from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import ThreadedServer

MISSING, NOT_A_NUMBER, UNKNOWN_CATEGORY = "missing", "not a number", "unknown category"
MISSING_SPELLINGS = ["", "nan", "NaN", " -NaN ", "+nan"]
# Not missing, and not a number either (as Python's float() alone would read some).
VALUE_SPELLINGS = ["NA", "null", "N/A", "None", "-", "4_1", "0x10", "\u0664\u0661"]
COLUMNS = {"age": NOT_A_NUMBER, "euribor3m": NOT_A_NUMBER, "job": UNKNOWN_CATEGORY}
CELLS = [
    pytest.param(
        column, text, MISSING if text in MISSING_SPELLINGS else verdict, id=f"{column}-{text!r}"
    )
    for column, verdict in COLUMNS.items()
    for text in MISSING_SPELLINGS + VALUE_SPELLINGS
]
BATCH_ROWS = 60  # above the spec's min_rows (50): only the cell under test can fail


@pytest.fixture(scope="module")
def batch(bank_frame: pd.DataFrame) -> pd.DataFrame:
    """Raw demo rows as text, as a landed CSV batch holds them."""
    return bank_frame.iloc[:BATCH_ROWS].astype(str).reset_index(drop=True)


def _with_cell(batch: pd.DataFrame, column: str, text: str, path: Path, sep: str) -> Path:
    frame = batch.copy()
    frame.loc[0, column] = text
    frame.to_csv(path, sep=sep, index=False, quoting=csv.QUOTE_MINIMAL)
    return path


def _ingest_verdict(path: Path, spec: Spec, column: str) -> str | None:
    result = check_contract(read_batch(path, spec.dataset), spec.dataset)
    failed = {rule.rule for rule in result.failed if rule.column == column}
    rules = {rule.rule: rule for rule in result.rules if rule.column == column}
    assert {rule.column for rule in result.failed} <= {column}, result.failed
    if rules["completeness"].figures["n_missing"] == 1:
        return MISSING
    if "type" in failed:
        return NOT_A_NUMBER
    return UNKNOWN_CATEGORY if "categories" in failed else None


def _drift_verdict(path: Path, spec: Spec, column: str) -> str | None:
    summary = summarise_file(path, spec.dataset, sample_rows=1_000)
    assert sum(summary.missing.values()) == summary.missing[column], summary.missing
    if summary.missing[column] == 1:
        return MISSING
    observed = summary.columns[column]
    if isinstance(observed, NumericSummary):
        return NOT_A_NUMBER if observed.unparseable == 1 else None
    violations = observed.violations()
    return UNKNOWN_CATEGORY if violations and violations.n_unknown == 1 else None


def _post_csv(server: ThreadedServer, row: dict[str, str]) -> httpx.Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(row)
    writer.writerow(row.values())
    headers = {"content-type": "text/csv"}
    return httpx.post(f"{server.url}/invocations", content=buffer.getvalue(), headers=headers)


def _server_verdict(server: ThreadedServer, row: dict[str, str], column: str, text: str) -> str:
    response = _post_csv(server, {**row, column: text})
    message = "" if response.status_code == 200 else response.json()["message"]
    if response.status_code == 400 and f"column '{column}': expected a number" in message:
        return NOT_A_NUMBER
    if response.status_code == 422 and "is not one of the contract's categories" in message:
        return UNKNOWN_CATEGORY
    # Scored (the spec's columns are nullable): missing when it scores exactly like the
    # empty field, CSV's own way to say "missing".
    assert response.status_code == 200, response.text
    as_empty = _post_csv(server, {**row, column: ""})
    return MISSING if response.json() == as_empty.json() else "scored as a value"


@pytest.mark.parametrize(("column", "text", "verdict"), CELLS)
def test_ingest_drift_and_server_read_a_cell_alike(
    open_server: ThreadedServer,
    bank_spec: Spec,
    batch: pd.DataFrame,
    tmp_path: Path,
    column: str,
    text: str,
    verdict: str,
) -> None:
    open_server.model = "bank_marketing"
    path = _with_cell(batch, column, text, tmp_path / "batch.csv", bank_spec.dataset.separator)
    features = batch.loc[0, bank_spec.dataset.feature_columns].to_dict()
    assert (
        _ingest_verdict(path, bank_spec, column),
        _drift_verdict(path, bank_spec, column),
        _server_verdict(open_server, features, column, text),
    ) == (verdict, verdict, verdict)
