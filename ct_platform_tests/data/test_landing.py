from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from ct_platform.data.landing import (
    LandingCursor,
    SeenFile,
    file_sha256,
    landed_name,
    scan_landing,
)

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
    assert second.notices() == []  # the same file seen again: nothing to say


def test_same_name_with_changed_content_is_a_new_batch(tmp_path: Path) -> None:
    path = _land(tmp_path, "batch-00001.csv", b"age;y\n-30;0\n", age_seconds=90)
    first = _scan(tmp_path)
    _land(tmp_path, "batch-00001.csv", b"age;y\n30;0\n")  # corrected and re-landed

    second = _scan(tmp_path, first.cursor)

    [landed] = second.new
    assert landed.relanded and landed.content_hash == file_sha256(path)
    assert landed.partition_key == f"batch-00001.csv@{landed.content_hash[:12]}"
    assert landed_name(landed.partition_key) == "batch-00001.csv"
    assert landed.run_key != first.new[0].run_key
    assert _scan(tmp_path, second.cursor).new == []


def test_first_content_keys_on_the_name_unless_a_batch_has_it(tmp_path: Path) -> None:
    _land(tmp_path, "batch-00001.csv", b"age;y\n30;0\n")
    [landed] = _scan(tmp_path).new
    assert landed.key_among({"other.csv"}) == "batch-00001.csv"
    taken = landed.key_among({"batch-00001.csv"})
    assert taken == f"batch-00001.csv@{landed.content_hash[:12]}"


def test_touched_file_with_the_same_content_is_reported_unchanged(tmp_path: Path) -> None:
    path = _land(tmp_path, "batch-00001.csv", b"age;y\n30;0\n", age_seconds=90)
    first = _scan(tmp_path)
    os.utime(path, (NOW - 30, NOW - 30))
    second = _scan(tmp_path, first.cursor)
    assert second.new == [] and second.unchanged == [path]
    assert second.notices() == ["batch-00001.csv: touched, content unchanged, not a new batch"]


def test_content_reverted_to_an_earlier_version_is_a_duplicate(tmp_path: Path) -> None:
    _land(tmp_path, "b.csv", b"age;y\n30;0\n", age_seconds=90)
    first = _scan(tmp_path)
    _land(tmp_path, "b.csv", b"age;y\n31;0\n", age_seconds=60)
    second = _scan(tmp_path, first.cursor)
    _land(tmp_path, "b.csv", b"age;y\n30;0\n", age_seconds=30)
    third = _scan(tmp_path, second.cursor)
    assert third.new == [] and [f.path.name for f in third.duplicates] == ["b.csv"]


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
    assert [path for path, _ in scan.pending] == sorted(
        [fresh, no_newline, tmp_path / "cut.parquet"]
    )
    assert dict(scan.pending)[fresh] == "still being written (modified 0.5 s ago)"
    assert dict(scan.pending)[no_newline] == "still being written (no end marker yet)"
    assert scan.cursor.files == {}  # nothing recorded: all of them are looked at again
    # Temporary names are not batches, but they are named, once.
    assert [(path.name, why.split(":")[0]) for path, why in scan.ignored] == [
        (".batch-00002.csv.tmp", "hidden or temporary name"),
        ("upload.csv.part", "hidden or temporary name"),
    ]


def test_pending_file_is_picked_up_once_complete(tmp_path: Path) -> None:
    path = _land(tmp_path, "batch.csv", b"age;y\n30;", age_seconds=0)
    first = _scan(tmp_path)
    assert [p for p, _ in first.pending] == [path]
    with path.open("ab") as handle:
        handle.write(b"0\n")
    os.utime(path, (NOW - 10, NOW - 10))
    assert [f.path for f in _scan(tmp_path, first.cursor).new] == [path]


def test_gzip_relies_on_settle_time(tmp_path: Path) -> None:
    settled = _land(tmp_path, "old.csv.gz", b"\x1f\x8b...")
    _land(tmp_path, "new.csv.gz", b"\x1f\x8b...", age_seconds=1)
    scan = _scan(tmp_path)
    assert [f.path for f in scan.new] == [settled]
    assert [p for p, _ in scan.pending] == [tmp_path / "new.csv.gz"]


def test_incomplete_but_long_abandoned_file_is_handed_over(tmp_path: Path) -> None:
    # Its writer is gone: reading it will quarantine it with a reason, rather than ignore it.
    path = _land(tmp_path, "abandoned.csv", b"age;y\n30;", age_seconds=3600)
    assert [f.path for f in _scan(tmp_path, stale_seconds=600).new] == [path]


def test_files_that_are_never_batches_are_reported_once(tmp_path: Path) -> None:
    _land(tmp_path, "notes.txt", b"hello\n")
    _land(tmp_path, ".DS_Store", b"\0\0")
    (tmp_path / "subfolder").mkdir()
    (tmp_path / "gone.csv").symlink_to(tmp_path / "nowhere.csv")
    first = _scan(tmp_path)
    assert first.notices() == [
        ".DS_Store: hidden or temporary name: not a batch (a writer renames it when done)",
        "gone.csv: not a regular file (broken link, pipe or device)",
        "notes.txt: unsupported file type (expected one of .csv.gz, .csv, .parquet)",
        "subfolder: subfolder: not scanned (batches are files directly in the landing folder)",
    ]
    assert _scan(tmp_path, first.cursor).notices() == []


def test_empty_file_waits_for_content_and_is_named_every_tick(tmp_path: Path) -> None:
    path = _land(tmp_path, "batch.csv", b"", age_seconds=3600)
    first = _scan(tmp_path)
    assert first.new == []
    assert first.notices() == ["batch.csv: empty (0 bytes): becomes a batch once it has content"]
    assert _scan(tmp_path, first.cursor).notices() == first.notices()
    _land(tmp_path, "batch.csv", b"age;y\n30;0\n")
    assert [f.path for f in _scan(tmp_path, first.cursor).new] == [path]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_named_and_retried(tmp_path: Path) -> None:
    path = _land(tmp_path, "batch.csv", b"age;y\n30;0\n")
    path.chmod(0)
    first = _scan(tmp_path)
    assert first.notices() == ["batch.csv: unreadable (Permission denied): retried every tick"]
    path.chmod(0o644)
    assert [f.path for f in _scan(tmp_path, first.cursor).new] == [path]


def test_version_1_cursor_is_upgraded_without_reporting_handled_files(tmp_path: Path) -> None:
    path = _land(tmp_path, "batch.csv", b"age;y\n30;0\n")
    old = f'{{"version":1,"names":["batch.csv"],"hashes":["{file_sha256(path)}"]}}'
    scan = _scan(tmp_path, LandingCursor.from_json(old))
    assert (scan.new, scan.duplicates, scan.notices()) == ([], [], [])
    assert scan.cursor.files["batch.csv"].content_hash == file_sha256(path)


def test_cursor_rejects_garbage() -> None:
    assert LandingCursor.from_json(None) == LandingCursor()
    with pytest.raises(ValueError, match="landing cursor is not valid"):
        LandingCursor.from_json('{"names": 3}')


def test_ten_thousand_seen_files_are_neither_read_nor_reported(tmp_path: Path) -> None:
    # Timing is the benchmark's business (benchmarks/drift/bench_sensor_tick.py); this
    # checks the behaviour at that size: a cursor round trip, one new file, no notices.
    names = [f"batch-{i:05d}.csv" for i in range(10_000)]
    template = _land(tmp_path, ".template", b"age;y\n30;0\n")
    for name in names:
        os.link(template, tmp_path / name)  # hard links: 10x faster to create than files
    stat = template.stat()
    hashes = [f"{i:064x}" for i in range(10_000)]
    files = {
        name: SeenFile(stat.st_size, stat.st_mtime_ns, h)
        for name, h in zip(names, hashes, strict=True)
    }
    stored = LandingCursor(files=files, ignored={".template"}, hashes=set(hashes)).to_json()
    fresh = _land(tmp_path, "batch-10000.csv", b"age;y\n31;1\n")

    scan = scan_landing(tmp_path, LandingCursor.from_json(stored), now=NOW)

    assert [f.path for f in scan.new] == [fresh]
    assert scan.notices() == []
    assert LandingCursor.from_json(scan.cursor.to_json()) == scan.cursor
    assert scan.cursor.files["batch-00042.csv"].content_hash == hashes[42]
