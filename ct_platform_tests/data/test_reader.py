from __future__ import annotations

import gzip
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ct_platform.data.reader import BatchReadError, read_batch
from ct_platform.settings import Spec

CASES = Path(__file__).resolve().parent / "cases"  # failing inputs found by users, copied in


def test_reads_csv_values_as_strings(spec: Spec, write_batch, bank_batch: pd.DataFrame) -> None:
    path = write_batch(bank_batch, "batch.csv")
    frame = read_batch(path, spec.dataset)
    assert list(frame.columns) == list(bank_batch.columns)
    assert len(frame) == len(bank_batch)
    assert frame["age"].iloc[0] == str(bank_batch["age"].iloc[0])
    assert frame["emp.var.rate"].map(type).eq(str).all()


def test_reads_gzip_and_parquet_like_csv(spec: Spec, bank_batch: pd.DataFrame) -> None:
    gz_path = spec.landing_dir / "batch.csv.gz"
    bank_batch.to_csv(gz_path, sep=";", index=False, compression="gzip")
    parquet_path = spec.landing_dir / "batch.parquet"
    bank_batch.to_parquet(parquet_path, index=False)
    from_gz = read_batch(gz_path, spec.dataset)
    from_parquet = read_batch(parquet_path, spec.dataset)
    assert from_gz.shape == from_parquet.shape == bank_batch.shape
    assert from_gz["job"].tolist() == from_parquet["job"].tolist()


def test_only_empty_fields_are_missing(spec: Spec) -> None:
    path = spec.landing_dir / "b.csv"
    path.write_text("age;job;y\n30;NA;1\n;null;0\n")
    frame = read_batch(path, spec.dataset)
    assert frame["job"].tolist() == ["NA", "null"]
    assert frame["age"].isna().tolist() == [False, True]


UNREADABLE = [
    ("empty.csv", b"", "empty file"),
    ("blank.csv", b"\n\n  \n", "empty file"),
    ("random.csv", os.urandom(4096), "not UTF-8"),
    ("nul.csv", b"age;y\n1\x00;0\n", "NUL bytes"),
    ("notgz.csv.gz", b"age;y\n1;0\n", "not gzip"),
    ("truncated.csv.gz", gzip.compress(b"age;y\n" + b"30;0\n" * 1000)[:-10], "gzip"),
    ("random.parquet", os.urandom(4096), "not a Parquet file"),
    ("noheader.csv", b"56;housemaid;married\n57;services;single\n", "no header"),
    ("wrongsep.csv", b"age,job,y\n30,admin.,0\n", "separator ';'"),
    ("table.xlsx", b"PK\x03\x04", "unsupported file type"),
    (
        "repeated.csv",
        b"age;job;y;age\n30;admin.;0;31\n",
        re.escape("column(s) named more than once: 'age' (positions 0 and 3); name each once"),
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "problem"), UNREADABLE, ids=[case[0] for case in UNREADABLE]
)
def test_unreadable_files_raise_with_file_and_problem(
    spec: Spec, name: str, content: bytes, problem: str
) -> None:
    path = spec.landing_dir / name
    path.write_bytes(content)
    with pytest.raises(BatchReadError, match=problem) as caught:
        read_batch(path, spec.dataset)
    assert str(caught.value).startswith(f"{name}: ")


def test_corrupt_parquet_body_is_reported(spec: Spec, bank_batch: pd.DataFrame) -> None:
    path = spec.landing_dir / "corrupt.parquet"
    bank_batch.to_parquet(path, index=False)
    raw = bytearray(path.read_bytes())
    raw[8 : len(raw) - 8] = os.urandom(len(raw) - 16)  # keep both PAR1 markers, ruin the rest
    path.write_bytes(bytes(raw))
    with pytest.raises(BatchReadError, match="corrupt Parquet"):
        read_batch(path, spec.dataset)


def test_missing_file_is_a_read_error(spec: Spec, tmp_path: Path) -> None:
    with pytest.raises(BatchReadError, match="cannot open"):
        read_batch(tmp_path / "gone.csv", spec.dataset)


def test_trailing_separator_is_reported_as_a_field_count_mismatch(spec) -> None:
    # Rows end with ';', the header does not: pandas would shift the table by one column.
    path = shutil.copy(CASES / "trailing-separator.csv", spec.landing_dir)
    with pytest.raises(BatchReadError) as raised:
        read_batch(Path(path), spec.dataset)
    assert raised.value.problem == (
        "field count mismatch: the header has 17 fields, 200 of 200 data rows do not: 200 with "
        "18 (lines 2, 3, 4, 5, 6 and 195 more); every data row ends with the separator ';' and "
        "the header does not"
    )


def test_rows_with_too_few_and_too_many_fields_are_counted_by_kind(spec) -> None:
    path = spec.landing_dir / "ragged.csv"
    path.write_text("age;job;y\n30;admin.;0\n31;admin.\n\n32;admin.;0;x\n33;admin.;1\n")
    with pytest.raises(BatchReadError) as raised:
        read_batch(path, spec.dataset)
    assert raised.value.problem == (
        "field count mismatch: the header has 3 fields, 2 of 4 data rows do not: "
        "1 with 2 (line 3); 1 with 4 (line 5)"
    )
