"""Feed data into `DataSummary`s batch by batch: Parquet files, CSV files and frames.

Parquet is streamed (`pyarrow.parquet.ParquetFile.iter_batches`, one row group at a time,
`BATCH_ROWS` rows per batch, only the feature columns, string columns kept
dictionary-encoded), so a file of any length is summarised in bounded memory: peak memory is
about one row group's feature columns plus the summaries (a file written as one huge row
group costs that row group).
Columns are typed as `monitoring.frames.typed_column` types them, value for value: numeric
columns become float64 with nulls, sentinels and (for text columns) unparseable values
missing; categorical values become `str(value)`. Arrow does the common cases itself (numbers
cast to float64, strings counted per dictionary code); anything else (numbers stored as text,
categories stored as numbers) goes through `typed_column` for that batch.

CSV files are read whole (`data.reader.read_batch`, which says precisely what is wrong with a
malformed file) and then summarised like a frame: memory grows with a CSV file's size, so big
inputs belong in Parquet.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ct_platform.monitoring.frames import MissingColumnsError
from ct_platform.monitoring.summaries import (
    CategorySummary,
    ColumnSummary,
    DataSummary,
    NumericSummary,
    Value,
)
from ct_platform.settings import ColumnSpec, DatasetSpec

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ct_platform.monitoring.drift import ReferenceProfile

# Rows per streamed batch: 2 MB per numeric column, big enough that per-batch costs vanish.
BATCH_ROWS = 262_144


def empty_summary(
    dataset: DatasetSpec, sample_rows: int, reference: ReferenceProfile | None = None
) -> DataSummary:
    """Empty summaries of the spec's feature columns. Given the reference profile, numeric
    columns of a small reference also collect the counts of the exact KS statistic."""
    columns: dict[str, ColumnSummary] = {}
    for name in dataset.feature_columns:
        spec = dataset.columns[name]
        if not spec.is_numeric:
            columns[name] = CategorySummary()
            continue
        sketch = None if reference is None else reference.columns.get(name)
        grid = None
        if sketch is not None and sketch.values is not None and len(sketch.values):
            grid = np.unique(sketch.values)
        columns[name] = NumericSummary(sample_rows, sentinels=_sentinels(spec), ks_grid=grid)
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
    """Add a typed frame's rows (numeric columns float64, categorical ones str or missing)."""
    from ct_platform.monitoring.frames import require_features

    require_features(frame, dataset, where=where)
    summary.rows += len(frame)
    for name, column in summary.columns.items():
        values = frame[name]
        if isinstance(column, NumericSummary):
            column.add(values.to_numpy(dtype="float64", na_value=np.nan))
        else:
            counts = values.value_counts(dropna=True)
            column.add_counts({_plain(v): int(c) for v, c in counts.items()}, len(values))


def summarise_file(
    path: Path,
    dataset: DatasetSpec,
    sample_rows: int,
    reference: ReferenceProfile | None = None,
) -> DataSummary:
    """Summary of a `.parquet` (streamed), `.csv` or `.csv.gz` file, with every column name.

    Raises `data.reader.BatchReadError` for an unreadable file and `MissingColumnsError` when
    a feature column is absent.
    """
    from ct_platform.data.landing import batch_suffix

    path = Path(path)
    if batch_suffix(path.name) != ".parquet":
        from ct_platform.data.reader import read_batch
        from ct_platform.monitoring.frames import typed_features

        raw = read_batch(path, dataset)
        summary = summarise_frame(
            typed_features(raw, dataset, where=str(path)), dataset, sample_rows, reference
        )
        summary.other_columns = [str(name) for name in raw.columns]
        return summary
    summary = empty_summary(dataset, sample_rows, reference)
    for batch in _parquet_batches(path, dataset, summary):
        add_arrow(summary, batch, dataset)
    return summary


def add_arrow(summary: DataSummary, batch: pa.RecordBatch | pa.Table, dataset: DatasetSpec) -> None:
    """Add an Arrow batch's rows (raw values: typed here like `frames.typed_column`)."""
    summary.rows += batch.num_rows
    for name, column in summary.columns.items():
        values = batch.column(name)
        if isinstance(column, NumericSummary):
            column.add(_numeric_values(values, dataset.columns[name]))
        else:
            column.add_counts(_category_counts(values), len(values))


def parquet_columns(path: Path) -> list[str]:
    """A Parquet file's data columns (a pandas index stored as a column is left out)."""
    import pyarrow.parquet as pq

    schema = _open_parquet(path, pq).schema_arrow
    return _data_columns(schema)


def floor_read(path: Path, dataset: DatasetSpec) -> int:
    """Stream the file's feature columns and do nothing with them: the reading floor the
    benchmark compares with. Returns the row count."""
    rows = 0
    for batch in _parquet_batches(path, dataset, empty_summary(dataset, 1)):
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
    parquet = pq.ParquetFile(path, read_dictionary=text)
    try:
        yield from _batches(parquet, list(dataset.feature_columns))
    except (pa.ArrowException, OSError) as exc:
        raise BatchReadError(path, f"corrupt Parquet file: {exc}") from None


def _batches(parquet: pq.ParquetFile, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Row group by row group: one `iter_batches` over the whole file reads ahead and held
    2.5x the memory (636 MB against 257 MB streaming a 10M-row file)."""
    for index in range(parquet.num_row_groups):
        yield from parquet.iter_batches(BATCH_ROWS, row_groups=[index], columns=columns)


def _open_parquet(path: Path, pq) -> pq.ParquetFile:
    import pyarrow as pa

    from ct_platform.data.reader import BatchReadError

    try:
        return pq.ParquetFile(path)
    except FileNotFoundError as exc:
        raise BatchReadError(path, f"cannot open file: {exc.strerror or exc}") from None
    except (pa.ArrowException, OSError) as exc:
        raise BatchReadError(path, f"not a readable Parquet file: {exc}") from None


def _data_columns(schema: pa.Schema) -> list[str]:
    metadata = schema.pandas_metadata or {}
    index = {name for name in metadata.get("index_columns", []) if isinstance(name, str)}
    return [name for name in schema.names if name not in index]


def _numeric_values(values: pa.Array, column: ColumnSpec) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        numbers = pc.cast(values, pa.float64())
        if numbers.null_count:
            numbers = numbers.fill_null(np.nan)
        return numbers.to_numpy(zero_copy_only=False)
    import pandas as pd  # text or other types: parsed as pandas does for frames

    from ct_platform.monitoring.frames import typed_column

    series = pd.Series(values.to_pylist(), dtype=object)
    return typed_column(series, column).to_numpy(dtype="float64", na_value=np.nan)


def _category_counts(values: pa.Array) -> dict[Value, int]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(values.type):
        codes = values.indices.to_numpy(zero_copy_only=False)
        if values.null_count:
            codes = codes[values.is_valid().to_numpy(zero_copy_only=False)]
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
    return value is None or (isinstance(value, float) and value != value)


def _sentinels(column: ColumnSpec) -> list[float]:
    return [float(s) for s in column.sentinels if not isinstance(s, str)]


def _plain(value: object) -> Value:
    # numpy scalars -> Python numbers, so keys match those read back from JSON.
    return value if isinstance(value, str) else float(value)
