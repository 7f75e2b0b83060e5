"""Find complete, never-seen batch files in the landing folder, cheaply.

The landing sensor calls `scan_landing` every tick, with thousands of old files in the folder,
so a tick must not read them: one `os.scandir` pass, names already in the cursor are skipped
on the name alone, and only unseen files get a stat and (once complete) a sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

SUPPORTED_SUFFIXES = (".csv.gz", ".csv", ".parquet")
# Names writers use while a file is still being written (the rename comes later).
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")
# Dagster rejects partition keys containing these; such a file can never be a partition.
INVALID_KEY_SUBSTRINGS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")
PARQUET_MAGIC = b"PAR1"
HASH_CHUNK_BYTES = 1 << 20
CURSOR_VERSION = 1


@dataclass(frozen=True)
class LandedFile:
    path: Path
    content_hash: str  # sha256 hex of the file's bytes

    @property
    def partition_key(self) -> str:
        """Landing files are referred to by name everywhere (partitions, quarantine, logs)."""
        return self.path.name

    @property
    def run_key(self) -> str:
        # Keyed on content, not name: the same bytes under a new name never start a second run.
        return f"sha256-{self.content_hash}"


@dataclass
class LandingCursor:
    """What earlier ticks handled: file names (never looked at again) and content hashes."""

    names: set[str] = field(default_factory=set)
    hashes: set[str] = field(default_factory=set)

    def to_json(self) -> str:
        return json.dumps(
            {"version": CURSOR_VERSION, "names": sorted(self.names), "hashes": sorted(self.hashes)},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> LandingCursor:
        if not text:
            return cls()
        try:
            raw = json.loads(text)
            if raw.get("version") != CURSOR_VERSION:
                raise ValueError(f"unsupported version {raw.get('version')!r}")
            return cls(names=set(raw["names"]), hashes=set(raw["hashes"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"landing cursor is not valid: {exc}") from None

    def copy(self) -> LandingCursor:
        return LandingCursor(names=set(self.names), hashes=set(self.hashes))


@dataclass
class LandingScan:
    new: list[LandedFile]  # complete, content never seen, oldest first: train on these
    duplicates: list[LandedFile]  # content identical to an already-seen file: no retrain
    pending: list[Path]  # still being written: looked at again next tick
    # Files that can never be batches (unsupported format, name unusable as a partition key),
    # with the reason. Reported once; they stay where they are.
    unsupported: list[tuple[Path, str]]
    cursor: LandingCursor


def scan_landing(
    landing_dir: Path,
    cursor: LandingCursor,
    *,
    settle_seconds: float = 2.0,
    stale_seconds: float = 300.0,
    now: float | None = None,
) -> LandingScan:
    """Classify the files of `landing_dir` not handled by an earlier tick.

    A file is complete when its name is not a temporary one, it has not been modified for
    `settle_seconds`, and its format's end marker (if cheap to check) is present. A file that
    lacks its end marker yet has not changed for `stale_seconds` is handed over anyway: its
    writer is gone, and reading it is what turns it into a quarantined batch with a reason
    instead of a file that silently sits in the folder forever.
    The input cursor is not modified; the scan carries the updated one.
    """
    now = time.time() if now is None else now
    updated = cursor.copy()
    candidates: list[tuple[int, str, Path]] = []
    pending: list[Path] = []
    unsupported: list[tuple[Path, str]] = []
    with os.scandir(landing_dir) as entries:
        for entry in entries:
            if entry.name in cursor.names or _is_temporary(entry.name):
                continue
            if not entry.is_file():
                continue
            problem = _unsupported_reason(entry.name)
            if problem is not None:
                unsupported.append((Path(entry.path), problem))
                updated.names.add(entry.name)
                continue
            try:
                stat = entry.stat()
                complete = _is_complete(Path(entry.path), stat, now, settle_seconds, stale_seconds)
            except FileNotFoundError:  # renamed or moved away since the directory listing
                continue
            if complete:
                candidates.append((stat.st_mtime_ns, entry.name, Path(entry.path)))
            else:
                pending.append(Path(entry.path))

    new: list[LandedFile] = []
    duplicates: list[LandedFile] = []
    # Oldest first, so among identical files landed in one tick the earliest one is "new".
    for _, name, path in sorted(candidates):
        try:
            content_hash = _hash_if_unchanged(path)
        except FileNotFoundError:
            continue
        if content_hash is None:
            pending.append(path)
            continue
        landed = LandedFile(path=path, content_hash=content_hash)
        (duplicates if content_hash in updated.hashes else new).append(landed)
        updated.names.add(name)
        updated.hashes.add(content_hash)
    return LandingScan(
        new=new,
        duplicates=duplicates,
        pending=sorted(pending),
        unsupported=unsupported,
        cursor=updated,
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def batch_suffix(name: str) -> str | None:
    """The supported format suffix of a file name (`.csv.gz`, `.csv`, `.parquet`), if any."""
    lowered = name.lower()
    return next((s for s in SUPPORTED_SUFFIXES if lowered.endswith(s)), None)


def _is_temporary(name: str) -> bool:
    return name.startswith(".") or name.lower().endswith(TEMPORARY_SUFFIXES)


def _unsupported_reason(name: str) -> str | None:
    if batch_suffix(name) is None:
        return f"unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})"
    if any(bad in name for bad in INVALID_KEY_SUBSTRINGS):
        return "file name contains '...' or a control character, unusable as a partition key"
    return None


def _is_complete(
    path: Path, stat: os.stat_result, now: float, settle_seconds: float, stale_seconds: float
) -> bool:
    age = now - stat.st_mtime
    if age < settle_seconds:
        return False
    return age >= stale_seconds or _has_end_marker(path, stat.st_size)


def _has_end_marker(path: Path, size: int) -> bool:
    """Cheap proof that the writer finished: Parquet's footer magic, a CSV's final newline.

    Gzip has no cheap marker (a valid trailer needs the whole stream decompressed), so a
    `.csv.gz` relies on the settle time alone.
    """
    suffix = batch_suffix(path.name)
    if suffix == ".csv.gz":
        return size > 0
    tail_size = len(PARQUET_MAGIC) if suffix == ".parquet" else 1
    if size < tail_size:
        return False
    with path.open("rb") as handle:
        handle.seek(size - tail_size)
        tail = handle.read(tail_size)
    return tail == PARQUET_MAGIC if suffix == ".parquet" else tail == b"\n"


def _hash_if_unchanged(path: Path) -> str | None:
    """Hash the file; None when it changed while being read (a writer came back)."""
    before = path.stat()
    content_hash = file_sha256(path)
    after = path.stat()
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        return None
    return content_hash
