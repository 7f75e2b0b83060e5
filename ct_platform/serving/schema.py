"""Request rows -> validated numpy columns, in the bundle schema's column order.

Every protocol (MLflow JSON formats, CSV, Open Inference Protocol v2) first reshapes its
payload into either columns (`{name: [values]}`) or rows (`[{name: value}]`); this module
checks each column against the bundle schema and builds the arrays the model scores:
numeric columns as float64 (missing -> NaN, sentinels -> NaN, as in training), categorical
columns as object arrays of `str`. One rule for every protocol, never a silent coercion:

- numeric column: a JSON number (never true/false, a string, a list or an object); in a
  text protocol (CSV field, V2 BYTES element) also a plain decimal literal as text, with
  "" for missing. `null` and `NaN` mean missing (as in `mlflow models serve`), refused
  when the column is not nullable; `Infinity` and values beyond float32 (the ONNX graph's
  precision) are refused; an `int` column refuses fractions.
- categorical column: a string from the column's categories; `null`/`NaN` mean missing.
  When every category is an integer written as text (a season coded "1".."4"), an integral
  JSON number means that category (3 -> "3"; 3.5 is refused).

Anything else raises `InputError` naming the column, the row and the value as sent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, NoReturn

import numpy as np
import orjson

from ct_platform.serving.bundle import ColumnSchema

# Categorical value fed for a missing category: outside every fitted category, so the
# one-hot encoder (handle_unknown="ignore") scores it as "none of the known ones".
MISSING_CATEGORY = ""
_MAX_LISTED_CATEGORIES = 20
_JSON_NUMBER_TYPES = frozenset({int, float, type(None)})
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_MAX_FLOAT32 = float(np.finfo(np.float32).max)
_MAX_SHOWN = 60


def load_json(body: bytes) -> Any:
    """Parse a JSON request body (UTF-8).

    orjson first (fast); when it refuses, the standard library decides, which also reads
    the `NaN`, `Infinity` and `-Infinity` literals that Python's `json.dumps` writes (and
    MLflow's scoring server accepts) and integers beyond 64 bits: the schema rule then
    says what such a value means. Raises `ValueError` (with position) for anything else.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    return json.loads(body.decode("utf-8"))


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
    # One array per schema column, in schema order: float64 (NaN: missing) for numeric
    # columns, views into `numeric`; object arrays of str for categorical ones.
    columns: list[np.ndarray]
    # The numeric columns as one (n_numeric_columns, n_rows) float64 block, schema order.
    numeric: np.ndarray


class InputSchema:
    """Validates and converts request data for one bundle's columns."""

    def __init__(self, columns: list[ColumnSchema]) -> None:
        self.columns = columns
        self.names = [column.name for column in columns]
        self._parsers = [_ColumnParser(column) for column in columns]
        self._numeric = [i for i, column in enumerate(columns) if column.is_numeric]
        self._categorical = [i for i, column in enumerate(columns) if not column.is_numeric]
        # Rows of the numeric block that need a rule beyond "a float32-range number".
        numeric = [columns[i] for i in self._numeric]
        int_rows = [column.type == "int" for column in numeric]
        self._int_weights = np.array(int_rows, dtype=np.float64)[:, None] if any(int_rows) else None
        self._required_rows = [j for j, column in enumerate(numeric) if not column.nullable]
        self._sentinel_rows = [
            (j, self._parsers[i].numeric_sentinels)
            for j, i in enumerate(self._numeric)
            if self._parsers[i].numeric_sentinels
        ]

    def from_columns(
        self, data: Mapping[str, Any], *, text: bool | frozenset[str] = False
    ) -> ParsedRows:
        """`{column: [values]}`; a bare scalar counts as one row.

        `text`: the values came from a text protocol (CSV, V2 BYTES), for every column
        (True) or for the named ones: numbers may then be written as text.
        """
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
        texts = [text if isinstance(text, bool) else name in text for name in self.names]
        parsed = self._all_columns_at_once(raw_columns, texts, n_rows)
        if parsed is not None:
            return parsed
        # Something needs a closer look: the rule, one column at a time in schema order,
        # names the first bad value (or accepts, e.g. a NaN in a nullable int column).
        arrays = [
            parser.parse(values, text=is_text)
            for parser, values, is_text in zip(self._parsers, raw_columns, texts, strict=True)
        ]
        block = np.array([arrays[i] for i in self._numeric], dtype=np.float64)
        block = block.reshape(len(self._numeric), n_rows)
        return ParsedRows(
            n_rows=n_rows,
            columns=self._in_schema_order(block, [arrays[i] for i in self._categorical]),
            numeric=block,
        )

    def _all_columns_at_once(
        self, raw_columns: list[Sequence[Any]], texts: list[bool], n_rows: int
    ) -> ParsedRows | None:
        """The common case in a few numpy calls for all numeric columns together.

        None when any value needs the per-column rule: a non-number, text, an infinite or
        out-of-range value, a missing value in a required column, a fraction in an int
        column, or any categorical problem. The same rule decides; this only skips the work.
        """
        numeric_values = [raw_columns[i] for i in self._numeric]
        if any(texts[i] for i in self._numeric):
            return None
        if not set(map(type, chain.from_iterable(numeric_values))) <= _JSON_NUMBER_TYPES:
            return None
        try:
            block = np.array(numeric_values, dtype=np.float64).reshape(-1, n_rows)
        except OverflowError:  # an integer beyond float64
            return None
        for row, sentinels in self._sentinel_rows:
            values = block[row]
            for sentinel in sentinels:
                values[values == sentinel] = np.nan
        # fmax ignores NaN (missing): inf and values beyond float32 are what is left to find.
        if block.size and np.fmax.reduce(np.abs(block), axis=None) > _MAX_FLOAT32:
            return None
        if self._required_rows and np.isnan(block[self._required_rows]).any():
            return None
        # Fractions in int columns: |x| mod 1 of those rows (weight 1; others 0, NaN ignored).
        if self._int_weights is not None:
            fractions = np.fmod(np.abs(block), 1.0) * self._int_weights
            if np.fmax.reduce(fractions, axis=None) > 0:
                return None
        try:
            categorical = [
                self._parsers[i].parse(raw_columns[i], text=texts[i]) for i in self._categorical
            ]
        except SchemaError:
            return None
        return ParsedRows(
            n_rows=n_rows, columns=self._in_schema_order(block, categorical), numeric=block
        )

    def _in_schema_order(
        self, block: np.ndarray, categorical: list[np.ndarray]
    ) -> list[np.ndarray]:
        columns: list[np.ndarray] = [block] * len(self.names)
        for row, position in enumerate(self._numeric):
            columns[position] = block[row]
        for array, position in zip(categorical, self._categorical, strict=True):
            columns[position] = array
        return columns

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
        transposed = list(zip(*rows, strict=True)) or [()] * len(columns)
        return self.from_columns(
            {name: transposed[positions[name]] for name in self.names}, text=text
        )


def _as_list(values: Any, name: str) -> Sequence[Any]:
    if isinstance(values, list | tuple):  # tuple: a column of `from_split`'s transpose
        return values
    if isinstance(values, dict):
        raise SchemaError(f"column '{name}': expected a list of values, got an object")
    return [values]


class _ColumnParser:
    """One column's rule; the same for every protocol (module docstring of `schema`)."""

    def __init__(self, column: ColumnSchema) -> None:
        self.column = column
        self.name = column.name
        self._categories = frozenset(column.categories) if column.categories else None
        # Integer-coded categories (a season written 1-4): JSON clients may send 3 for "3".
        self._integer_coded = bool(column.categories) and all(
            _INTEGER_TEXT.fullmatch(category) for category in column.categories or []
        )
        self.numeric_sentinels = [float(s) for s in column.sentinels if not isinstance(s, str)]
        self._text_sentinels = frozenset(str(s) for s in column.sentinels)

    def parse(self, values: Sequence[Any], *, text: bool) -> np.ndarray:
        if self.column.is_numeric:
            return self._numeric(values, text=text)
        return self._categorical(values, text=text)

    # -- numbers ---------------------------------------------------------------------------

    def _numeric(self, values: Sequence[Any], *, text: bool) -> np.ndarray:
        kinds = set(map(type, values))
        # One C-level pass over the types; the per-value rule runs only when it must.
        # (bool is an int subclass in Python, but True is not an age: type() excludes it.)
        if kinds <= _JSON_NUMBER_TYPES:
            try:
                array = np.array(values, dtype=np.float64)
            except OverflowError:  # an integer beyond float64: find it, name it
                array = self._numbers(values)
        elif text and kinds <= _JSON_NUMBER_TYPES | {str}:
            array = self._numbers(values)
        else:
            self._raise_first_non_number(values, text=text)
        for sentinel in self.numeric_sentinels:
            array[array == sentinel] = np.nan
        # One reduction answers "all finite?"; the detailed checks run only when it says no.
        all_finite = bool(np.isfinite(array.sum()))
        if not all_finite:
            self._check_missing_and_infinite(array, values)
        present = array if all_finite else array[~np.isnan(array)]
        self._check_magnitude(array, present, values)
        if self.column.type == "int":
            fractional = present != np.floor(present)
            if fractional.any():
                row = _row_of(array, present[np.argmax(fractional)])
                raise self._error(row, f"expected an integer, got {_show(values[row])}")
        return array

    def _numbers(self, values: Sequence[Any]) -> np.ndarray:
        return np.fromiter(
            (self._number(row, value) for row, value in enumerate(values)),
            dtype=np.float64,
            count=len(values),
        )

    def _number(self, row: int, value: Any) -> float:
        """One JSON number, null, or (text protocols: CSV, V2 BYTES) a number as text."""
        if value is None:
            return math.nan
        if not isinstance(value, str):
            try:
                return float(value)
            except OverflowError:
                raise self._error(row, f"{_show(value)} is too large to score") from None
        # Text: a plain decimal literal, or empty for missing. float() alone would also
        # take "1_000" and non-ASCII digits.
        stripped = value.strip()
        if not stripped:
            return math.nan
        if stripped.isascii() and "_" not in stripped:
            try:
                return float(stripped)
            except ValueError:
                pass
        raise self._error(row, f"expected a number, got {_show(value)}")

    def _raise_first_non_number(self, values: Sequence[Any], *, text: bool) -> NoReturn:
        allowed = _JSON_NUMBER_TYPES | {str} if text else _JSON_NUMBER_TYPES
        for row, value in enumerate(values):
            if type(value) not in allowed:
                raise self._error(row, f"expected a number, got {_show(value)}")
        raise AssertionError("unreachable: a value of another type was found")

    def _check_missing_and_infinite(self, array: np.ndarray, values: Sequence[Any]) -> None:
        infinite = np.isinf(array)
        if infinite.any():
            row = int(np.argmax(infinite))
            raise self._error(row, f"infinite value {_show(values[row])} is not allowed")
        missing = np.isnan(array)
        if not self.column.nullable and missing.any():
            row = int(np.argmax(missing))
            raise self._error(
                row, f"missing value ({_show(values[row])}) not allowed: the column is required"
            )

    def _check_magnitude(
        self, array: np.ndarray, present: np.ndarray, values: Sequence[Any]
    ) -> None:
        # The ONNX graph scores in float32: beyond its range a value would silently be inf.
        if present.size and float(np.abs(present).max()) > _MAX_FLOAT32:
            row = _row_of(array, present[np.argmax(np.abs(present))])
            raise self._error(
                row, f"{_show(values[row])} is beyond the model's range (±{_MAX_FLOAT32:.4g})"
            )

    # -- categories ------------------------------------------------------------------------

    def _categorical(self, values: Sequence[Any], *, text: bool) -> np.ndarray:
        array = np.empty(len(values), dtype=object)
        for row, value in enumerate(values):
            # In CSV an empty field is the only way to say "missing".
            if (
                value is None
                or (text and value == "")
                or _is_missing_marker(value, self._text_sentinels)
            ):
                if not self.column.nullable:
                    raise self._error(row, "missing value not allowed: the column is required")
                array[row] = MISSING_CATEGORY
                continue
            category = value if isinstance(value, str) else self._integer_category(row, value)
            if self._categories is not None and category not in self._categories:
                raise self._error(
                    row,
                    f"unknown category {_show(value)}; expected one of {self._listed_categories()}",
                )
            array[row] = category
        return array

    def _integer_category(self, row: int, value: Any) -> str:
        """A JSON number for an integer-coded category: 3 (or 3.0) means "3"; 3.5 is refused."""
        if self._integer_coded and type(value) in (int, float) and float(value).is_integer():
            return str(int(value))
        expected = "a category (string or integer)" if self._integer_coded else "a category string"
        raise self._error(row, f"expected {expected}, got {_show(value)}")

    def _listed_categories(self) -> list[str]:
        categories = self.column.categories or []
        listed = categories[:_MAX_LISTED_CATEGORIES]
        return [*listed, "..."] if len(categories) > len(listed) else listed

    def _error(self, row: int, problem: str) -> SchemaError:
        return SchemaError(f"column '{self.name}' row {row}: {problem}")


def _is_missing_marker(value: Any, sentinels: frozenset[str]) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value in sentinels


def _row_of(array: np.ndarray, value: float) -> int:
    return int(np.argmax(array == value))


def _show(value: Any) -> str:
    """A request value as the client wrote it (JSON spelling: true, null, NaN, "3"), short."""
    try:
        shown = json.dumps(value)
    except (TypeError, ValueError):
        shown = repr(value)
    return shown if len(shown) <= _MAX_SHOWN else f"{shown[: _MAX_SHOWN - 1]}…"
