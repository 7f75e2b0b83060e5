"""Bank-schema Parquet files of any size for the drift benchmarks, cached outside the repo.

    .venv/bin/python benchmarks/drift/bank_files.py --rows 10000000   # prints the folder

Writes `reference.parquet` and `current.parquet` (`--rows` rows each, every column of
data/bank_marketing.csv.gz, 1,000,000-row row groups), and with `--csv` the same rows as
`reference.csv` and `current.csv` (the spec's `;` separator), into
`$CT_BENCH_CACHE/drift-bank-<rows>` (default `~/.cache/ct-platform-bench`), once: a folder
that already holds both files is reused. Rows are drawn at random from the bank data, with a
little jitter on the continuous columns (so they are not 41,188 atoms); the current file has
drift planted in 4 of the 20 feature columns (`PLANTED`), the others are fresh draws of the
same distribution. Written in 1,000,000-row chunks, so generating 10M rows needs ~300 MB.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
BANK_CSV = REPO / "data" / "bank_marketing.csv.gz"
CONTINUOUS = ["emp.var.rate", "cons.price.idx", "cons.conf.idx", "euribor3m", "nr.employed"]
PLANTED = {
    "age": "+5 years",
    "euribor3m": "-1.0 (rates fall)",
    "job": "new category 'crypto-trader' on 10 % of rows",
    "marital": "40 % of rows set to 'single'",
}
CHUNK_ROWS = 1_000_000


def cache_folder(rows: int) -> Path:
    root = Path(os.environ.get("CT_BENCH_CACHE", Path.home() / ".cache" / "ct-platform-bench"))
    return root / f"drift-bank-{rows}"


def bank_table() -> pa.Table:
    options = pv.ParseOptions(delimiter=";")
    return pv.read_csv(BANK_CSV, parse_options=options)


def chunk(bank: pa.Table, rows: int, rng: np.random.Generator, drifted: bool) -> pa.Table:
    picked = bank.take(rng.integers(0, bank.num_rows, rows))
    columns = {name: picked[name] for name in picked.column_names}
    for name in CONTINUOUS:
        values = picked[name].to_numpy().astype("float64")
        spread = 0.01 * float(np.std(bank[name].to_numpy()))
        columns[name] = pa.array(values + rng.normal(0, spread, rows))
    if drifted:
        columns["age"] = pc.add(picked["age"], 5)
        columns["euribor3m"] = pc.subtract(columns["euribor3m"], 1.0)
        job = picked["job"].to_numpy(zero_copy_only=False).astype(object)
        job[rng.random(rows) < 0.1] = "crypto-trader"
        columns["job"] = pa.array(job, pa.string())
        marital = picked["marital"].to_numpy(zero_copy_only=False).astype(object)
        marital[rng.random(rows) < 0.4] = "single"
        columns["marital"] = pa.array(marital, pa.string())
    return pa.table(columns)


def write(path: Path, bank: pa.Table, rows: int, seed: int, drifted: bool) -> None:
    rng = np.random.default_rng(seed)
    partial = path.with_suffix(".partial")
    writer = None
    for start in range(0, rows, CHUNK_ROWS):
        table = chunk(bank, min(CHUNK_ROWS, rows - start), rng, drifted)
        writer = writer or pq.ParquetWriter(partial, table.schema)
        writer.write_table(table, row_group_size=CHUNK_ROWS)
    writer.close()
    partial.replace(path)  # a killed run never leaves a half-written file behind


def ensure_files(rows: int) -> Path:
    """The cache folder holding `reference.parquet` and `current.parquet` of `rows` rows."""
    folder = cache_folder(rows)
    folder.mkdir(parents=True, exist_ok=True)
    bank = None
    for name, seed, drifted in (("reference", 1, False), ("current", 2, True)):
        path = folder / f"{name}.parquet"
        if not path.exists():
            bank = bank or bank_table()
            write(path, bank, rows, seed, drifted)
    return folder


def ensure_csv_files(rows: int) -> Path:
    """`ensure_files`' folder, also holding the same rows as `reference.csv` and
    `current.csv` (`;`-separated, as the bank spec reads them), streamed batch by batch."""
    folder = ensure_files(rows)
    for name in ("reference", "current"):
        path = folder / f"{name}.csv"
        if path.exists():
            continue
        partial = path.with_suffix(".partial")
        parquet = pq.ParquetFile(folder / f"{name}.parquet")
        options = pv.WriteOptions(delimiter=";", quoting_style="none")
        with pv.CSVWriter(partial, parquet.schema_arrow, write_options=options) as writer:
            for batch in parquet.iter_batches(100_000):
                writer.write_batch(batch)
        partial.replace(path)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--csv", action="store_true", help="also write the CSV files")
    args = parser.parse_args()
    print((ensure_csv_files if args.csv else ensure_files)(args.rows))


if __name__ == "__main__":
    main()
