"""Read one batch file into a DataFrame, or say precisely why it cannot be read.

CSV values are read as strings: guessing types here would hide the very problems the
contract exists to report (a stray "abc" in an int column would silently make it text).
In every text column (CSV fields; text in Parquet) the empty field and `nan` in any case and
sign are missing, as the model server and `ct drift` read text (`ct_platform.text_values`);
"NA" or "null" stays a value (not a number in a numeric column, a category in a category one).
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ct_platform.data.landing import PARQUET_MAGIC, batch_suffix
from ct_platform.serving.schema import repeated_names
from ct_platform.settings import DatasetSpec
from ct_platform.text_values import is_missing_text

GZIP_MAGIC = b"\x1f\x8b"
_TEXT_DTYPES = (pd.StringDtype, pd.CategoricalDtype)
# How many offending line numbers a field-count error quotes.
MAX_LINES_QUOTED = 5


class BatchReadError(ValueError):
    """A batch file cannot be read as a table. The message names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path.name}: {problem}")
        self.path = path
        self.problem = problem


def read_batch(path: Path, dataset: DatasetSpec) -> pd.DataFrame:
    """Read a `.csv`, `.csv.gz` or `.parquet` batch; raise `BatchReadError` if it is unreadable."""
    path = Path(path)
    suffix = batch_suffix(path.name)
    if suffix is None:
        raise BatchReadError(path, "unsupported file type (expected .csv, .csv.gz or .parquet)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BatchReadError(path, f"cannot open file: {exc.strerror or exc}") from None
    if not raw:
        raise BatchReadError(path, "empty file (0 bytes)")
    if suffix == ".parquet":
        frame = _read_parquet(path, raw)
    else:
        text = _decode(path, _gunzip(path, raw) if suffix == ".csv.gz" else raw)
        _check_field_counts(path, text, dataset.separator)
        frame = _read_csv(path, text, dataset.separator)
    check_header(path, list(frame.columns), dataset)
    return missing_text_as_null(frame)


def missing_text_as_null(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with missing text (`text_values.is_missing_text`: "", " NaN "...) as NaN in
    its text columns (object, string or categorical dtype); other values untouched."""
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        if not (column.dtype == object or isinstance(column.dtype, _TEXT_DTYPES)):
            continue
        # Judged once per distinct value: a column holds far fewer than it has rows.
        marked = [value for value in column.unique() if is_missing_text(value)]
        if marked:
            frame.isetitem(position, column.astype(object).mask(column.isin(marked)))
    return frame


def _gunzip(path: Path, raw: bytes) -> bytes:
    if not raw.startswith(GZIP_MAGIC):
        raise BatchReadError(
            path, "not gzip data (the name ends in .gz but the magic bytes differ)"
        )
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise BatchReadError(path, f"corrupt or truncated gzip data: {exc}") from None


def _decode(path: Path, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BatchReadError(
            path, f"not UTF-8 text (undecodable byte at offset {exc.start}): binary or corrupt"
        ) from None
    if "\0" in text:
        raise BatchReadError(path, "contains NUL bytes: binary data, not CSV text")
    if not text.strip():
        raise BatchReadError(path, "empty file (only whitespace)")
    return text


def _check_field_counts(path: Path, text: str, separator: str) -> None:
    """Every data row has as many fields as the header, or the file is refused saying so.

    Checked before parsing because pandas copes "helpfully": rows with exactly one field
    more than the header (a trailing separator) make the first column the index, and the
    contract then reports a shifted table (`age: not an integer: 'self-employed'`).
    """
    rows = csv.reader(io.StringIO(text), delimiter=separator)
    header = next(rows, [])
    _check_unique_names(path, header)
    expected = len(header)
    wrong: dict[int, list[int]] = {}  # field count -> line numbers
    n_rows = 0
    for row in rows:
        if not row:
            continue  # blank line: skipped by the parser too
        n_rows += 1
        if len(row) != expected:
            wrong.setdefault(len(row), []).append(rows.line_num)
    if not wrong:
        return
    n_wrong = sum(len(lines) for lines in wrong.values())
    counts = "; ".join(
        f"{len(lines)} with {count} ({_quote_lines(lines)})"
        for count, lines in sorted(wrong.items())
    )
    hint = ""
    trailing = all(line.endswith(separator) for line in _data_lines(text))
    if list(wrong) == [expected + 1] and trailing:
        hint = f"; every data row ends with the separator {separator!r} and the header does not"
    raise BatchReadError(
        path,
        f"field count mismatch: the header has {expected} fields, {n_wrong} of {n_rows} data "
        f"rows do not: {counts}{hint}",
    )


def _check_unique_names(path: Path, header: list[str]) -> None:
    """A header naming a column twice is refused (pandas would read the second `age` as
    `age.1`), in the words of the model server and `ct drift`."""
    repeated = repeated_names(header)
    if repeated is not None:
        raise BatchReadError(path, f"column(s) named more than once: {repeated}; name each once")


def _quote_lines(lines: list[int]) -> str:
    quoted = ", ".join(str(line) for line in lines[:MAX_LINES_QUOTED])
    more = len(lines) - MAX_LINES_QUOTED
    label = "line" if len(lines) == 1 else "lines"
    return f"{label} {quoted}" + (f" and {more} more" if more > 0 else "")


def _data_lines(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.splitlines()[1:] if line.strip()]


def _read_csv(path: Path, text: str, separator: str) -> pd.DataFrame:
    try:
        return pd.read_csv(
            io.StringIO(text),
            sep=separator,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BatchReadError(path, f"not parseable as CSV: {message}") from None


def _read_parquet(path: Path, raw: bytes) -> pd.DataFrame:
    if not (raw.startswith(PARQUET_MAGIC) and raw.endswith(PARQUET_MAGIC)):
        raise BatchReadError(path, "not a Parquet file (PAR1 marker missing at start or end)")
    try:
        return pd.read_parquet(io.BytesIO(raw))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BatchReadError(path, f"corrupt Parquet file: {exc}") from None


def check_header(path: Path, names: list[object], dataset: DatasetSpec) -> None:
    """A first line sharing no name with the spec is data or garbage, not a header: raise
    `BatchReadError` saying so, with a hint at the separator (ingest and `ct drift` alike).

    Partly wrong headers are the contract's business (it lists missing/unexpected columns);
    this only catches files where column names cannot be matched at all.
    """
    expected = {*dataset.columns, dataset.target, *dataset.drop_columns}
    found = {str(column).strip() for column in names}
    if found & expected:
        return
    first = ", ".join(repr(str(c)) for c in names[:5])
    raise BatchReadError(
        path,
        f"no header: the first line ({first}, ...) names none of the spec's columns "
        f"(is the separator {dataset.separator!r}?)",
    )
