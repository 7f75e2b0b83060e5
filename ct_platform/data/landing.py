"""Classify the files of the landing folder, cheaply, and say something about every one.

The landing sensor calls `scan_landing` every tick with thousands of old files in the folder,
so a tick must not read them: one `os.scandir` pass with a stat per file; only a file whose
size or modification time differs from what the cursor recorded gets (once complete) a sha256.

The landing rules (README, "Landing rules"):

* a complete file whose content was never seen is a new batch, keyed by its name;
* the same file seen again (same size and mtime) is not looked at; same content with a new
  mtime is reported as unchanged;
* a file re-landed under a name already seen, with different content, is a new batch keyed
  `<name>@<first 12 hex of its sha256>`: the earlier batch of that name stays as it was;
* content identical to an already-seen file (under any name) is a duplicate: no new batch;
* a file still being written (temporary name, modified in the last seconds, or no end marker
  yet) waits; an empty file waits for content; an unreadable file is retried every tick;
* hidden and temporary names, unsupported extensions, subfolders and other non-files are
  reported once and stay where they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

SUPPORTED_SUFFIXES = (".csv.gz", ".csv", ".parquet")
# Names writers use while a file is still being written (the rename comes later).
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")
# Dagster rejects partition keys containing these; such a file can never be a partition.
INVALID_KEY_SUBSTRINGS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")
PARQUET_MAGIC = b"PAR1"
HASH_CHUNK_BYTES = 1 << 20
CURSOR_VERSION = 2
# `<name>@<12 hex>`: a later content of a landed name. A landed name itself always ends in a
# supported suffix, so it can never look like this.
VERSION_HASH_CHARS = 12
_VERSIONED_KEY = re.compile(rf"^(?P<name>.+)@(?P<hash>[0-9a-f]{{{VERSION_HASH_CHARS}}})$")


def versioned_key(name: str, content_hash: str) -> str:
    """The partition key of content re-landed under an already-used name."""
    return f"{name}@{content_hash[:VERSION_HASH_CHARS]}"


def landed_name(partition_key: str) -> str:
    """The landing-folder file name a batch partition key refers to."""
    match = _VERSIONED_KEY.match(partition_key)
    return match["name"] if match else partition_key


def key_hash_prefix(partition_key: str) -> str | None:
    """The sha256 prefix a versioned key (`<name>@<hash12>`) promises, else None."""
    match = _VERSIONED_KEY.match(partition_key)
    return match["hash"] if match else None


@dataclass(frozen=True)
class LandedFile:
    path: Path
    content_hash: str  # sha256 hex of the file's bytes
    # True when this name was seen before with other content (the file was re-landed).
    relanded: bool = False

    @property
    def partition_key(self) -> str:
        """The file name; `<name>@<hash12>` for re-landed content (see `key_among`)."""
        name = self.path.name
        return versioned_key(name, self.content_hash) if self.relanded else name

    def key_among(self, existing_keys: set[str]) -> str:
        """The partition key, versioned when a batch of this name already exists.

        The cursor may not know every batch (a whole-pipeline run ingested it, or the cursor
        was reset): the partitions that exist are the authority on which names are taken.
        """
        key = self.partition_key
        return versioned_key(self.path.name, self.content_hash) if key in existing_keys else key

    @property
    def run_key(self) -> str:
        # Keyed on content, not name: the same bytes under a new name never start a second run.
        return f"sha256-{self.content_hash}"


class SeenFile(NamedTuple):
    """What a tick recorded of a landed file: enough to notice it changed without reading it.

    (A NamedTuple: ten thousand of them are decoded every tick.)
    """

    size: int
    mtime_ns: int
    content_hash: str | None  # None: recorded by a version-1 cursor, hash not known


@dataclass
class LandingCursor:
    """What earlier ticks handled: batch files by name, reported names, content hashes."""

    files: dict[str, SeenFile] = field(default_factory=dict)
    ignored: set[str] = field(default_factory=set)
    hashes: set[str] = field(default_factory=set)

    def to_json(self) -> str:
        # Files refer to their hash by position in `hashes`: each hash is written once.
        hashes = sorted(self.hashes)
        position = {content_hash: index for index, content_hash in enumerate(hashes)}
        return json.dumps(
            {
                "version": CURSOR_VERSION,
                "files": {
                    name: [seen.size, seen.mtime_ns, position.get(seen.content_hash, -1)]
                    for name, seen in self.files.items()
                },
                "ignored": sorted(self.ignored),
                "hashes": hashes,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> LandingCursor:
        if not text:
            return cls()
        try:
            raw = json.loads(text)
            if raw.get("version") == 1:
                # Version 1 kept names only: the next tick records their stat and hash as
                # the content version 1 handled, without reporting them again.
                unknown = SeenFile(-1, -1, None)
                return cls({name: unknown for name in raw["names"]}, set(), set(raw["hashes"]))
            if raw.get("version") != CURSOR_VERSION:
                raise ValueError(f"unsupported version {raw.get('version')!r}")
            hashes = raw["hashes"]
            files = {
                name: SeenFile(size, mtime_ns, hashes[index] if index >= 0 else None)
                for name, (size, mtime_ns, index) in raw["files"].items()
            }
            return cls(files, set(raw["ignored"]), set(hashes))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"landing cursor is not valid: {exc}") from None

    def copy(self) -> LandingCursor:
        return LandingCursor(dict(self.files), set(self.ignored), set(self.hashes))


@dataclass
class LandingScan:
    new: list[LandedFile]  # complete, content never seen, oldest first: train on these
    duplicates: list[LandedFile]  # content identical to an already-seen file: no retrain
    # Not (yet) a batch, with why: still being written, empty, unreadable. Looked at again
    # next tick, and reported every tick while they stay.
    pending: list[tuple[Path, str]]
    # Never batches (hidden/temporary name, unsupported type, subfolder, unusable name),
    # with why. Reported once; they stay where they are.
    ignored: list[tuple[Path, str]]
    # Seen before, touched since, same content: nothing to do.
    unchanged: list[Path]
    cursor: LandingCursor

    def notices(self) -> list[str]:
        """One line per landed file that did not become a new batch, saying why."""
        lines = [
            f"{f.path.name}: identical to content already landed, not a new batch"
            for f in self.duplicates
        ]
        lines += [f"{path.name}: {why}" for path, why in [*self.pending, *self.ignored]]
        lines += [f"{p.name}: touched, content unchanged, not a new batch" for p in self.unchanged]
        return lines


def scan_landing(
    landing_dir: Path,
    cursor: LandingCursor,
    *,
    settle_seconds: float = 2.0,
    stale_seconds: float = 300.0,
    now: float | None = None,
) -> LandingScan:
    """Classify the files of `landing_dir` against what earlier ticks recorded in `cursor`.

    A file is complete when its name is not a temporary one, it has not been modified for
    `settle_seconds`, and its format's end marker (if cheap to check) is present. A file that
    lacks its end marker yet has not changed for `stale_seconds` is handed over anyway: its
    writer is gone, and reading it is what turns it into a quarantined batch with a reason
    instead of a file that silently sits in the folder forever.
    The input cursor is not modified; the scan carries the updated one.
    """
    now = time.time() if now is None else now
    scan = LandingScan([], [], [], [], [], cursor.copy())
    candidates: list[tuple[int, Path, os.stat_result]] = []
    with os.scandir(landing_dir) as entries:
        for entry in entries:
            if entry.name in cursor.ignored:
                continue
            seen = cursor.files.get(entry.name)
            # A name recorded as a batch file was classified already: only its stat matters.
            problem = _never_a_batch(entry) if seen is None else None
            if problem is not None:
                scan.ignored.append((Path(entry.path), problem))
                scan.cursor.ignored.add(entry.name)
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:  # renamed or moved away since the directory listing
                continue
            if seen is not None and (seen.size, seen.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                continue  # the same file seen again
            waiting = _waiting_reason(Path(entry.path), stat, now, settle_seconds, stale_seconds)
            if waiting is not None:
                scan.pending.append((Path(entry.path), waiting))
            else:
                candidates.append((stat.st_mtime_ns, Path(entry.path), stat))
    # Oldest first, so among identical files landed in one tick the earliest one is "new".
    for _, path, stat in sorted(candidates):
        _classify(path, stat, cursor.files.get(path.name), scan)
    scan.pending.sort()
    scan.ignored.sort()
    return scan


def _classify(path: Path, stat: os.stat_result, seen: SeenFile | None, scan: LandingScan) -> None:
    try:
        content_hash = _hash_if_unchanged(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        scan.pending.append((path, f"unreadable ({exc.strerror or exc}): retried every tick"))
        return
    if content_hash is None:
        scan.pending.append((path, "still being written (changed while being read)"))
        return
    scan.cursor.files[path.name] = SeenFile(stat.st_size, stat.st_mtime_ns, content_hash)
    if seen is not None and seen.content_hash in (None, content_hash):
        if seen.content_hash is not None:
            scan.unchanged.append(path)
        return
    relanded = seen is not None
    landed = LandedFile(path=path, content_hash=content_hash, relanded=relanded)
    (scan.duplicates if content_hash in scan.cursor.hashes else scan.new).append(landed)
    scan.cursor.hashes.add(content_hash)


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


def _never_a_batch(entry: os.DirEntry[str]) -> str | None:
    """Why this entry can never be a batch (reported once), or None."""
    name = entry.name
    if _is_temporary(name):
        return "hidden or temporary name: not a batch (a writer renames it when done)"
    if entry.is_dir():
        return "subfolder: not scanned (batches are files directly in the landing folder)"
    if not entry.is_file():
        return "not a regular file (broken link, pipe or device)"
    if batch_suffix(name) is None:
        return f"unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})"
    if any(bad in name for bad in INVALID_KEY_SUBSTRINGS):
        return "file name contains '...' or a control character, unusable as a partition key"
    return None


def _waiting_reason(
    path: Path, stat: os.stat_result, now: float, settle_seconds: float, stale_seconds: float
) -> str | None:
    """Why a file is not complete yet, or None when it can be read."""
    if stat.st_size == 0:
        return "empty (0 bytes): becomes a batch once it has content"
    age = now - stat.st_mtime
    if age < settle_seconds:
        return f"still being written (modified {age:.1f} s ago)"
    if age >= stale_seconds:
        return None
    try:
        complete = _has_end_marker(path, stat.st_size)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc}): retried every tick"
    return None if complete else "still being written (no end marker yet)"


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
