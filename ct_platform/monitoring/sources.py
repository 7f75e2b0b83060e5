"""Feed data into `DataSummary`s batch by batch: Parquet files, CSV files, frames, records.

Every source becomes Arrow batches of the feature columns, typed and counted by one function
(`add_arrow`), so files, frames and prediction-log pages follow the same rules:

- Parquet is streamed (`pyarrow.parquet.ParquetFile.iter_batches`, one row group at a time,
  `BATCH_ROWS` rows per batch, string columns kept dictionary-encoded, column chunks read
  `READ_BUFFER_BYTES` at a time): peak memory is a batch and a page per column plus the
  summaries, whatever the row count and row group size.
- CSV (`.csv`, `.csv.gz`) is streamed too (`pyarrow.csv.open_csv`, `CSV_BLOCK_BYTES` of
  text per batch, the spec's separator, only the feature columns; Arrow reads up to 32
  blocks ahead of the batch in hand, so memory is bounded by the block size, not the
  rows): numeric columns read as text (so a stray "abc" is counted, not a reason to fail
  the file), categorical ones dictionary-encoded; an empty field, and text reading "nan"
  in any case and sign, is missing in every column, categorical ones included, as the
  model server and ingest read text (`ct_platform.text_values`).
- Frames and prediction-log records are converted column by column (`add_frame`,
  `add_records`).

Typing, value for value as `monitoring.frames.typed_column` does: numeric columns become
float64, with nulls, sentinels and empty text missing; categorical values become
`str(value)`. Text in a numeric column is parsed by Arrow (`pyarrow.compute.cast`; a batch it
refuses is parsed value by value against `text_values.NUMBER_TEXT`, surrounding spaces
allowed); what is sent
but is not a number is counted as unparseable with examples quoted as sent
(`NumericSummary.add_unparseable`), never silently as missing; a number too large for
float64 as an overflow (`add_overflow`), in the server's words. Range and category violations
are counted by the summaries themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ct_platform.monitoring.frames import (
    MissingColumnsError,
    refuse_near_duplicates,
    require_unique_columns,
)
from ct_platform.monitoring.results import MAX_QUOTED
from ct_platform.monitoring.summaries import (
    CategorySummary,
    ColumnSummary,
    DataSummary,
    NumericSummary,
    SentText,
    Value,
)
from ct_platform.settings import ColumnSpec, DatasetSpec
from ct_platform.text_values import INFINITY_TEXT, MISSING_TEXT, NUMBER_TEXT, is_missing_text

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ct_platform.monitoring.drift import ReferenceProfile

# Rows per streamed batch: 2 MB per numeric column, big enough that per-batch costs vanish.
BATCH_ROWS = 262_144
# Bytes of a Parquet column chunk read at a time (see `_open_parquet`).
READ_BUFFER_BYTES = 1024 * 1024
# CSV text per streamed batch: about 100,000 rows of the bank data. Arrow's reader keeps up
# to 32 blocks read ahead: 504 MB of Arrow memory streaming a 430 MB bank CSV (175 MB with
# 4 MB blocks), the same for any longer file.
CSV_BLOCK_BYTES = 16 * 1024 * 1024


def empty_summary(
    dataset: DatasetSpec, sample_rows: int, reference: ReferenceProfile | None = None
) -> DataSummary:
    """Empty summaries of the spec's feature columns. Given the reference profile, numeric
    columns of a small reference also collect the counts of the exact KS statistic."""
    columns: dict[str, ColumnSummary] = {}
    for name in dataset.feature_columns:
        spec = dataset.columns[name]
        if not spec.is_numeric:
            columns[name] = CategorySummary(spec.categories)
            continue
        sketch = None if reference is None else reference.columns.get(name)
        grid = None
        if sketch is not None and sketch.values is not None and len(sketch.values):
            grid = np.unique(sketch.values)
        columns[name] = NumericSummary(
            sample_rows,
            sentinels=_sentinels(spec),
            ks_grid=grid,
            low=spec.min,
            high=spec.max,
            integer=spec.type == "int",
        )
    return DataSummary(columns)


def summarise_frame(
    frame: pd.DataFrame,
    dataset: DatasetSpec,
    sample_rows: int,
    reference: ReferenceProfile | None = None,
) -> DataSummary:
    """Summary of a frame typed like a cleaned frame (`frames.typed_features`)."""
    summary = empty_summary(dataset, sample_rows, reference)
    add_frame(summary, frame, dataset, where="current")
    return summary


def add_frame(summary: DataSummary, frame: pd.DataFrame, dataset: DatasetSpec, where: str) -> None:
    """Add a frame's rows (typed, or raw values as read: typed here like any source)."""
    import pyarrow as pa

    from ct_platform.monitoring.frames import require_features

    require_features(frame, dataset, where=where)
    columns = [_series_values(frame[name]) for name in summary.columns]
    add_arrow(summary, pa.RecordBatch.from_arrays(columns, names=list(summary.columns)), dataset)


def add_records(
    summary: DataSummary, records: list[dict[str, object]], dataset: DatasetSpec
) -> None:
    """Add rows given as {column: value} (prediction-log features); an absent key is missing."""
    import pyarrow as pa

    columns = [_arrow_values([row.get(name) for row in records]) for name in summary.columns]
    add_arrow(summary, pa.RecordBatch.from_arrays(columns, names=list(summary.columns)), dataset)


def summarise_file(
    path: Path,
    dataset: DatasetSpec,
    sample_rows: int,
    reference: ReferenceProfile | None = None,
) -> DataSummary:
    """Summary of a `.parquet`, `.csv` or `.csv.gz` file (streamed), with every column name.

    Raises `data.reader.BatchReadError` for an unreadable file and `MissingColumnsError` when
    a feature column is absent.
    """
    from ct_platform.data.landing import batch_suffix
    from ct_platform.data.reader import BatchReadError

    path = Path(path)
    suffix = batch_suffix(path.name)
    if suffix is None:
        raise BatchReadError(path, "unsupported file type (expected .csv, .csv.gz or .parquet)")
    summary = empty_summary(dataset, sample_rows, reference)
    batches = _parquet_batches if suffix == ".parquet" else _csv_batches
    for batch in batches(path, dataset, summary):
        add_arrow(summary, batch, dataset)
    return summary


def column_chunks(path: Path, dataset: DatasetSpec, names: list[str]) -> Iterator[pd.DataFrame]:
    """Columns `names` of a `.parquet`, `.csv` or `.csv.gz` file, valued as ingest reads the
    whole file (`data.reader.read_batch`: CSV fields as text, missing text as NaN;
    Parquet typed, an integer or boolean column holding a null anywhere as float64 or
    object in every frame), for `data.contract`'s rules. Streamed in frames of at most
    `BATCH_ROWS` rows (CSV: `CSV_BLOCK_BYTES` of text): memory is one frame, whatever the
    file's size or row groups.

    Raises `data.reader.BatchReadError` for an unreadable file.
    """
    import pyarrow as pa

    from ct_platform.data.landing import batch_suffix
    from ct_platform.data.reader import missing_text_as_null

    path = Path(path)
    if batch_suffix(path.name) == ".parquet":
        for frame in _parquet_frames(path, names):
            yield missing_text_as_null(frame)
        return
    for batch in _csv_reader(path, dataset, dict.fromkeys(names, pa.string())):
        yield missing_text_as_null(batch.to_pandas())


def parquet_columns(path: Path) -> list[str]:
    """A Parquet file's data columns (a pandas index stored as a column is left out)."""
    import pyarrow.parquet as pq

    schema = _open_parquet(path, pq).schema_arrow
    return _data_columns(schema)


def floor_read(path: Path, dataset: DatasetSpec) -> int:
    """Stream the file's feature columns and do nothing with them: the reading floor the
    benchmark compares with. Returns the row count."""
    from ct_platform.data.landing import batch_suffix

    batches = _parquet_batches if batch_suffix(Path(path).name) == ".parquet" else _csv_batches
    rows = 0
    for batch in batches(path, dataset, empty_summary(dataset, 1)):
        rows += batch.num_rows
    return rows


def sample_parquet(path: Path, columns: list[str], rows: int, seed: int = 0) -> pd.DataFrame:
    """`rows` rows drawn at random without replacement (all when fewer), as pandas reads
    them, streamed batch by batch: memory is one batch plus the sample."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = _open_parquet(path, pq)
    total = parquet.metadata.num_rows
    wanted = np.sort(np.random.default_rng(seed).choice(total, min(rows, total), replace=False))
    taken: list[pa.RecordBatch] = []
    start = 0
    for batch in _batches(parquet, columns):
        end = start + batch.num_rows
        inside = wanted[(wanted >= start) & (wanted < end)] - start
        if len(inside):
            taken.append(batch.take(pa.array(inside)))
        start = end
    schema = pa.schema([parquet.schema_arrow.field(name) for name in columns])
    return pa.Table.from_batches(taken, schema=schema).to_pandas()


# --- Parquet ------------------------------------------------------------------------------


def _parquet_batches(
    path: Path, dataset: DatasetSpec, summary: DataSummary
) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ct_platform.data.reader import BatchReadError

    probe = _open_parquet(path, pq)
    schema = probe.schema_arrow
    summary.other_columns = _data_columns(schema)
    require_unique_columns(schema.names, str(path))
    refuse_near_duplicates(schema.names, dataset, str(path))
    missing = [name for name in dataset.feature_columns if name not in schema.names]
    if missing:
        raise MissingColumnsError(missing, str(path))
    # Text kept as dictionary codes: counting codes is cheap, one Python str per distinct value.
    text = [
        name
        for name in dataset.feature_columns
        if pa.types.is_string(schema.field(name).type)
        or pa.types.is_large_string(schema.field(name).type)
    ]
    parquet = _open_parquet(path, pq, read_dictionary=text)
    try:
        yield from _batches(parquet, list(dataset.feature_columns))
    except (pa.ArrowException, OSError) as exc:
        raise BatchReadError(path, f"corrupt Parquet file: {exc}") from None


def _parquet_frames(path: Path, names: list[str]) -> Iterator[pd.DataFrame]:
    """`column_chunks` of a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ct_platform.data.reader import BatchReadError

    parquet = _open_parquet(path, pq)
    try:
        # pandas reads an integer column holding a null as float64 and a boolean one as
        # object: a frame without the null would read otherwise (1, not 1.0, in examples).
        widened = [name for name in names if _null_widens(parquet, name)]
        for batch in _batches(parquet, names):
            frame = batch.to_pandas()
            for name in widened:
                kind = frame[name].dtype
                if isinstance(kind, np.dtype) and kind.kind in "iub":  # not pandas' Int64
                    frame[name] = frame[name].astype("float64" if kind.kind in "iu" else object)
            yield frame
    except (pa.ArrowException, OSError) as exc:
        raise BatchReadError(path, f"corrupt Parquet file: {exc}") from None


def _null_widens(parquet: pq.ParquetFile, name: str) -> bool:
    """True for an integer or boolean column holding a null: pandas reads the whole column
    wider than a null-free part of it. Nulls are counted from the row groups' statistics,
    or by reading a row group that has none."""
    import pyarrow as pa

    kind = parquet.schema_arrow.field(name).type
    if not (pa.types.is_integer(kind) or pa.types.is_boolean(kind)):
        return False
    metadata = parquet.metadata
    leaf = [metadata.schema.column(i).path for i in range(metadata.num_columns)].index(name)
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(leaf).statistics
        if statistics is not None and statistics.has_null_count:
            nulls = statistics.null_count
        else:
            batches = parquet.iter_batches(BATCH_ROWS, row_groups=[group], columns=[name])
            nulls = sum(batch.column(0).null_count for batch in batches)
        if nulls:
            return True
    return False


# --- CSV --------------------------------------------------------------------------------


def _csv_batches(
    path: Path, dataset: DatasetSpec, summary: DataSummary
) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    from ct_platform.data.reader import check_header

    header = _csv_header(path, dataset.separator)
    check_header(path, header, dataset)  # ingest's words: "(is the separator ';'?)"
    require_unique_columns(header, f"{path} header")
    refuse_near_duplicates(header, dataset, f"{path} header")
    summary.other_columns = header
    features = list(dataset.feature_columns)
    missing = [name for name in features if name not in header]
    if missing:
        raise MissingColumnsError(missing, str(path))
    text = pa.dictionary(pa.int32(), pa.string())  # categories: counted per code
    types = {n: pa.string() if dataset.columns[n].is_numeric else text for n in features}
    yield from _csv_reader(path, dataset, types)


def _csv_reader(
    path: Path, dataset: DatasetSpec, column_types: dict[str, pa.DataType]
) -> Iterator[pa.RecordBatch]:
    """The file's columns `column_types` (in that order) as typed there, `CSV_BLOCK_BYTES`
    of text per batch; an empty field is null."""
    import pyarrow as pa
    import pyarrow.csv as pv

    from ct_platform.data.reader import BatchReadError

    convert = pv.ConvertOptions(
        column_types=column_types,
        include_columns=list(column_types),
        null_values=[""],
        strings_can_be_null=True,
    )
    try:
        reader = pv.open_csv(
            pa.input_stream(path, compression="detect"),
            read_options=pv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            parse_options=pv.ParseOptions(delimiter=dataset.separator),
            convert_options=convert,
        )
        yield from reader
    except (pa.ArrowException, OSError) as exc:
        raise BatchReadError(path, f"not parseable as CSV: {exc}") from None


def _csv_header(path: Path, separator: str) -> list[str]:
    """The header's column names, read from the first line (after a UTF-8 BOM)."""
    import csv

    import pyarrow as pa

    from ct_platform.data.reader import BatchReadError

    try:
        with pa.input_stream(path, compression="detect") as stream:
            first = b""
            while b"\n" not in first and (chunk := stream.read(65_536)):
                first += chunk
            first = first.split(b"\n", 1)[0]
    except FileNotFoundError as exc:
        raise BatchReadError(path, f"cannot open file: {exc.strerror or exc}") from None
    except (pa.ArrowException, OSError) as exc:
        raise BatchReadError(path, f"cannot read file: {exc}") from None
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BatchReadError(path, f"not UTF-8 text (undecodable byte at {exc.start})") from None
    if not line.strip():
        raise BatchReadError(path, "empty file (no header line)")
    return next(csv.reader([line], delimiter=separator))


# --- Parquet batches ------------------------------------------------------------------------


def _batches(parquet: pq.ParquetFile, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Row group by row group: one `iter_batches` over the whole file reads ahead and held
    2.5x the memory (636 MB against 257 MB streaming a 10M-row file)."""
    for index in range(parquet.num_row_groups):
        yield from parquet.iter_batches(BATCH_ROWS, row_groups=[index], columns=columns)


def _open_parquet(path: Path, pq, read_dictionary: list[str] | None = None) -> pq.ParquetFile:
    """The file, read column chunk by column chunk in `READ_BUFFER_BYTES` pieces (Arrow's
    default pre-buffers a row group's column chunks whole: 497 MB of Arrow memory streaming
    one 10M-row row group of the bank columns, 106 MB so); `read_dictionary`: text columns
    kept as dictionary codes."""
    import pyarrow as pa

    from ct_platform.data.reader import BatchReadError

    try:
        return pq.ParquetFile(
            path,
            read_dictionary=read_dictionary,
            pre_buffer=False,
            buffer_size=READ_BUFFER_BYTES,
        )
    except FileNotFoundError as exc:
        raise BatchReadError(path, f"cannot open file: {exc.strerror or exc}") from None
    except (pa.ArrowException, OSError) as exc:
        raise BatchReadError(path, f"not a readable Parquet file: {exc}") from None


def _data_columns(schema: pa.Schema) -> list[str]:
    metadata = schema.pandas_metadata or {}
    index = {name for name in metadata.get("index_columns", []) if isinstance(name, str)}
    return [name for name in schema.names if name not in index]


# --- typing -------------------------------------------------------------------------------


def add_arrow(summary: DataSummary, batch: pa.RecordBatch | pa.Table, dataset: DatasetSpec) -> None:
    """Add an Arrow batch's rows (raw values: typed here like `frames.typed_column`)."""
    summary.rows += batch.num_rows
    for name, column in summary.columns.items():
        values = batch.column(name)
        summary.missing[name] = summary.missing.get(name, 0) + _missing_count(values)
        if isinstance(column, NumericSummary):
            numbers = _numeric_values(values, dataset.columns[name], column)
            column.add(numbers, _sent_text(values))
        else:
            column.add_counts(_category_counts(values), len(values))


def _missing_count(values: pa.Array | pa.ChunkedArray) -> int:
    """Missing values as ingest counts them (`pandas.isna` of the batch as read): nulls (an
    empty CSV field), missing text (`text_values.MISSING_TEXT`) and, in a floating-point
    column, NaN; a sentinel is an answer."""
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = values.null_count
    kind = values.type
    if pa.types.is_floating(kind):
        missing += pc.sum(pc.is_nan(values)).as_py() or 0
    elif pa.types.is_dictionary(kind) and _is_text(kind.value_type):
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        marked = _missing_text_mask(values.dictionary)
        missing += pc.sum(pc.take(marked, values.indices)).as_py() or 0
    elif _is_text(kind):
        missing += pc.sum(_missing_text_mask(values)).as_py() or 0
    return missing


def _missing_text_mask(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Which text values are missing text (`text_values.MISSING_TEXT`); null for nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    trimmed = pc.utf8_lower(pc.utf8_trim_whitespace(text))
    return pc.is_in(trimmed, value_set=pa.array(sorted(MISSING_TEXT), pa.string()))


def _arrow_values(values: list[object]) -> pa.Array:
    """Python values as Arrow: typed when Arrow can (numbers, strings, None/NaN as null),
    else as text (a number and a string in one column), so parsing counts what is not a
    number."""
    import pyarrow as pa

    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([_text(value) for value in values], pa.string())


def _series_values(series: pd.Series) -> pa.Array:
    """A pandas column as Arrow (vectorised; value by value only for mixed types)."""
    import pyarrow as pa

    try:
        return pa.Array.from_pandas(series)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _arrow_values(series.tolist())


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value if isinstance(value, str) else str(value)


def _numeric_values(values: pa.Array, column: ColumnSpec, summary: NumericSummary) -> np.ndarray:
    """float64, NaN for missing; text is parsed and what is not a number reported to
    `summary` (count and examples)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type) and not _is_text(values.type.value_type):
        values = values.dictionary_decode()
    kind = values.type
    if pa.types.is_dictionary(kind):  # text stored as codes: parse each distinct value once
        numbers = _parsed_text(values.dictionary, column, summary, values.indices)
        numbers = pc.take(numbers, values.indices)
    elif _is_text(kind):
        numbers = _parsed_text(values, column, summary)
    else:  # numbers, booleans, all-null
        numbers = pc.cast(values, pa.float64())
    if numbers.null_count:
        numbers = numbers.fill_null(np.nan)
    return numbers.to_numpy(zero_copy_only=False)


def _sent_text(values: pa.Array | pa.ChunkedArray) -> SentText | None:
    """Rows -> the values as sent, when the column was text (CSV fields, text in Parquet):
    what violations quote (`1e-400`, which reads as 0)."""
    import pyarrow as pa

    kind = values.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not _is_text(kind):
        return None
    return lambda rows: values.take(pa.array(rows)).to_pylist()


def _is_text(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _parsed_text(
    text: pa.Array, column: ColumnSpec, summary: NumericSummary, codes: pa.Array | None = None
) -> pa.Array:
    """Numbers (float64, null for missing and unparseable) of text values. Empty text and the
    spec's text sentinels are missing; anything else that is not a number is counted in
    `summary`, once per row (`codes`: the rows' indices into `text`, a dictionary)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    sent, text = text, pc.utf8_trim_whitespace(text)
    sentinels = [s for s in column.sentinels if isinstance(s, str)]
    missing = pc.or_kleene(
        _missing_text_mask(text), pc.is_in(text, value_set=pa.array(sentinels, pa.string()))
    )
    text = pc.if_else(missing, None, text)
    try:
        numbers = pc.cast(text, pa.float64())
    except pa.ArrowInvalid:  # some value is not a number: cast only those that are
        looks_numeric = pc.match_substring_regex(text, NUMBER_TEXT)
        numbers = pc.cast(pc.if_else(looks_numeric, text, None), pa.float64())
    unparseable = pc.and_kleene(pc.is_valid(text), pc.is_null(numbers))
    # A number too large for float64 reads as infinite: an overflow, not an infinity.
    overflow = pc.and_kleene(
        pc.is_inf(numbers), pc.invert(pc.match_substring_regex(text, INFINITY_TEXT))
    )
    for bad, add in ((unparseable, summary.add_unparseable), (overflow, summary.add_overflow)):
        if pc.any(bad).as_py():
            rows = bad if codes is None else pc.take(bad, codes).fill_null(False)
            examples = pc.unique(pc.filter(sent, bad)).slice(0, MAX_QUOTED).to_pylist()
            add(pc.sum(rows).as_py() or 0, examples)
            numbers = pc.if_else(bad, None, numbers)
    return numbers


def _category_counts(values: pa.Array) -> dict[Value, int]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(values.type):
        # Nulls dropped first: with them the codes would come out as float64.
        codes = pc.drop_null(values.indices).to_numpy(zero_copy_only=False)
        counts = np.bincount(codes, minlength=len(values.dictionary))
        pairs = zip(values.dictionary.to_pylist(), counts.tolist(), strict=True)
    else:
        counted = pc.value_counts(values)
        pairs = zip(
            counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
        )
    result: dict[Value, int] = {}
    for value, count in pairs:
        if count and not _missing(value):
            key = value if isinstance(value, str) else str(value)
            result[key] = result.get(key, 0) + count
    return result


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value) or is_missing_text(value)


def _sentinels(column: ColumnSpec) -> list[float]:
    return [float(s) for s in column.sentinels if not isinstance(s, str)]
