"""Request rows -> validated numpy columns, in the bundle schema's column order.

Every protocol (MLflow JSON formats, CSV, Open Inference Protocol v2) first reshapes its
payload into either columns (`{name: [values]}`) or rows (`[{name: value}]`); this module
checks each column against the bundle schema and builds the arrays the model scores:
numeric columns as float64 (missing -> NaN, sentinels -> NaN, as in training), categorical
columns as object arrays of `str`. One rule for every protocol, never a silent coercion:

- numeric column: a JSON number (never true/false, a string, a list or an object); in a
  text protocol (CSV field, V2 BYTES element) also a number as text, with "" and `nan`
  (any case) for missing, as `ct_platform.text_values` reads text for ingest and drift too.
  `null` and `NaN` mean missing (as in `mlflow models serve`), refused when the column is
  not nullable; `Infinity` and values beyond float32 (the ONNX graph's
  precision) are refused; an `int` column refuses fractions.
- categorical column: a string from the column's categories; `null`/`NaN` mean missing.
  When every category is an integer written as text (a season coded "1".."4"), an integral
  JSON number means that category (3 -> "3"; 3.5 is refused).

Anything else raises `InputError` (400) naming the row, the column and the value as sent.

Beyond the value rule, the data contract (the spec's `dataset.columns`, carried by the
bundle): a numeric column's `min`/`max`, a categorical column's `categories` and
`nullable: false` (a sentinel is a recorded answer, never "missing"). Values that break it
are well-formed, so what happens to them is a policy (`serving.out_of_contract`): `reject`
raises `ContractError` (422) naming the first breach (row, column, value as sent, rule);
`score` scores them as sent (an unknown category scores as "none of the known ones", a
missing required value as missing). Either way `ParsedRows.violations` / the error count
the breaches by (column, rule), for the server's metrics.
"""

from __future__ import annotations

import codecs
import gc
import json
import math
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import chain
from operator import itemgetter
from types import MappingProxyType
from typing import Any, Literal, NoReturn, TypeVar

import msgspec
import numpy as np
import orjson

from ct_platform.serving.bundle import ColumnSchema
from ct_platform.serving.config import OutOfContract, UnknownColumns
from ct_platform.text_values import MISSING_TEXT, is_missing_text, is_overflow, text_number

# Categorical value fed for a missing category: outside every fitted category, so the
# one-hot encoder (handle_unknown="ignore") scores it as "none of the known ones".
MISSING_CATEGORY = ""
_TEXT_OR_NULL = frozenset({str, type(None)})
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_MAX_FLOAT32 = float(np.finfo(np.float32).max)
_MAX_SHOWN = 60
# Python's default int-string conversion limit (sys.get_int_max_str_digits()).
_MAX_INT_DIGITS = 4300
_TOO_DEEP = (
    "JSON nested too deeply (arrays and objects within each other some 1,000 levels deep "
    "or more; a request needs fewer than 10)"
)
# A \uXXXX escape of a UTF-16 surrogate (an odd run of backslashes before it: an escape),
# as a high + low pair or alone.
_SURROGATE_ESCAPE = re.compile(
    r"(?<!\\)(?:\\\\)*(?P<escape>\\u[dD][89abAB][0-9a-fA-F]{2}"
    r"(?P<pair>\\u[dD][c-fC-F][0-9a-fA-F]{2})?|\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
_MAX_LISTED_NAMES = 30

T = TypeVar("T")
# (column, rule) -> how many values of a request broke that rule of that column.
Violations = Mapping[tuple[str, str], int]
NO_VIOLATIONS: Violations = MappingProxyType({})


class OverflowedNumber:
    """A JSON number literal beyond float64 (`1e400`): kept as sent, so errors can quote it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class SentFloat(float):
    """A JSON number literal read as a float that keeps its text (`1e-400` reads as 0.0,
    `41.50` as 41.5): only when re-reading a refused body, so the error quotes it as sent."""

    __slots__ = ("text",)

    def __new__(cls, text: str) -> SentFloat:
        number = super().__new__(cls, text)
        number.text = text
        return number


class SentInt(int):
    """A JSON integer literal whose value does not spell it (`-0` reads as 0): only when
    re-reading a refused body, so the error quotes it as sent."""

    text: str  # (an int subclass cannot have __slots__)

    def __new__(cls, text: str) -> SentInt:
        number = super().__new__(cls, text)
        number.text = text
        return number


# The Python types of a JSON number once parsed (bool, an int subclass, is not one).
JSON_NUMBERS = frozenset({int, float, SentInt, SentFloat})
_JSON_NUMBER_TYPES = JSON_NUMBERS | {type(None)}
# Bodies this long or longer are first read as a typed `dataframe_split`
# (`InputSchema.from_split_body`); a one-row body is shorter.
TYPED_SPLIT_MIN_BYTES = 2048
# Colons in `{"dataframe_split": {"columns": [...], "data": [...]}}`: one per key.
_SPLIT_KEYS = 3


def _parse_json_float(text: str) -> float | OverflowedNumber:
    value = float(text)
    return value if math.isfinite(value) else OverflowedNumber(text)


def _sent_float(text: str) -> SentFloat | OverflowedNumber:
    return SentFloat(text) if math.isfinite(float(text)) else OverflowedNumber(text)


def _parse_json_int(text: str) -> int:
    # int() refuses more digits than Python's int-string conversion limit with advice for
    # the programmer (sys.set_int_max_str_digits): say what is wrong with the body instead.
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise UnreadableJson(
            f"a number of {len(text.lstrip('-')):,} digits ({text[:20]}…); "
            f"numbers of more than {_MAX_INT_DIGITS:,} digits are not read"
        )
    return int(text)


def _sent_int(text: str) -> int:
    # JSON allows no leading zero or plus sign: `-0` is the one integer int() respells.
    return SentInt(text) if text == "-0" else _parse_json_int(text)


def quoting_as_sent(parse: Callable[[Any], T], payload: Any, body: bytes) -> T:
    """`parse(payload)` (the body's JSON, from `load_json`), refusing a JSON object that
    names a key twice (`SchemaError`): JSON parsers keep the last one silently.

    When `parse` raises `InputError`, the body is read again with every number's text kept
    and parsed once more, so the error raised quotes the numbers as sent (`1e-400`, not
    `0.0`; `-0`, not `0`). An accepted body costs one count of its colons and of its
    objects' members (`_top_members`: about 1 µs for a row); only a body whose strings
    hold colons is read a second time.
    """
    try:
        try:
            parsed = parse(payload)
        except InputError:
            parse(_read_checked(body, parse_float=_sent_float, parse_int=_sent_int))
            raise  # not reached: the same rule refuses the same values
        # Each object member has a colon: while the colons outnumber the members read, a
        # key may have been sent twice (or a string holds a colon). The objects where
        # requests have them first, then all of them, then the exact check decides.
        colons = body.count(b":")
        if colons != _top_members(payload) and colons != _members(payload):
            _read_checked(body, parse_float=_parse_json_float)
    except RecursionError:
        # A body nested almost as deep as orjson reads (1,024 levels) is deeper than the
        # interpreter's stack lets these walks (and an error message's quote) go.
        raise UnreadableJson(_TOO_DEEP) from None
    return parsed


def _read_checked(body: bytes, **hooks: Callable[[str], Any]) -> Any:
    """The body read by the standard library, refusing an object with a repeated key."""
    objects = _stdlib_json(_without_bom(body), object_pairs_hook=_Object, **hooks)
    repeated = _first_repeated(objects, "")
    if repeated is not None:
        path, listing = repeated
        raise SchemaError(
            f"{path or 'the request body'}: key(s) sent more than once: {listing}; send each "
            "once (JSON keeps only the last)"
        )
    return objects


class _Object(dict):
    """A JSON object as the standard library reads it, remembering its keys in order."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.keys_sent = [key for key, _ in pairs]


def _first_repeated(value: Any, path: str) -> tuple[str, str] | None:
    """(path to it, which keys at which positions) of the first object with a repeated
    key in `value`, depth first; the path as `dataframe_records[1]`."""
    if isinstance(value, _Object):
        if len(value) < len(value.keys_sent):
            return path, repeated_names(value.keys_sent) or ""
        steps = ((f"{path}.{key}" if path else key, item) for key, item in value.items())
    elif isinstance(value, list):
        steps = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for step, item in steps:
        found = _first_repeated(item, step)
        if found is not None:
            return found
    return None


def repeated_names(names: Sequence[Any]) -> str | None:
    """ "'age' (positions 0 and 3)" for each name sent more than once; None if none is."""
    positions: dict[Any, list[int]] = {}
    for position, name in enumerate(names):
        positions.setdefault(name, []).append(position)
    listed = [
        f"{name!r} (positions {', '.join(map(str, found[:-1]))} and {found[-1]})"
        for name, found in positions.items()
        if len(found) > 1
    ]
    return ", ".join(listed) if listed else None


def folded_name(name: str) -> str:
    """A column name as compared for near-duplicates: Unicode-normalised (NFKC: "age" in
    full-width letters reads "age"), stripped of surrounding spaces, case-folded."""
    return unicodedata.normalize("NFKC", name).strip().casefold()


def near_duplicates(sent: Iterable[Any], known: Sequence[str]) -> dict[str, list[str]]:
    """Each name of `sent` that is not one of `known` but equals one or more of them once
    folded (`folded_name`: "Age", "age ", "AGE" for "age") -> those names.

    A near-duplicate is refused rather than ignored: beside the column it would be
    silently dropped, instead of it the request would fail as "missing column" without
    saying why.
    """
    exact, by_fold = _fold_index(tuple(known))
    return {
        name: by_fold[folded_name(name)]
        for name in sent
        if isinstance(name, str) and name not in exact and folded_name(name) in by_fold
    }


@lru_cache(maxsize=64)
def _fold_index(known: tuple[str, ...]) -> tuple[frozenset[str], dict[str, list[str]]]:
    """The names, and their folded forms -> the names: built once per schema."""
    by_fold: dict[str, list[str]] = {}
    for name in known:
        by_fold.setdefault(folded_name(name), []).append(name)
    return frozenset(known), by_fold


def describe_near_duplicates(
    close: Mapping[str, list[str]], kind: str = "column", owner: str = "the model"
) -> str:
    """ "column 'Age ' is not a column of the model: did you mean 'age'? ..." for each."""
    listed = "; ".join(
        f"{kind} {name!r} is not a {kind} of {owner}: did you mean "
        f"{' or '.join(map(repr, matches))}?"
        for name, matches in close.items()
    )
    return f"{listed} (names must match exactly: case and spaces count)"


# The answer's header naming the request's columns kept out of scoring (policy `ignore`).
IGNORED_COLUMNS_HEADER = "x-ignored-columns"


def ignored_columns_header(names: Sequence[str]) -> str:
    """`names` as the `x-ignored-columns` value: a JSON array, ASCII only (a header is
    Latin-1 and a name may hold any character, a newline too), at most 30 names and then
    "... N more"; each name cut to 60 characters."""
    shown = [name if len(name) <= _MAX_SHOWN else f"{name[: _MAX_SHOWN - 1]}…" for name in names]
    return json.dumps(_listed(shown))


def _top_members(payload: Any) -> int:
    """The members of the body's object and of the objects it holds, directly or in a list
    whose first item is an object: where every protocol has its objects (the formats'
    objects, rows, tensors). A lower bound of `_members`, in a few C-level calls."""
    if type(payload) is not dict:
        return 0
    count = len(payload)
    for value in payload.values():
        if type(value) is dict:
            count += len(value)
        elif type(value) is list and value and type(value[0]) is dict:
            count += sum(map(len, value)) if set(map(type, value)) == {dict} else 0
    return count


def _members(value: Any) -> int:
    """The members of every object in the parsed JSON (a tensor's `parameters` too)."""
    if type(value) is dict:
        return len(value) + sum(map(_members, filter(_is_container, value.values())))
    if type(value) is list and any(map(_is_container, value)):
        return sum(map(_members, value))
    return 0


def _is_container(value: Any) -> bool:
    return type(value) is dict or type(value) is list


@contextmanager
def _collection_paused() -> Iterator[None]:
    """The cyclic garbage collector held off meanwhile (resumed only if it was on).

    Another thread's pause may overlap: the one that found it on resumes it, so a thread
    may see it resumed early (a collection, as without the pause), never left off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _without_bom(body: bytes) -> bytes:
    """A body without its UTF-8 byte-order mark (Excel writes one; RFC 8259 lets a parser
    ignore it): read alike by every protocol and by `ct drift`."""
    return body.removeprefix(codecs.BOM_UTF8)


def load_json(body: bytes) -> Any:
    """Parse a JSON request body (UTF-8, a leading byte-order mark ignored).

    orjson first (fast); when it refuses, the standard library decides, which also reads
    the `NaN`, `Infinity` and `-Infinity` literals that Python's `json.dumps` writes (and
    MLflow's scoring server accepts) and integers beyond 64 bits: the schema rule then
    says what such a value means.

    Raises:
        UnreadableJson: well-formed JSON that no request can hold: nested too deep, a
            number of more than 4,300 digits, a lone UTF-16 surrogate (`"\\ud800"`).
        ValueError: not JSON (with position), or not UTF-8 (`UnicodeDecodeError`).
    """
    body = _without_bom(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # A literal beyond float64 (1e400) would read as inf here: keep its text to quote it.
    return _stdlib_json(body, parse_float=_parse_json_float)


def _stdlib_json(body: bytes, **hooks: Callable[..., Any]) -> Any:
    """`json.loads` of a UTF-8 body, refusing what it reads but no request can hold."""
    text = body.decode("utf-8")
    # orjson refuses a lone surrogate; Python's parser makes a str that cannot be encoded
    # (so neither logged, nor quoted in an answer, nor scored).
    lone = next((m for m in _SURROGATE_ESCAPE.finditer(text) if not m["pair"]), None)
    if lone is not None:
        raise UnreadableJson(
            f"a lone UTF-16 surrogate {lone['escape']} at character {lone.start('escape')}: "
            "not a character (send the pair, or the character as UTF-8)"
        )
    try:
        return json.loads(text, **{"parse_int": _parse_json_int, **hooks})
    except RecursionError:
        raise UnreadableJson(_TOO_DEEP) from None


def decode_text(body: bytes) -> str:
    """A text body (CSV) as str: UTF-8, a leading byte-order mark ignored as in JSON.

    Raises:
        UnicodeDecodeError: the body is not UTF-8.
    """
    return _without_bom(body).decode("utf-8")


class InputError(ValueError):
    """The request payload is unusable (the message says how): answered with a 400."""

    status = 400
    error_code = "BAD_REQUEST"


class UnreadableJson(InputError):
    """Well-formed JSON that no request can hold (nested too deep, too long a number, a
    lone surrogate): refused as a whole, by what it is, whatever the protocol."""


class SchemaError(InputError):
    """Readable rows that do not fit the model's input schema (missing column, wrong type,
    unknown category...). MLflow reports schema failures as INVALID_PARAMETER_VALUE."""

    error_code = "INVALID_PARAMETER_VALUE"


class RowLimitError(InputError):
    """More rows than a request may hold: a 413, judged before any value is read."""

    status = 413


class ContractError(SchemaError):
    """Well-formed values outside the data contract, refused (policy `reject`): a 422.

    `violations` counts every breach of the request by (column, rule), not only the one
    the message names.
    """

    status = 422

    def __init__(self, message: str, violations: Violations) -> None:
        super().__init__(message)
        self.violations = violations


class ParsedRows:
    """Rows that passed the schema, ready to score.

    - `n_rows`;
    - `numeric`: the numeric columns as one (n_numeric_columns, n_rows) float64 block,
      schema order, NaN: missing;
    - `columns`: one array per schema column, in schema order: float64 for numeric columns,
      views into `numeric`; object arrays of str for categorical ones;
    - `values`: a row parsed by the one-row path (`InputSchema.one_row`): its values in
      schema order as plain Python objects (float, NaN: missing; str, `MISSING_CATEGORY`:
      missing), which the ONNX feed reads; None otherwise. Such a row makes `columns`
      only when something asks for it (15 numpy views a request the one-row path does not
      need);
    - `logged_values`: the same row as the prediction log writes it, a missing category
      as None (null): `values` itself when it has none (the common row); None otherwise;
    - `violations`: contract breaches scored anyway (policy `score`), by (column, rule);
    - `ignored_columns`: names sent that are no contract column, kept out of scoring
      (policy `ignore`), in the order first sent.

    A class with slots, not a frozen dataclass: a frozen dataclass sets each field through
    `object.__setattr__`, on every request. Treat it as read-only.
    """

    __slots__ = (
        "_columns",
        "_numeric_positions",
        "ignored_columns",
        "logged_values",
        "n_rows",
        "numeric",
        "values",
        "violations",
    )

    def __init__(
        self,
        n_rows: int,
        columns: list[np.ndarray] | None,
        numeric: np.ndarray,
        violations: Violations = NO_VIOLATIONS,
        ignored_columns: tuple[str, ...] = (),
        values: list[Any] | None = None,
        numeric_positions: Sequence[int] = (),
        logged_values: list[Any] | None = None,
    ) -> None:
        self.n_rows = n_rows
        self._columns = columns
        self.numeric = numeric
        self.violations = violations
        self.ignored_columns = ignored_columns
        self.values = values
        self._numeric_positions = numeric_positions
        self.logged_values = logged_values

    @property
    def columns(self) -> list[np.ndarray]:
        columns = self._columns
        if columns is None:  # one row: made from `values` and `numeric` on first use
            values = self.values or ()
            columns = [np.array([value], dtype=object) for value in values]
            for row, position in enumerate(self._numeric_positions):
                columns[position] = self.numeric[row]
            self._columns = columns
        return columns

    def ignoring(self, names: Sequence[str]) -> ParsedRows:
        """These rows, reporting `names` as ignored (themselves when there are none)."""
        if not names:
            return self
        return ParsedRows(
            self.n_rows,
            self._columns,
            self.numeric,
            self.violations,
            tuple(names),
            self.values,
            self._numeric_positions,
            self.logged_values,
        )


@dataclass(frozen=True)
class _Breach:
    """Values of one column breaking one contract rule, and the first of them."""

    position: int  # the column's position in the schema
    rule: str  # the spec key broken: min, max, categories, nullable
    count: int
    row: int
    problem: str  # what is wrong with the first one, quoting it as sent


class InputSchema:
    """Validates and converts request data for one bundle's columns.

    `max_rows`: the rows a request may hold (None: any); every parse path judges the count
    (`bound_rows`) before it reads a value, so an oversized request is a 413 whatever it holds.
    """

    def __init__(
        self,
        columns: list[ColumnSchema],
        out_of_contract: OutOfContract = "reject",
        unknown_columns: UnknownColumns = "ignore",
        max_rows: int | None = None,
    ) -> None:
        self.columns = columns
        self.max_rows = max_rows
        self.names = [column.name for column in columns]
        self.out_of_contract = out_of_contract
        self.unknown_columns = unknown_columns
        # Sent names equal to this set cost one C-level comparison (`_check_names`).
        self.name_set = frozenset(self.names)
        self._parsers = [_ColumnParser(column, position) for position, column in enumerate(columns)]
        self._numeric = [i for i, column in enumerate(columns) if column.is_numeric]
        self._categorical = [i for i, column in enumerate(columns) if not column.is_numeric]
        # Rows of the numeric block that need a rule beyond "a float32-range number".
        numeric = [columns[i] for i in self._numeric]
        self._int_rows = [j for j, column in enumerate(numeric) if column.type == "int"]
        self._required_rows = [j for j, column in enumerate(numeric) if not column.nullable]
        # Each numeric row's range as (n_numeric, 1) columns: the contract's bounds, and
        # float32's (the ONNX graph's precision) where the spec sets none, so that one pass
        # over the block finds both a value beyond the model and one outside the contract.
        self._low = np.array([_bound(column.min, -_MAX_FLOAT32) for column in numeric])[:, None]
        self._high = np.array([_bound(column.max, _MAX_FLOAT32) for column in numeric])[:, None]
        self._sentinel_rows = [
            (j, self._parsers[i].numeric_sentinels)
            for j, i in enumerate(self._numeric)
            if self._parsers[i].numeric_sentinels
        ]
        # The one-row path's rules, precomputed: per numeric column (schema position,
        # nullable, low, high, int?, sentinels or None); per categorical column (schema
        # position, the accepted values -> value fed, indexed by `text`: False, True).
        self._one_row_numeric = [
            (position, column.nullable, float(low), float(high), column.type == "int", sentinels)
            for position, column, low, high, sentinels in zip(
                self._numeric,
                numeric,
                self._low[:, 0],
                self._high[:, 0],
                (frozenset(self._parsers[i].numeric_sentinels) or None for i in self._numeric),
                strict=True,
            )
        ]
        self._one_row_categorical = [
            (i, (self._parsers[i].accepted(text=False), self._parsers[i].accepted(text=True)))
            for i in self._categorical
        ]
        # `_one_row`'s `texts` when every value or none came as text, indexed by `text`.
        self._same_text = ([False] * len(columns), [True] * len(columns))

    @cached_property
    def _split_decoders(self) -> list[msgspec.json.Decoder]:
        """Decoders of exactly `{"dataframe_split": {"columns": [str, ...], "data": [row,
        ...]}}` whose rows hold, position by position in schema order, a JSON number or
        null for a numeric column (as float) and null or a string for a categorical one:
        first one of its categories or text sentinels when it lists them
        (`_ColumnParser.typed_json`); then, when that fails (a category outside the list,
        scored under `out_of_contract: score`), any string."""
        rows = [tuple[tuple(parser.typed_json for parser in self._parsers)]]
        any_text = tuple[tuple(float | None if c.is_numeric else str | None for c in self.columns)]
        if any_text != rows[0]:
            rows.append(any_text)
        return [_split_decoder(row) for row in rows]

    def from_split_body(self, body: bytes) -> ParsedRows | None:
        """A many-row `dataframe_split` JSON body, read straight into typed rows when it is
        the common request: columns named as the schema lists them, every value of the JSON
        type its column takes (checked while decoding, no pass over the values' types), no
        value breaking the value rule or the contract. None otherwise, without a word: the
        general path (`load_json`, `from_split`) then reads the body and accepts it or names
        what is wrong, exactly as for any body.

        Also None, so that the general path decides, for what it reads in its own way: a
        body shorter than `TYPED_SPLIT_MIN_BYTES`, one with a backslash escape (a lone
        surrogate), a colon beyond the three keys (a key sent twice, a colon in a string),
        a byte-order mark, `NaN`/`Infinity`, a category sent as a number.
        """
        if len(body) < TYPED_SPLIT_MIN_BYTES or body.count(b":") != _SPLIT_KEYS:
            return None
        if b"\\" in body:
            return None
        # A row is a new tuple: the collector, run every 700 of them, would walk them all
        # (~0.13 ms a 1,000-row body). They are freed before it resumes.
        with _collection_paused():
            split = _decoded_split(self._split_decoders, body)
            if split is None:
                return None
            n_rows = len(split.data)
            self.bound_rows(n_rows)
            if split.columns != self.names or n_rows < 2:
                return None
            raw_columns = list(zip(*split.data, strict=False))  # rows: of schema length
            del split
        try:
            return self._all_columns_at_once(
                raw_columns, [False] * len(self.names), n_rows, typed=True
            )
        except ContractError:  # the general path names it, quoting the value as sent
            return None

    def integers_only(self, name: str) -> bool:
        """Whether column `name` takes integers only: an `int` column, or a category column
        whose categories are all integers (a season coded "1".."4")."""
        parser = self._parsers[self.names.index(name)]
        return parser.column.type == "int" or parser.integer_coded

    def from_columns(
        self, data: Mapping[str, Any], *, text: bool | frozenset[str] = False
    ) -> ParsedRows:
        """`{column: [values]}`; a bare scalar counts as one row.

        `text`: the values came from a text protocol (CSV, V2 BYTES), for every column
        (True) or for the named ones: numbers may then be written as text.

        Raises:
            InputError: a value breaks the value rule (400), naming row, column and value.
            ContractError: a value breaks the data contract and the policy is `reject`.
        """
        ignored = self._check_names(data.keys(), "column")
        raw_columns = [_as_list(data[name], name) for name in self.names]
        n_rows = self._row_count(raw_columns)
        texts = (
            [text] * len(self.names) if isinstance(text, bool) else [n in text for n in self.names]
        )
        parsed = (
            self._one_row([values[0] for values in raw_columns], texts) if n_rows == 1 else None
        )
        if parsed is None:
            parsed = self._all_columns_at_once(raw_columns, texts, n_rows)
        if parsed is not None:
            return parsed.ignoring(ignored)
        # Something needs a closer look: the rule, one column at a time in schema order,
        # names the first bad value (or accepts, e.g. a NaN in a nullable int column).
        numeric = [
            self._parsers[i].parse_numeric(raw_columns[i], text=texts[i]) for i in self._numeric
        ]
        block = np.array(numeric, dtype=np.float64).reshape(len(self._numeric), n_rows)
        categorical = [
            self._parsers[i].parse_categorical(raw_columns[i], text=texts[i])
            for i in self._categorical
        ]
        breaches = self._numeric_breaches(block, raw_columns)
        return self._rows(n_rows, block, categorical, breaches).ignoring(ignored)

    def _check_names(self, sent: Collection[Any], kind: str, where: str = "") -> tuple[str, ...]:
        """The `sent` names that are no schema column (to ignore), once every schema column
        is found among them: names equal to the schema's cost one set comparison.

        Raises:
            SchemaError: a near-duplicate of a schema column (`refuse_near_duplicates`); a
                schema column not sent (naming the missing ones, the unknown ones sent and
                the expected ones); an unknown name the policy refuses (`kept_out`).
        """
        if sent == self.name_set:
            return ()
        unknown = [name for name in sent if name not in self.name_set]
        self.refuse_near_duplicates(unknown, kind, where)
        missing = [name for name in self.names if name not in sent]
        if missing:
            got = f"; sent unknown {kind}(s) {_listed(unknown)}" if unknown else ""
            raise SchemaError(
                f"{where}missing {kind}(s) {_listed(missing)}{got}; the model expects "
                f"{len(self.names)}: {_listed(self.names)}"
            )
        return self.kept_out(unknown, kind, where)

    def refuse_near_duplicates(self, unknown: Sequence[Any], kind: str, where: str = "") -> None:
        """A `SchemaError` ("did you mean") when a name that is no schema column equals one
        once case-folded and stripped (`near_duplicates`): "Age" beside or instead of "age"."""
        close = near_duplicates(unknown, self.names)
        if close:
            raise SchemaError(f"{where}{describe_near_duplicates(close, kind)}")

    def kept_out(self, unknown: Sequence[Any], kind: str, where: str = "") -> tuple[str, ...]:
        """Names sent that are no schema column (and no near-duplicate of one), as text: kept
        out of scoring under `serving.unknown_columns: ignore`; a `SchemaError` naming them
        under `refuse`."""
        if unknown and self.unknown_columns == "refuse":
            raise SchemaError(
                f"{where}unknown {kind}(s) {_listed(unknown)}: not in the model's schema "
                f"(serving.unknown_columns: refuse); the model expects {len(self.names)}: "
                f"{_listed(self.names)}"
            )
        return tuple(name if isinstance(name, str) else show(name) for name in unknown)

    def bound_rows(self, n_rows: int) -> None:
        """Raise `RowLimitError` (413) when `n_rows` exceeds `max_rows`."""
        if self.max_rows is not None and n_rows > self.max_rows:
            raise RowLimitError(
                f"request has {n_rows} rows; the limit is {self.max_rows} rows a request: split it"
            )

    def _row_count(self, raw_columns: list[Sequence[Any]]) -> int:
        lengths = {len(values) for values in raw_columns}
        if len(lengths) > 1:
            by_length: dict[int, list[str]] = {}
            for name, values in zip(self.names, raw_columns, strict=True):
                by_length.setdefault(len(values), []).append(name)
            counts = "; ".join(
                f"{length} in {_listed(names)}" for length, names in sorted(by_length.items())
            )
            raise SchemaError(f"columns have different numbers of values: {counts}")
        n_rows = lengths.pop()
        if n_rows == 0:
            raise InputError("no rows to score")
        self.bound_rows(n_rows)  # before any value is read
        return n_rows

    def _one_row(self, values: Sequence[Any], texts: Sequence[bool]) -> ParsedRows | None:
        """A single row (`values` in schema order) in one plain Python pass (no numpy call
        per column), when every value is accepted as it is: a number within its range
        (float32's and the contract's; integral in an int column), a sentinel, a missing
        value where allowed, a known category. None otherwise: the block path decides,
        with the same rule, and names what is wrong.

        A number sent as text (`texts`) always goes to the block path: checked once for
        all columns, so that the common row (no text) costs no look-up per column."""
        if True in texts and any(texts[position] for position in self._numeric):
            return None
        numbers = []
        row = list(values)  # becomes the values as scored, in schema order
        for position, nullable, low, high, integral, sentinels in self._one_row_numeric:
            value = values[position]
            kind = type(value)
            if kind is float:
                number = value
            elif kind is int:
                try:
                    number = float(value)
                except OverflowError:  # an integer beyond float64
                    return None
            elif value is None and nullable:
                numbers.append(math.nan)
                row[position] = math.nan
                continue
            else:
                return None
            if sentinels is not None and number in sentinels:
                number = math.nan
            elif number != number:  # NaN: missing
                if not nullable:
                    return None
            elif not low <= number <= high or (integral and not number.is_integer()):
                return None
            numbers.append(number)
            row[position] = number
        missing = False  # a missing category: logged as None (null), fed as itself
        for position, accepted in self._one_row_categorical:
            value, text = values[position], texts[position]
            if value is not None and type(value) is not str:
                return None
            category = accepted[text].get(value)
            if category is None:
                if value is None or not self._parsers[position].takes_any_text(value, text=text):
                    return None
                category = value
            row[position] = category
            if not category:  # MISSING_CATEGORY, the empty text
                missing = True
        # The common row is logged as it is scored: the same list, no pass over it.
        logged = [None if value == MISSING_CATEGORY else value for value in row] if missing else row
        block = np.array(numbers, dtype=np.float64).reshape(len(numbers), 1)
        return ParsedRows(
            1, None, block, values=row, numeric_positions=self._numeric, logged_values=logged
        )

    def _all_columns_at_once(
        self,
        raw_columns: list[Sequence[Any]],
        texts: list[bool],
        n_rows: int,
        *,
        typed: bool = False,
    ) -> ParsedRows | None:
        """The common case in a few numpy calls for all numeric columns together
        (`typed`: every numeric value is known to be a float or None already).

        None when any value needs the per-column rule: a non-number, text, an infinite value,
        one beyond float32 or outside the contract's range, a fraction in an int column, or
        a categorical value that is not a category. The same rule decides; this only skips
        the work.
        """
        numeric_values = [raw_columns[i] for i in self._numeric]
        if any(texts[i] for i in self._numeric):
            return None
        if not typed and not set(map(type, chain.from_iterable(numeric_values))) <= (
            _JSON_NUMBER_TYPES
        ):
            return None
        try:
            block = np.array(numeric_values, dtype=np.float64).reshape(-1, n_rows)
        except OverflowError:  # an integer beyond float64
            return None
        # Before the sentinels become NaN: a sentinel is a recorded answer, not "missing".
        breached = bool(self._required_rows) and np.isnan(block[self._required_rows]).any()
        for row, sentinels in self._sentinel_rows:
            values = block[row]
            for sentinel in sentinels:
                values[values == sentinel] = np.nan
        # How far the farthest value lies outside its range (fmax ignores NaN: missing);
        # beyond float32 (400) or outside the contract (422): the per-column rule says which.
        outside = np.maximum(self._low - block, block - self._high)
        if block.size and np.fmax.reduce(outside, axis=None) > 0:
            return None
        # Fractions in int columns: x - floor(x) of those rows, finite by now (NaN ignored);
        # a tenth of the time of `np.fmod` over the whole block.
        if self._int_rows and block.size:
            integers = block[self._int_rows]
            if np.fmax.reduce(integers - np.floor(integers), axis=None) > 0:
                return None
        try:
            categorical = [
                self._parsers[i].parse_categorical(raw_columns[i], text=texts[i])
                for i in self._categorical
            ]
        except SchemaError:
            return None
        breaches = self._numeric_breaches(block, raw_columns) if breached else []
        return self._rows(n_rows, block, categorical, breaches)

    def _numeric_breaches(
        self, block: np.ndarray, raw_columns: list[Sequence[Any]]
    ) -> list[_Breach]:
        """Contract breaches of the numeric columns (`block`: sentinels already NaN)."""
        breaches = []
        for row, position in enumerate(self._numeric):
            column, values, raw = self.columns[position], block[row], raw_columns[position]
            masks: list[tuple[str, np.ndarray]] = []
            if not column.nullable:
                masks.append(("nullable", np.fromiter(map(_is_missing, raw), bool, len(raw))))
            if column.min is not None:
                masks.append(("min", values < column.min))
            if column.max is not None:
                masks.append(("max", values > column.max))
            for rule, mask in masks:
                rows = np.flatnonzero(mask)
                if rows.size:
                    first = int(rows[0])
                    problem = _contract_problem(column, rule, raw[first])
                    breaches.append(_Breach(position, rule, int(rows.size), first, problem))
        return breaches

    def _rows(
        self,
        n_rows: int,
        block: np.ndarray,
        categorical: list[tuple[np.ndarray, list[_Breach]]],
        breaches: list[_Breach],
    ) -> ParsedRows:
        """The parsed rows, once the policy has judged the contract breaches found."""
        breaches = [*breaches, *chain.from_iterable(found for _, found in categorical)]
        violations = self._judge(breaches) if breaches else NO_VIOLATIONS
        arrays = [array for array, _ in categorical]
        return ParsedRows(
            n_rows=n_rows,
            columns=self._in_schema_order(block, arrays),
            numeric=block,
            violations=violations,
        )

    def _judge(self, breaches: list[_Breach]) -> Violations:
        """The breaches counted by (column, rule); under `reject`, a `ContractError`
        naming the first one (lowest row, then schema order)."""
        violations = {(self.names[b.position], b.rule): b.count for b in breaches}
        if self.out_of_contract == "score":
            return violations
        first = min(breaches, key=lambda breach: (breach.row, breach.position))
        others = sum(violations.values()) - 1
        more = f" (and {others} more out-of-contract value(s) in this request)" if others else ""
        raise ContractError(
            f"row {first.row}, column '{self.names[first.position]}': {first.problem}{more}",
            violations,
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
        self.bound_rows(len(records))
        ignored: dict[str, None] = {}  # an ordered set: the names in the order first sent
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise InputError(f"row {index} is not a JSON object: got {show(record)}")
            ignored.update(
                dict.fromkeys(self._check_names(record.keys(), "column", f"row {index}: "))
            )
        return self.from_columns(
            {name: list(map(itemgetter(name), records)) for name in self.names}
        ).ignoring(list(ignored))

    def from_split(
        self, columns: Sequence[Any], rows: Sequence[Any], *, text: bool = False
    ) -> ParsedRows:
        """`columns` names + `rows` as lists of values (pandas "split" orient, CSV)."""
        # Sent as the schema lists them: named, each once, none missing (nothing to check).
        in_order = columns == self.names
        # The common request, one well-formed row in schema order, straight to the one-row
        # path: none of the checks below can refuse it.
        if in_order and type(rows) is list and len(rows) == 1:
            row = rows[0]
            if type(row) is list and len(row) == len(columns):
                parsed = self._one_row(row, self._same_text[text])
                if parsed is not None:
                    return parsed
        if not in_order and (
            not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)
        ):
            raise InputError(f"'columns' must be a list of column names: got {show(columns)}")
        if not isinstance(rows, list):
            raise InputError(f"'data' must be a list of rows: got {show(rows)}")
        self.bound_rows(len(rows))
        order, ignored = (range(len(self.names)), ()) if in_order else self._positions(columns)
        # Two C-level passes for the common case; the loop names the first bad row.
        well_formed = set(map(type, rows)) <= {list} and set(map(len, rows)) <= {len(columns)}
        for index, row in enumerate([] if well_formed else rows):
            if not isinstance(row, list) or len(row) != len(columns):
                count = f" ({len(row)} values)" if isinstance(row, list) else ""
                raise InputError(
                    f"row {index} must be a list of {len(columns)} values, one per column; "
                    f"got {show(row)}{count}"
                )
        # One row in another order: no transposing, no dict of columns (in schema order,
        # the one-row path has had it above).
        if len(rows) == 1 and not in_order:
            row = rows[0]
            parsed = self._one_row([row[position] for position in order], self._same_text[text])
            if parsed is not None:
                return parsed.ignoring(ignored)
        transposed = list(zip(*rows, strict=True)) or [()] * len(columns)
        return self.from_columns(
            {name: transposed[position] for name, position in zip(self.names, order, strict=True)},
            text=text,
        ).ignoring(ignored)

    def _positions(self, columns: list[str]) -> tuple[list[int], tuple[str, ...]]:
        """Where each schema column is among the `columns` sent, and the names sent that
        are no schema column (`_check_names`: kept out, or refused by the policy); a
        `SchemaError` for a name sent twice or a schema column missing."""
        positions = {name: index for index, name in enumerate(columns)}
        if len(positions) < len(columns):
            raise SchemaError(
                f"column(s) sent more than once: {repeated_names(columns)}; send each once"
            )
        ignored = self._check_names(positions.keys(), "column")
        return [positions[name] for name in self.names], ignored


def _as_list(values: Any, name: str) -> Sequence[Any]:
    if isinstance(values, list | tuple):  # tuple: a column of `from_split`'s transpose
        return values
    if isinstance(values, dict):
        raise SchemaError(f"column '{name}': expected a list of values, got {show(values)}")
    return [values]


def _split_decoder(row: Any) -> msgspec.json.Decoder:
    """A decoder of `{"dataframe_split": {"columns": [str, ...], "data": [row, ...]}}`."""
    split = msgspec.defstruct(
        "Split", [("columns", list[str]), ("data", list[row])], forbid_unknown_fields=True
    )
    payload = msgspec.defstruct(
        "SplitPayload", [("dataframe_split", split)], forbid_unknown_fields=True
    )
    return msgspec.json.Decoder(payload)


def _decoded_split(decoders: Sequence[msgspec.json.Decoder], body: bytes) -> Any | None:
    """The body's `dataframe_split` by the first of `decoders` whose types its values fit;
    None when none does or the body is not of that shape."""
    for decoder in decoders:
        try:
            return decoder.decode(body).dataframe_split
        except msgspec.ValidationError:  # a value of another type: the next decoder's?
            continue
        except msgspec.DecodeError:  # not JSON of this shape: no decoder reads it
            return None
    return None


class _ColumnParser:
    """One column's rule; the same for every protocol (module docstring of `schema`)."""

    def __init__(self, column: ColumnSchema, position: int) -> None:
        self.column = column
        self.name = column.name
        self.position = position
        self._categories = frozenset(column.categories) if column.categories else None
        # Integer-coded categories (a season written 1-4): JSON clients may send 3 for "3".
        self.integer_coded = bool(column.categories) and all(
            _INTEGER_TEXT.fullmatch(category) for category in column.categories or []
        )
        self.numeric_sentinels = [float(s) for s in column.sentinels if not isinstance(s, str)]
        self._text_sentinels = frozenset(str(s) for s in column.sentinels)

    @property
    def typed_json(self) -> Any:
        """The msgspec type of this column's values in a typed `dataframe_split` row
        (`InputSchema.from_split_body`): a JSON number or null for a number; for a category
        null or a string, one of `categories` or the text sentinels when the column lists
        categories. Such a string decodes as the one str object the type holds, so a column
        of 1,000 values holds a few distinct objects: no new str a value, a faster `set`."""
        if self.column.is_numeric:
            return float | None
        if self._categories is None:
            return str | None
        return Literal[tuple(sorted(self._categories | self._text_sentinels))] | None

    # -- numbers ---------------------------------------------------------------------------

    def parse_numeric(self, values: Sequence[Any], *, text: bool) -> np.ndarray:
        """float64 values, sentinels and missing as NaN; the contract is the caller's."""
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
            self._check_infinite(array, values)
        present = array if all_finite else array[~np.isnan(array)]
        self._check_magnitude(array, present, values)
        if self.column.type == "int":
            fractional = present != np.floor(present)
            if fractional.any():
                row = _row_of(array, present[np.argmax(fractional)])
                raise self._error(row, fraction_problem(values[row]))
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
                raise self._error(
                    row, f"{show(value)} is too large to score: it overflows float64"
                ) from None
        # Text reads as `text_values` says, as in ingest and `ct drift`.
        if is_missing_text(value):
            return math.nan
        number = text_number(value)
        if number is None:
            raise self._error(row, f"expected a number, got {show(value)}")
        if is_overflow(value, number):
            raise self._error(row, overflow_problem(show(value)))
        return number

    def _raise_first_non_number(self, values: Sequence[Any], *, text: bool) -> NoReturn:
        allowed = _JSON_NUMBER_TYPES | {str} if text else _JSON_NUMBER_TYPES
        for row, value in enumerate(values):
            if isinstance(value, OverflowedNumber):
                raise self._error(row, overflow_problem(value.text))
            if type(value) not in allowed:
                raise self._error(row, f"expected a number, got {show(value)}")
        raise AssertionError("unreachable: a value of another type was found")

    def _check_infinite(self, array: np.ndarray, values: Sequence[Any]) -> None:
        infinite = np.isinf(array)
        if infinite.any():
            row = int(np.argmax(infinite))
            raise self._error(row, f"infinite value {show(values[row])} is not allowed")

    def _check_magnitude(
        self, array: np.ndarray, present: np.ndarray, values: Sequence[Any]
    ) -> None:
        # The ONNX graph scores in float32: beyond its range a value would silently be inf.
        if present.size and float(np.abs(present).max()) > _MAX_FLOAT32:
            row = _row_of(array, present[np.argmax(np.abs(present))])
            raise self._error(
                row, f"{show(values[row])} is beyond the model's range (±{_MAX_FLOAT32:.4g})"
            )

    # -- categories ------------------------------------------------------------------------

    def parse_categorical(
        self, values: Sequence[Any], *, text: bool
    ) -> tuple[np.ndarray, list[_Breach]]:
        """Categories as str (missing: `MISSING_CATEGORY`), and the contract's breaches:
        a value outside `categories` (kept as sent: the model scores it as none of the
        known ones), a missing value in a required column."""
        judged = self._judged_distinct(values, text=text)
        if judged is None:  # numbers or other JSON types among the values: one at a time
            outcomes = [self._judged(row, value, text) for row, value in enumerate(values)]
            array = np.array([category for category, _ in outcomes], dtype=object)
            rules = [rule for _, rule in outcomes]
        else:
            replaced = {value: category for value, (category, _) in judged.items()}
            if all(category is value for value, category in replaced.items()):
                array = np.array(values, dtype=object)
            else:
                array = np.array([replaced[value] for value in values], dtype=object)
            broken = {value: rule for value, (_, rule) in judged.items() if rule is not None}
            rules = [broken.get(value) for value in values] if broken else []
        breaches = []
        for rule in ("nullable", "categories"):
            rows = [row for row, broke in enumerate(rules) if broke == rule] if rules else []
            if rows:
                problem = _contract_problem(self.column, rule, values[rows[0]])
                breaches.append(_Breach(self.position, rule, len(rows), rows[0], problem))
        return array, breaches

    def accepted(self, *, text: bool) -> dict[Any, str]:
        """The text/null values this column accepts without a contract breach, mapped to
        the category fed to the model: `_judged`'s verdict on each, precomputed. Without
        `categories` any other text is accepted as itself, except a missing marker not
        listed (" NaN " in a text protocol): `_judged` has the last word on those."""
        accepted: dict[Any, str] = {category: category for category in self._categories or ()}
        for marker in [None, *self._text_sentinels, *(MISSING_TEXT if text else ())]:
            accepted.pop(marker, None)  # "missing" wins over a category of the same text
            if self.column.nullable:
                accepted[marker] = MISSING_CATEGORY
        return accepted

    def takes_any_text(self, value: str, *, text: bool) -> bool:
        """A text value outside `accepted(text=...)` that this column still takes as itself."""
        return (
            self._categories is None
            and value not in self._text_sentinels
            and not (text and is_missing_text(value))
        )

    def _judged_distinct(
        self, values: Sequence[Any], *, text: bool
    ) -> dict[Any, tuple[str, str | None]] | None:
        """The rule applied once per distinct value, when every value is text or null (a
        request has few distinct categories); None when other types need it row by row
        (1 == 1.0 == True as keys, and a number's error names its row)."""
        try:
            distinct = set(values)
        except TypeError:  # a list or an object among the values: not a category
            return None
        # The types of the distinct values only: a set keeps one of values that compare
        # equal (1 == 1.0 == True), but text and null equal no value of another type, so
        # when every distinct value is text or null, every value is.
        if not set(map(type, distinct)) <= _TEXT_OR_NULL:
            return None
        return {value: self._judged(0, value, text) for value in distinct}

    def _judged(self, row: int, value: Any, text: bool) -> tuple[str, str | None]:
        """(category fed to the model, contract rule broken or None) for one value."""
        if (
            value is None
            or (text and is_missing_text(value))
            or _is_missing_marker(value, self._text_sentinels)
        ):
            return MISSING_CATEGORY, None if self.column.nullable else "nullable"
        category = value if isinstance(value, str) else self._integer_category(row, value)
        if self._categories is not None and category not in self._categories:
            return category, "categories"
        return category, None

    def _integer_category(self, row: int, value: Any) -> str:
        """A JSON number for an integer-coded category: 3 (or 3.0) means "3"; 3.5 is refused."""
        if self.integer_coded and type(value) in JSON_NUMBERS and float(value).is_integer():
            return str(int(value))
        expected = "a category (string or integer)" if self.integer_coded else "a category string"
        raise self._error(row, f"expected {expected}, got {show(value)}")

    def _error(self, row: int, problem: str) -> SchemaError:
        return SchemaError(f"row {row}, column '{self.name}': {problem}")


def _contract_problem(column: ColumnSchema, rule: str, value: Any) -> str:
    """What breaking `rule` of `column` means for one value, quoting it as sent."""
    shown = show(value)
    if rule == "min":
        return f"{shown} is below the contract's min {_figure(column.min)}"
    if rule == "max":
        return f"{shown} is above the contract's max {_figure(column.max)}"
    if rule == "categories":
        return f"{shown} is not one of the contract's categories {_listed(column.categories)}"
    return f"missing value ({shown}) but the contract requires one (nullable: false)"


def fraction_problem(value: Any) -> str:
    """The words for a number with a fraction sent for an `int` column, quoting it."""
    return f"expected an integer, got {show(value)}"


def overflow_problem(shown: str) -> str:
    return f"{shown} overflows to infinity: beyond float64 (±{np.finfo(np.float64).max:.4g})"


def _bound(bound: float | None, model_limit: float) -> float:
    """A contract bound, within float32's range (beyond it the model's own limit binds)."""
    if bound is None:
        return model_limit
    return max(bound, model_limit) if model_limit < 0 else min(bound, model_limit)


def _figure(value: float | None) -> str:
    """A contract bound as the spec wrote it: 100, not 100.0."""
    return f"{value:g}" if value is not None and abs(value) < 1e15 else repr(value)


def _listed(names: Sequence[Any] | None) -> list[Any]:
    names = list(names or [])
    listed = names[:_MAX_LISTED_NAMES]
    return [*listed, f"... {len(names) - len(listed)} more"] if len(names) > len(listed) else listed


def _is_missing(value: Any) -> bool:
    """A request value meaning "missing" (null, NaN, an empty text field); not a sentinel."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return is_missing_text(value)


def _is_missing_marker(value: Any, sentinels: frozenset[str]) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value in sentinels


def _row_of(array: np.ndarray, value: float) -> int:
    return int(np.argmax(array == value))


def show(value: Any) -> str:
    """A request value as the client wrote it (JSON spelling: true, null, NaN, "3"), short."""
    if isinstance(value, OverflowedNumber | SentFloat | SentInt):
        return value.text
    try:
        shown = json.dumps(value, ensure_ascii=False)  # "٤١", not "\\u0664\\u0661"
    except (TypeError, ValueError):
        shown = repr(value)
    return shown if len(shown) <= _MAX_SHOWN else f"{shown[: _MAX_SHOWN - 1]}…"
