"""One landed content, one batch: the claim every ingest holds on the content it decides on.

Several paths can ingest the same landed file at once: the landing sensor's `batch_job`, a
training run's catch-up, a retry of either. Each asks "is this content landed already?" and,
if not, stores a batch. Unguarded, two of them could both answer "no" and store the one file
twice (`batch.csv` by a catch-up and `batch.csv@<hash12>` by the sensor's run, 11 s apart).

`content_claim` makes the question and the write one step: an exclusive `flock` on
`CT_HOME/state/claims/<sha256>.lock`, held from the look-up until the outcome (validated
sidecar or quarantine record) is on disk. A second ingest of that content waits, then sees the
first one's outcome and ends as its duplicate.

A step killed between claim and write leaves no stale claim: the kernel releases the flock of
a dead process, and the next ingest of that content (the run's retry, the sensor's run, the
next catch-up) finds no outcome and ingests it. The lock files are kept (a few bytes per
content ever landed): deleting one while another process waits on it would let that waiter
and a newcomer hold "the" claim on two different files at once.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ct_platform.settings import Paths


def claims_dir(paths: Paths) -> Path:
    """Where the claim files live: `CT_HOME/state/claims`."""
    folder = paths.state / "claims"
    folder.mkdir(exist_ok=True)
    return folder


@contextmanager
def content_claim(paths: Paths, content_hash: str, key: str) -> Iterator[None]:
    """Hold the claim on `content_hash` (sha256 hex) for the block; blocks while another
    process or thread holds it. `key` is written into the claim file for whoever looks
    at it (which batch took the claim last, and from which process)."""
    path = claims_dir(paths) / f"{content_hash}.lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{key}\npid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)  # closing the last descriptor releases the flock


def outcome_records(paths: Paths) -> list[dict]:
    """Every batch outcome on disk: validated sidecars and quarantine records (JSON dicts
    with at least `content_hash`; `key` for validated batches, `file` for quarantined ones)."""
    records = [*paths.validated.glob("*.json"), *paths.quarantine.glob("*.json")]
    return [json.loads(record.read_text()) for record in records]


def holding_batches(paths: Paths) -> dict[str, str]:
    """Content sha256 -> the batch holding it (its key; a quarantined file's name)."""
    holders: dict[str, str] = {}
    for record in outcome_records(paths):
        holders.setdefault(record["content_hash"], record.get("key") or record["file"])
    return holders


def batch_holding(paths: Paths, content_hash: str) -> str | None:
    """The batch holding `content_hash`, if any (see `holding_batches`)."""
    return holding_batches(paths).get(content_hash)


def judged_names(paths: Paths) -> set[str]:
    """Batch keys with an outcome: each validated batch's key and each quarantined file's
    landed name (a quarantine record keeps the file name, not the key)."""
    return {record.get("key") or record["file"] for record in outcome_records(paths)}
