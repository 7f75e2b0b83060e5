"""The many-row `dataframe_split` body read straight into typed rows
(`InputSchema.from_split_body`) against the general path (`load_json` + `from_split`).

Each value of the one-row table is sent as row 1 of a 60-row body whose other rows are
valid, and the body is parsed twice: as the server does (typed first) and with the typed
reading switched off. Both must give the same arrays, the same violations under `score`
and the same refusal (class, status, message quoting the value as sent) under `reject`;
every value a JSON client sends in its column's own type, valid, must really be read typed,
or the comparison would test nothing. Then bodies the typed reading must leave to the
general path (a key sent twice, a lone surrogate, other column orders...), and the same
through a real server.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from ct_platform.serving import schema as schema_module
from ct_platform.serving.config import OutOfContract
from ct_platform.serving.mlflow_protocol import parse_json
from ct_platform.serving.schema import InputError, InputSchema, OverflowedNumber, ParsedRows
from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import ThreadedServer, raw_rows, split_payload
from ct_platform_tests.serving.test_one_row_path import COLUMNS, POLICIES, TABLE, VALID

ROWS = 60


def _literal(value: Any) -> str:
    """A value as a JSON client writes it (NaN and Infinity as Python's json does)."""
    return value.text if isinstance(value, OverflowedNumber) else json.dumps(value)


def _body(rows: list[list[Any]], columns: list[str] | None = None) -> bytes:
    names = json.dumps(columns or [column.name for column in COLUMNS])
    data = ",".join("[" + ",".join(map(_literal, row)) + "]" for row in rows)
    return f'{{"dataframe_split": {{"columns": {names}, "data": [{data}]}}}}'.encode()


def _valid_rows(n: int) -> list[list[Any]]:
    return [[VALID[column.name] for column in COLUMNS] for _ in range(n)]


def _outcome(body: bytes, schema: InputSchema) -> Any:
    try:
        return parse_json(body, schema)
    except InputError as error:
        return type(error), error.status, str(error), getattr(error, "violations", None)


def _general_outcome(body: bytes, schema: InputSchema, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patch:
        patch.setattr(schema_module, "TYPED_SPLIT_MIN_BYTES", math.inf)
        return _outcome(body, schema)


def _columns(parsed: ParsedRows) -> list[list[Any]]:
    """Every column as a list, NaN spelled as a string so that == compares it."""
    return [
        ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in column.tolist()]
        for column in parsed.columns
    ]


def _assert_same(typed: Any, general: Any) -> None:
    if isinstance(typed, tuple) or isinstance(general, tuple):
        assert typed == general
        return
    assert typed.n_rows == general.n_rows
    assert _columns(typed) == _columns(general)
    assert [a.dtype for a in typed.columns] == [a.dtype for a in general.columns]
    np.testing.assert_array_equal(typed.numeric, general.numeric)
    assert typed.violations == general.violations
    assert typed.ignored_columns == general.ignored_columns


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("column", "value", "one_row_fast"), TABLE)
def test_typed_and_general_reading_agree(
    policy: OutOfContract,
    column: str,
    value: Any,
    one_row_fast: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema = InputSchema(COLUMNS, policy)
    rows = _valid_rows(ROWS)
    rows[1][schema.names.index(column)] = value
    body = _body(rows)
    assert len(body) >= schema_module.TYPED_SPLIT_MIN_BYTES
    general = _general_outcome(body, schema, monkeypatch)
    _assert_same(_outcome(body, schema), general)
    # Every value of its column's JSON type (a finite number, a string, null) that the
    # policy accepts is read typed, but a number out of range under `score`: the
    # per-column rule judges it.
    numeric = schema.columns[schema.names.index(column)].is_numeric
    own_type = value is None or type(value) in ((int, float) if numeric else (str,))
    finite = not isinstance(value, float) or math.isfinite(value)
    in_range = one_row_fast or not numeric or value is None
    expected = own_type and finite and in_range and not isinstance(general, tuple)
    assert (schema.from_split_body(body) is not None) == expected


def _reordered(schema: InputSchema) -> bytes:
    names = list(reversed(schema.names))
    return _body([[VALID[name] for name in names]] * ROWS, names)


def _extra_column(schema: InputSchema) -> bytes:
    return _body([[*row, 1] for row in _valid_rows(ROWS)], [*schema.names, "extra"])


def _replace_value(body: bytes, old: str, new: str) -> bytes:
    return body.replace(old.encode(), new.encode(), 1)


OTHER_BODIES = {
    "columns in another order": _reordered,
    "an unknown column": _extra_column,
    "a key sent twice": lambda s: _body(_valid_rows(ROWS)).replace(
        b'"dataframe_split": {', b'"dataframe_split": {"columns": [], ', 1
    ),
    "a lone surrogate": lambda s: _replace_value(_body(_valid_rows(ROWS)), '"Porto"', '"\\ud800"'),
    "an escaped category": lambda s: _replace_value(
        _body(_valid_rows(ROWS)), '"Porto"', '"Port\\u006f"'
    ),
    "a colon in a string": lambda s: _replace_value(_body(_valid_rows(ROWS)), '"Porto"', '"a:b"'),
    "a byte-order mark": lambda s: b"\xef\xbb\xbf" + _body(_valid_rows(ROWS)),
    "a row too short": lambda s: _replace_value(_body(_valid_rows(ROWS)), ',"Porto"', ""),
    "a row as an object": lambda s: _replace_value(
        _body(_valid_rows(ROWS)), "[42,", '{"age": 42}, [42,'
    ),
    "a top-level key more": lambda s: _body(_valid_rows(ROWS))[:-1] + b', "params": {}}',
    "a boolean age": lambda s: _replace_value(_body(_valid_rows(ROWS)), "[42,", "[true,"),
    "Infinity": lambda s: _replace_value(_body(_valid_rows(ROWS)), "1.5", "Infinity"),
    "an integer beyond float64": lambda s: _replace_value(
        _body(_valid_rows(ROWS)), "1.5", "1" + "0" * 400
    ),
}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", OTHER_BODIES)
def test_bodies_the_general_path_reads_its_own_way(
    policy: OutOfContract, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read by the general path, with its answer: accepted, refused or quoted as before."""
    schema = InputSchema(COLUMNS, policy)
    body = OTHER_BODIES[name](schema)
    assert schema.from_split_body(body) is None
    _assert_same(_outcome(body, schema), _general_outcome(body, schema, monkeypatch))


def test_the_server_quotes_a_many_row_breach_as_sent(
    open_server: ThreadedServer, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    """Over HTTP, a 300-row body read typed would hold age 101 as 101.0: the refusal
    still names row, column, the value as sent and the rule."""
    rows = raw_rows(holdout, bank_spec, 300)
    rows[157]["age"] = 101
    payload = split_payload(rows)
    response = httpx.post(f"{open_server.url}/invocations", json=payload, timeout=60)
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert message.startswith("row 157, column 'age': 101 ")
    assert "above the contract's max 100" in message


def test_the_bodies_changed_are_changed() -> None:
    """Each body of OTHER_BODIES differs from the valid one it is made from."""
    schema = InputSchema(COLUMNS, "reject")
    valid = _body(_valid_rows(ROWS))
    assert all(make(schema) != valid for make in OTHER_BODIES.values())
