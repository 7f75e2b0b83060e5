"""The many-row parse judges a categorical column once per distinct value: a set of the
values first, then the types of its members (`_ColumnParser._judged_distinct`). A set
keeps one of values that compare equal (1 == 1.0 == True), so a value of another type among
text values, wherever it stands, must still reach the per-value rule, with the outcome it
has when sent alone."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from ct_platform.serving.config import OutOfContract
from ct_platform.serving.schema import InputError, InputSchema
from ct_platform_tests.serving.test_one_row_path import COLUMNS, POLICIES, VALID

# Booleans and numbers equal to each other, integer-coded categories as numbers, NaN,
# null, unhashable JSON values, and text.
ODD: list[Any] = [
    True, False, 1, 1.0, 2, 2.0, 3.5, math.nan, None, ["2"], {"2": 1}, "2", "retired", "",
]  # fmt: skip


def _outcome(schema: InputSchema, columns: dict[str, list[Any]]) -> Any:
    try:
        return schema.from_columns(columns)
    except InputError as error:
        return type(error), error.status, str(error), getattr(error, "violations", None)


def _fed(value: Any) -> Any:
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("column", ["job", "season", "city", "default"])
@pytest.mark.parametrize("value", ODD, ids=repr)
def test_a_value_among_text_values_is_judged_as_when_sent_alone(
    policy: OutOfContract, column: str, value: Any
) -> None:
    schema = InputSchema(COLUMNS, policy)
    position = schema.names.index(column)
    alone = _outcome(schema, {name: [VALID[name]] for name in VALID} | {column: [value]})
    # Row 1 of 4, between valid text values of the column (the same text twice, then
    # another one), so that the set holds text on both sides of it.
    among = [VALID[column], value, VALID[column], VALID[column]]
    many = _outcome(schema, {name: [VALID[name]] * 4 for name in VALID} | {column: among})
    if isinstance(alone, tuple):
        kind, status, message, violations = alone
        assert message.startswith("row 0, ")
        assert many == (kind, status, "row 1, " + message.removeprefix("row 0, "), violations)
        return
    assert not isinstance(many, tuple), many
    assert _fed(many.columns[position][1]) == _fed(alone.columns[position][0])
    assert many.columns[position].dtype == np.dtype(object)
    assert list(many.columns[position][[0, 2, 3]]) == [VALID[column]] * 3
    assert many.violations == alone.violations
