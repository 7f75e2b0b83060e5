"""Request rows -> validated numpy columns, in the bundle schema's column order.

Every protocol (MLflow JSON formats, CSV, Open Inference Protocol v2) first reshapes its
payload into either columns (`{name: [values]}`) or rows (`[{name: value}]`); this module
checks each column against the bundle schema and builds the arrays the model scores:
numeric columns as float64 (missing -> NaN, sentinels -> NaN, as in training), categorical
columns as object arrays of `str`. Anything wrong raises `InputError` naming the column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ct_platform.serving.bundle import ColumnSchema

# Categorical value fed for a missing category: outside every fitted category, so the
# one-hot encoder (handle_unknown="ignore") scores it as "none of the known ones".
MISSING_CATEGORY = ""
_MAX_LISTED_CATEGORIES = 20
_JSON_NUMBER_TYPES = frozenset({int, float, type(None)})


class InputError(ValueError):
    """The request payload is unusable (the message says how): answered with a 400."""

    error_code = "BAD_REQUEST"


class SchemaError(InputError):
    """Readable rows that do not fit the model's input schema (missing column, wrong type,
    unknown category...). MLflow reports schema failures as INVALID_PARAMETER_VALUE."""

    error_code = "INVALID_PARAMETER_VALUE"


@dataclass(frozen=True)
class ParsedRows:
    n_rows: int
    # One array per schema column, in schema order.
    columns: list[np.ndarray]


class InputSchema:
    """Validates and converts request data for one bundle's columns."""

    def __init__(self, columns: list[ColumnSchema]) -> None:
        self.columns = columns
        self.names = [column.name for column in columns]
        self._parsers = [_ColumnParser(column) for column in columns]

    def from_columns(self, data: Mapping[str, Any], *, text: bool = False) -> ParsedRows:
        """`{column: [values]}`; a bare scalar counts as one row. `text`: values are strings."""
        missing = [name for name in self.names if name not in data]
        if missing:
            raise SchemaError(f"missing column(s): {missing}")
        raw_columns = [_as_list(data[name], name) for name in self.names]
        lengths = {len(values) for values in raw_columns}
        if len(lengths) > 1:
            raise SchemaError(f"columns have different lengths: {sorted(lengths)}")
        n_rows = lengths.pop()
        if n_rows == 0:
            raise InputError("no rows to score")
        arrays = [
            parser.parse(values, text=text)
            for parser, values in zip(self._parsers, raw_columns, strict=True)
        ]
        return ParsedRows(n_rows=n_rows, columns=arrays)

    def from_records(self, records: Sequence[Any]) -> ParsedRows:
        """`[{column: value}, ...]`: every record must hold every column."""
        if not records:
            raise InputError("no rows to score")
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise InputError(f"row {index} is not a JSON object")
            missing = [name for name in self.names if name not in record]
            if missing:
                raise SchemaError(f"row {index}: missing column(s): {missing}")
        return self.from_columns(
            {name: [record[name] for record in records] for name in self.names}
        )

    def from_split(
        self, columns: Sequence[Any], rows: Sequence[Any], *, text: bool = False
    ) -> ParsedRows:
        """`columns` names + `rows` as lists of values (pandas "split" orient, CSV)."""
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise InputError("'columns' must be a list of column names")
        if not isinstance(rows, list):
            raise InputError("'data' must be a list of rows")
        positions = {name: index for index, name in enumerate(columns)}
        missing = [name for name in self.names if name not in positions]
        if missing:
            raise SchemaError(f"missing column(s): {missing}")
        for index, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(columns):
                raise InputError(f"row {index} must be a list of {len(columns)} values")
        return self.from_columns(
            {name: [row[positions[name]] for row in rows] for name in self.names}, text=text
        )


def _as_list(values: Any, name: str) -> list[Any]:
    if isinstance(values, list):
        return values
    if isinstance(values, dict):
        raise SchemaError(f"column '{name}': expected a list of values, got an object")
    return [values]


class _ColumnParser:
    def __init__(self, column: ColumnSchema) -> None:
        self.column = column
        self.name = column.name
        self._categories = frozenset(column.categories) if column.categories else None
        self._numeric_sentinels = [float(s) for s in column.sentinels if not isinstance(s, str)]
        self._text_sentinels = frozenset(str(s) for s in column.sentinels)

    def parse(self, values: list[Any], *, text: bool) -> np.ndarray:
        if self.column.is_numeric:
            return self._numeric(values, text=text)
        return self._categorical(values, text=text)

    def _numeric(self, values: list[Any], *, text: bool) -> np.ndarray:
        if text:
            array = self._to_float(values)
        else:
            # One C-level pass over the types; the per-row search only runs on failure.
            # (bool is an int subclass in Python, but True is not an age: type() excludes it.)
            if not set(map(type, values)) <= _JSON_NUMBER_TYPES:
                self._raise_first_non_number(values)
            try:
                array = np.array(values, dtype=np.float64)
            except OverflowError:
                raise SchemaError(f"column '{self.name}': number too large") from None
        for sentinel in self._numeric_sentinels:
            array[array == sentinel] = np.nan
        # One reduction answers "all finite?"; the detailed checks run only when it says no.
        all_finite = bool(np.isfinite(array.sum()))
        if not all_finite:
            self._check_missing_and_infinite(array)
        if self.column.type == "int":
            present = array if all_finite else array[~np.isnan(array)]
            fractional = present != np.floor(present)
            if fractional.any():
                value = present[np.argmax(fractional)]
                raise SchemaError(f"column '{self.name}': expected an integer, got {value!r}")
        return array

    def _raise_first_non_number(self, values: list[Any]) -> None:
        for row, value in enumerate(values):
            if type(value) not in _JSON_NUMBER_TYPES:
                raise SchemaError(
                    f"column '{self.name}' row {row}: expected a number, got {value!r}"
                )

    def _check_missing_and_infinite(self, array: np.ndarray) -> None:
        if np.isinf(array).any():
            raise SchemaError(f"column '{self.name}': infinite values are not allowed")
        missing = np.isnan(array)
        if not self.column.nullable and missing.any():
            row = int(np.argmax(missing))
            raise SchemaError(
                f"column '{self.name}' row {row}: missing value (null/NaN) not allowed"
            )

    def _to_float(self, values: list[Any]) -> np.ndarray:
        array = np.empty(len(values), dtype=np.float64)
        for row, value in enumerate(values):
            if value is None or value == "":
                array[row] = np.nan
                continue
            try:
                array[row] = float(value)
            except (ValueError, OverflowError):
                raise SchemaError(
                    f"column '{self.name}' row {row}: expected a number, got {value!r}"
                ) from None
        return array

    def _categorical(self, values: list[Any], *, text: bool) -> np.ndarray:
        array = np.empty(len(values), dtype=object)
        for row, value in enumerate(values):
            # In CSV an empty field is the only way to say "missing".
            if (
                value is None
                or (text and value == "")
                or _is_missing_marker(value, self._text_sentinels)
            ):
                if not self.column.nullable:
                    raise SchemaError(f"column '{self.name}' row {row}: missing value not allowed")
                array[row] = MISSING_CATEGORY
                continue
            if not isinstance(value, str):
                raise SchemaError(
                    f"column '{self.name}' row {row}: expected a category string, got {value!r}"
                )
            if self._categories is not None and value not in self._categories:
                raise SchemaError(
                    f"column '{self.name}' row {row}: unknown category {value!r}; "
                    f"expected one of {self._listed_categories()}"
                )
            array[row] = value
        return array

    def _listed_categories(self) -> list[str]:
        categories = self.column.categories or []
        listed = categories[:_MAX_LISTED_CATEGORIES]
        return [*listed, "..."] if len(categories) > len(listed) else listed


def _is_missing_marker(value: Any, sentinels: frozenset[str]) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value in sentinels
