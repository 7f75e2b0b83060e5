"""The single-row parse (`InputSchema._one_row`, a plain Python pass) against the block path.

Each value of the table is sent twice: alone (a one-row request) and as row 0 of a
two-row request whose row 1 is valid (the block path, since only a one-row request takes
the Python pass). Both must give the same arrays, the same violations under `score`, and
the same refusal (class, status, message) under `reject`; every valid value must really
take the one-row path, or the comparison would test nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from ct_platform.serving.bundle import ColumnSchema
from ct_platform.serving.config import OutOfContract
from ct_platform.serving.schema import InputError, InputSchema, OverflowedNumber, ParsedRows

COLUMNS = [
    ColumnSchema("age", "int", nullable=False, min=17, max=100),
    ColumnSchema("job", "category", categories=["admin.", "nan", "retired"]),
    ColumnSchema("pdays", "int", sentinels=[999], min=0, max=30),
    ColumnSchema(
        "default", "category", categories=["no", "yes"], sentinels=["unknown"], nullable=False
    ),
    ColumnSchema("rate", "float"),
    ColumnSchema("city", "category"),
    ColumnSchema("season", "category", categories=["1", "2", "3", "4"]),
]
VALID = {
    "age": 42,
    "job": "retired",
    "pdays": 3,
    "default": "no",
    "rate": 1.5,
    "city": "Porto",
    "season": "2",
}
# (column, value, taken by the one-row path)
TABLE: list[tuple[str, Any, bool]] = [
    ("age", 42, True),
    ("age", 42.0, True),
    ("age", 17, True),  # the contract's bounds are inclusive
    ("age", 100.0, True),
    ("age", 16, False),  # below min
    ("age", 101, False),  # above max
    ("age", 42.5, False),  # a fraction in an int column
    ("age", None, False),  # missing in a required column
    ("age", math.nan, False),
    ("age", True, False),  # a boolean is not a number
    ("age", "42", False),  # text in a JSON protocol
    ("age", [42], False),
    ("age", math.inf, False),
    ("age", 10**400, False),  # an integer beyond float64
    ("age", OverflowedNumber("1e400"), False),
    ("pdays", 999, True),  # the sentinel: missing, though beyond max
    ("pdays", 999.0, True),
    ("pdays", None, True),
    ("pdays", math.nan, True),
    ("pdays", 31, False),
    ("rate", -1e30, True),
    ("rate", 1e39, False),  # beyond float32
    ("rate", -math.inf, False),
    ("rate", None, True),
    ("job", "admin.", True),
    ("job", None, True),
    ("job", "nan", True),  # a category in JSON (missing only in a text protocol)
    ("job", "teacher", False),  # unknown category
    ("job", 3, False),
    ("job", math.nan, False),
    ("default", "yes", True),
    ("default", "unknown", False),  # a sentinel in a required column
    ("default", None, False),
    ("city", "Lisbon", True),  # no categories: any text
    ("city", "", True),
    ("city", None, True),
    ("season", "3", True),
    ("season", 3, False),  # an integer-coded category as a number: the block path
    ("season", 3.5, False),
    ("season", "5", False),
]
POLICIES: list[OutOfContract] = ["reject", "score"]


def _outcome(
    schema: InputSchema, columns: dict[str, list[Any]], *, text: bool | frozenset[str]
) -> Any:
    """The parsed rows, or the refusal as (class, HTTP status, message, violations)."""
    try:
        return schema.from_columns(columns, text=text)
    except InputError as error:
        return type(error), error.status, str(error), getattr(error, "violations", None)


def _first_row(parsed: ParsedRows) -> list[Any]:
    """Row 0 of every column, NaN spelled as a string so that == compares it."""
    return _nan_spelled([column[0] for column in parsed.columns])


def _nan_spelled(row: list[Any]) -> list[Any]:
    return ["NaN" if isinstance(value, float) and math.isnan(value) else value for value in row]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("column", "value", "fast"), TABLE)
def test_one_row_and_block_path_agree(
    policy: OutOfContract, column: str, value: Any, fast: bool
) -> None:
    schema = InputSchema(COLUMNS, policy)
    row = {**VALID, column: value}
    alone = _outcome(schema, {name: [sent] for name, sent in row.items()}, text=False)
    block = _outcome(schema, {name: [sent, VALID[name]] for name, sent in row.items()}, text=False)
    if isinstance(alone, tuple) or isinstance(block, tuple):
        assert alone == block
        return
    assert alone.n_rows == 1
    assert _first_row(alone) == _first_row(block)
    assert alone.violations == block.violations
    assert alone.numeric.dtype == np.float64
    assert alone.numeric.shape == (3, 1)
    assert [array.dtype for array in alone.columns] == [array.dtype for array in block.columns]
    taken = schema._one_row([row[name] for name in schema.names], [False] * len(COLUMNS))
    assert (taken is not None) == fast
    if fast:  # the plain values the ONNX feed and the log read: the block path's, typed alike
        assert _nan_spelled(alone.values) == _first_row(block)
        assert [type(value) for value in alone.values] == [
            float if array.dtype == np.float64 else str for array in block.columns
        ]


@pytest.mark.parametrize(
    ("column", "value", "fast"),
    [
        ("job", "nan", True),  # missing in a text protocol, though also a category
        ("job", " NaN ", False),  # missing too: the column path says so
        ("city", "", True),
        ("city", "-nan", True),
        ("default", "", False),  # missing in a required column
        ("season", "4", True),
        ("season", "four", False),
    ],
)
def test_text_protocol_categories_agree(column: str, value: Any, fast: bool) -> None:
    schema = InputSchema(COLUMNS, "reject")
    texts = frozenset(spec.name for spec in COLUMNS if not spec.is_numeric)
    row = {**VALID, column: value}
    alone = _outcome(schema, {n: [v] for n, v in row.items()}, text=texts)
    block = _outcome(schema, {n: [v, VALID[n]] for n, v in row.items()}, text=texts)
    if isinstance(alone, tuple) or isinstance(block, tuple):
        assert alone == block
    else:
        assert _first_row(alone) == _first_row(block)
    text_flags = [name in texts for name in schema.names]
    taken = schema._one_row([row[name] for name in schema.names], text_flags)
    assert (taken is not None) == fast


def test_one_row_values_fed_to_the_model() -> None:
    sent = {**{name: [value] for name, value in VALID.items()}, "pdays": [999], "job": [None]}
    parsed = InputSchema(COLUMNS).from_columns(sent)
    assert _first_row(parsed) == [42.0, "", "NaN", "no", 1.5, "Porto", "2"]
    np.testing.assert_array_equal(parsed.numeric, [[42.0], [math.nan], [1.5]])


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("column", "value", "fast"), TABLE)
def test_a_one_row_split_parses_as_its_columns(
    policy: OutOfContract, column: str, value: Any, fast: bool
) -> None:
    # `dataframe_split` takes the one-row pass without transposing: in schema order, and
    # in any other order of the columns sent.
    schema = InputSchema(COLUMNS, policy)
    row = {**VALID, column: value}
    expected = _outcome(schema, {name: [sent] for name, sent in row.items()}, text=False)
    for names in (schema.names, schema.names[::-1]):
        try:
            split = schema.from_split(list(names), [[row[name] for name in names]])
        except InputError as error:
            split = type(error), error.status, str(error), getattr(error, "violations", None)
        if isinstance(expected, tuple) or isinstance(split, tuple):
            assert split == expected
            continue
        assert _first_row(split) == _first_row(expected)
        assert split.violations == expected.violations
        np.testing.assert_array_equal(split.numeric, expected.numeric)
