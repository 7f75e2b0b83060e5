from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from ct_platform.data.landing import LandingCursor, file_sha256, scan_landing

NOW = 1_800_000_000.0  # a fixed clock: file ages are set explicitly with os.utime


def _land(folder: Path, name: str, content: bytes, age_seconds: float = 60.0) -> Path:
    path = folder / name
    path.write_bytes(content)
    os.utime(path, (NOW - age_seconds, NOW - age_seconds))
    return path


def _scan(folder: Path, cursor: LandingCursor | None = None, **options):
    return scan_landing(folder, cursor or LandingCursor(), now=NOW, **options)


def test_new_then_nothing_on_the_next_tick(tmp_path: Path) -> None:
    path = _land(tmp_path, "batch-00001.csv", b"age;y\n30;0\n")
    first = _scan(tmp_path)
    assert [f.path for f in first.new] == [path]
    landed = first.new[0]
    assert landed.content_hash == file_sha256(path)
    assert landed.partition_key == "batch-00001.csv"
    assert landed.run_key == f"sha256-{landed.content_hash}"
    second = _scan(tmp_path, LandingCursor.from_json(first.cursor.to_json()))
    assert (second.new, second.duplicates, second.pending) == ([], [], [])


def test_same_content_under_another_name_is_a_duplicate(tmp_path: Path) -> None:
    _land(tmp_path, "a.csv", b"age;y\n30;0\n", age_seconds=90)
    first = _scan(tmp_path)
    copy = _land(tmp_path, "a-again.csv", b"age;y\n30;0\n")
    second = _scan(tmp_path, first.cursor)
    assert second.new == []
    assert [f.path for f in second.duplicates] == [copy]
    assert second.duplicates[0].run_key == first.new[0].run_key


def test_identical_files_in_one_tick_oldest_is_new(tmp_path: Path) -> None:
    older = _land(tmp_path, "z-older.csv", b"x;y\n1;0\n", age_seconds=100)
    newer = _land(tmp_path, "a-newer.csv", b"x;y\n1;0\n", age_seconds=50)
    scan = _scan(tmp_path)
    assert [f.path for f in scan.new] == [older]
    assert [f.path for f in scan.duplicates] == [newer]


def test_half_written_files_wait(tmp_path: Path, bank_frame: pd.DataFrame) -> None:
    fresh = _land(tmp_path, "fresh.csv", b"age;y\n30;0\n", age_seconds=0.5)
    no_newline = _land(tmp_path, "cut.csv", b"age;y\n30;0\n31;")
    parquet = tmp_path / "whole.parquet"
    bank_frame.iloc[:50].to_parquet(parquet)
    _land(tmp_path, "cut.parquet", parquet.read_bytes()[:-100])
    parquet.unlink()
    _land(tmp_path, ".batch-00002.csv.tmp", b"age;y\n30;0\n")
    _land(tmp_path, "upload.csv.part", b"age;y\n30;0\n")
    scan = _scan(tmp_path)
    assert scan.new == [] and scan.duplicates == []
    assert scan.pending == sorted([fresh, no_newline, tmp_path / "cut.parquet"])
    assert scan.cursor.names == set()  # nothing recorded: all of them are looked at again


def test_pending_file_is_picked_up_once_complete(tmp_path: Path) -> None:
    path = _land(tmp_path, "batch.csv", b"age;y\n30;", age_seconds=0)
    first = _scan(tmp_path)
    assert first.pending == [path]
    with path.open("ab") as handle:
        handle.write(b"0\n")
    os.utime(path, (NOW - 10, NOW - 10))
    assert [f.path for f in _scan(tmp_path, first.cursor).new] == [path]


def test_gzip_relies_on_settle_time(tmp_path: Path) -> None:
    settled = _land(tmp_path, "old.csv.gz", b"\x1f\x8b...")
    _land(tmp_path, "new.csv.gz", b"\x1f\x8b...", age_seconds=1)
    scan = _scan(tmp_path)
    assert [f.path for f in scan.new] == [settled]
    assert scan.pending == [tmp_path / "new.csv.gz"]


def test_incomplete_but_long_abandoned_file_is_handed_over(tmp_path: Path) -> None:
    # Its writer is gone: reading it will quarantine it with a reason, rather than ignore it.
    path = _land(tmp_path, "abandoned.csv", b"age;y\n30;", age_seconds=3600)
    assert [f.path for f in _scan(tmp_path, stale_seconds=600).new] == [path]


def test_unsupported_files_are_reported_once(tmp_path: Path) -> None:
    _land(tmp_path, "notes.txt", b"hello\n")
    (tmp_path / "subfolder").mkdir()
    first = _scan(tmp_path)
    assert [(p.name, "unsupported file type" in why) for p, why in first.unsupported] == [
        ("notes.txt", True)
    ]
    assert _scan(tmp_path, first.cursor).unsupported == []


def test_cursor_rejects_garbage() -> None:
    assert LandingCursor.from_json(None) == LandingCursor()
    with pytest.raises(ValueError, match="landing cursor is not valid"):
        LandingCursor.from_json('{"names": 3}')


def test_ten_thousand_seen_files_scan_fast(tmp_path: Path) -> None:
    """Only the new file among 10,000 seen ones is handed over. How fast that tick is, is
    measured by benchmarks/drift/bench_sensor_tick.py: a busy box cannot promise a time."""
    names = [f"batch-{i:05d}.csv" for i in range(10_000)]
    template = _land(tmp_path, ".template", b"age;y\n30;0\n")
    for name in names:
        os.link(template, tmp_path / name)  # hard links: 10x faster to create than files
    seen = LandingCursor(names=set(names), hashes={f"{i:064x}" for i in range(10_000)})
    stored = seen.to_json()
    fresh = _land(tmp_path, "batch-10000.csv", b"age;y\n31;1\n")

    scan = scan_landing(tmp_path, LandingCursor.from_json(stored), now=NOW)

    assert [f.path for f in scan.new] == [fresh]
    assert LandingCursor.from_json(scan.cursor.to_json()).names == {*names, fresh.name}
