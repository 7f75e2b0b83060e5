"""Benchmark: one landing-sensor tick (`ct_platform.data.landing.scan_landing`) with 10,000
files in the landing folder. Target: <= 1 s per tick.

    .venv/bin/python benchmarks/drift/bench_sensor_tick.py [--files 10000] [--repeats 7]

A tick as the sensor runs it: the cursor is restored from its JSON, the folder scanned, the
updated cursor serialised again. Scenarios, each timed `--repeats` times (median, max):
- steady:    every file already handled, one new batch arrives (the usual tick);
- burst:     100 new batches arrive at once among the 10,000;
- cold:      empty cursor (first tick ever / cursor reset): all files are new and hashed.
Files are small CSV batches (60 bank rows, ~6 KB each), written long enough ago to be settled.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ct_platform.data.landing import LandingCursor, SeenFile, file_sha256, scan_landing

REPO = Path(__file__).resolve().parents[2]
BANK_CSV = REPO / "data" / "bank_marketing.csv.gz"
ROWS_PER_FILE = 60


def write_files(folder: Path, lines: list[str], start: int, count: int, mtime: float) -> list[str]:
    """Files `start`..`start+count`: the header plus a distinct slice of bank rows each."""
    header, rows = lines[0], lines[1:]
    names = []
    for index in range(start, start + count):
        name = f"batch-{index:06d}.csv"
        offset = index % (len(rows) - ROWS_PER_FILE)
        (folder / name).write_text("\n".join([header, *rows[offset : offset + ROWS_PER_FILE], ""]))
        os.utime(folder / name, (mtime, mtime))
        names.append(name)
    return names


def handled(folder: Path, names: list[str]) -> str:
    """The cursor of a sensor that has handled `names` (their stat and hash recorded)."""
    files = {}
    for name in names:
        path = folder / name
        stat = path.stat()
        files[name] = SeenFile(stat.st_size, stat.st_mtime_ns, file_sha256(path))
    hashes = {seen.content_hash for seen in files.values()}
    return LandingCursor(files=files, hashes=hashes).to_json()


def tick(folder: Path, cursor_json: str, now: float) -> tuple[int, str]:
    cursor = LandingCursor.from_json(cursor_json)
    scan = scan_landing(folder, cursor, settle_seconds=2.0, now=now)
    return len(scan.new), scan.cursor.to_json()


def timed(repeats: int, run: Callable[[], int]) -> tuple[float, float, int]:
    times, found = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        found = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    lines = gzip.decompress(BANK_CSV.read_bytes()).decode().splitlines()
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_tick_") as tmp:
        folder = Path(tmp)
        old = write_files(folder, lines, 0, args.files - 100, now - 3600)
        burst = write_files(folder, lines, args.files - 100, 99, now - 60)
        write_files(folder, lines, args.files - 1, 1, now - 60)
        size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        handled_all_but_one = handled(folder, [*old, *burst])
        handled_old = handled(folder, old)
        empty = LandingCursor().to_json()
        scenarios = {
            "steady (1 new)": handled_all_but_one,
            "burst (100 new)": handled_old,
            f"cold ({args.files} new)": empty,
        }
        print(f"{args.files:,} files in the landing folder ({size_mb:.0f} MB)")
        print(f"{'scenario':<20} {'median s':>9} {'max s':>7} {'new':>6}")
        for label, cursor_json in scenarios.items():
            median, worst, found = timed(
                args.repeats, lambda c=cursor_json: tick(folder, c, now)[0]
            )
            print(f"{label:<20} {median:>9.3f} {worst:>7.3f} {found:>6}")


if __name__ == "__main__":
    main()
