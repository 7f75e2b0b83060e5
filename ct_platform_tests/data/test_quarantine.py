from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from ct_platform.data.contract import check_contract
from ct_platform.data.landing import file_sha256
from ct_platform.data.quarantine import quarantine_batch
from ct_platform.data.reader import BatchReadError, read_batch
from ct_platform.settings import Spec


def _validate_or_quarantine(path: Path, spec: Spec, quarantine_dir: Path) -> Path | None:
    """What the platform does with a landed file: read, check, quarantine on failure."""
    try:
        result = check_contract(read_batch(path, spec.dataset), spec.dataset)
    except BatchReadError as error:
        return quarantine_batch(path, error, quarantine_dir)
    return None if result.passed else quarantine_batch(path, result, quarantine_dir)


def _write(spec: Spec, frame: pd.DataFrame, name: str) -> Path:
    path = spec.landing_dir / name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, sep=";", index=False, compression="infer")
    return path


def _bad_frames(batch: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, str]]:
    wrong_types = batch.astype({"age": str})
    wrong_types.loc[:20, "age"] = "unknown"
    huge = batch.astype({"nr.employed": float})
    huge.loc[7, "nr.employed"] = 9.9e307
    return {
        "wrong_columns": (batch.rename(columns={"job": "occupation"}), "columns"),
        "wrong_types": (wrong_types, "column 'age', rule type"),
        "target_missing": (batch.assign(y=None), "column 'y', rule target"),
        "huge_value": (huge, "column 'nr.employed', rule finite"),
    }


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
@pytest.mark.parametrize("case", ["wrong_columns", "wrong_types", "target_missing", "huge_value"])
def test_contract_failures_are_quarantined_with_their_rules(
    spec: Spec, quarantine_dir: Path, bank_batch: pd.DataFrame, case: str, suffix: str
) -> None:
    frame, expected_rule = _bad_frames(bank_batch)[case]
    path = _write(spec, frame, f"{case}{suffix}")
    original = path.read_bytes()
    moved = _validate_or_quarantine(path, spec, quarantine_dir)
    assert moved == quarantine_dir / path.name
    assert not path.exists()
    assert moved.read_bytes() == original  # the raw file is kept byte for byte
    record = json.loads((quarantine_dir / f"{path.name}.json").read_text())
    assert record["kind"] == "contract"
    assert record["file"] == path.name
    assert record["content_hash"] == file_sha256(moved)
    assert expected_rule in record["reason"]
    assert all(rule["figures"] for rule in record["failed_rules"])


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.csv", b"", "empty file"),
        ("random.csv", os.urandom(2048), "not UTF-8"),
        ("random.csv.gz", os.urandom(2048), "not gzip"),
        ("truncated.csv.gz", gzip.compress(b"age;y\n30;0\n" * 500)[:-12], "gzip"),
        ("random.parquet", os.urandom(2048), "Parquet"),
    ],
)
def test_unreadable_files_are_quarantined_with_the_read_error(
    spec: Spec, quarantine_dir: Path, name: str, content: bytes, problem: str
) -> None:
    path = spec.landing_dir / name
    path.write_bytes(content)
    moved = _validate_or_quarantine(path, spec, quarantine_dir)
    assert moved.read_bytes() == content
    record = json.loads(moved.with_name(f"{name}.json").read_text())
    assert record["kind"] == "read_error"
    assert problem in record["reason"]
    assert record["size_bytes"] == len(content)


def test_never_overwrites_an_earlier_quarantined_file(spec: Spec, quarantine_dir: Path) -> None:
    first = spec.landing_dir / "batch-1.csv.gz"
    first.write_bytes(b"first")
    quarantine_batch(first, "operator rejected it", quarantine_dir)
    first.write_bytes(b"second")
    second = quarantine_batch(first, "rejected again", quarantine_dir)
    assert second.name == "batch-1-1.csv.gz"
    assert (quarantine_dir / "batch-1.csv.gz").read_bytes() == b"first"
    assert second.read_bytes() == b"second"
    record = json.loads((quarantine_dir / "batch-1-1.csv.gz.json").read_text())
    assert record == record | {"kind": "other", "reason": "rejected again"}
    assert record["quarantined_as"] == "batch-1-1.csv.gz"


def test_missing_file_is_an_error(spec: Spec, quarantine_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"gone\.csv"):
        quarantine_batch(spec.landing_dir / "gone.csv", "whatever", quarantine_dir)
