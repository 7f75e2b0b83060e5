"""Ingest one landed file: read it, apply the contract, keep it as typed Parquet or quarantine it.

This is the one code path for a batch, whether the landing sensor's per-batch run or a
`training_job` catching up on files dropped while no sensor was running calls it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ct_platform.atomic import write_atomically
from ct_platform.data.claims import batch_holding, content_claim
from ct_platform.data.contract import ContractResult, check_contract
from ct_platform.data.landing import file_sha256, key_hash_prefix, landed_name
from ct_platform.data.quarantine import quarantine_batch
from ct_platform.data.reader import BatchReadError, read_batch
from ct_platform.settings import Paths, Spec


class LandedFileChanged(RuntimeError):
    """The landed file no longer holds the content its batch was keyed on."""


@dataclass(frozen=True)
class Redelivery:
    """Rows of a batch identical (every column) to rows of batches landed before it.

    `rows` counts the batch's rows beyond the copies an earlier batch already held (so
    natural duplicates within the batch are not counted); `earlier` names the earlier
    batches that hold them (each repeated row named once, in the earliest), with counts.
    """

    rows: int
    share: float  # of the batch's rows, 0..1
    earlier: dict[str, int]

    def describe(self, key: str) -> str:
        sources = ", ".join(f"{name} ({count:,} rows)" for name, count in self.earlier.items())
        return (
            f"{key}: {self.rows:,} rows ({self.share:.1%}) were already landed in earlier "
            f"batches: {sources}; training windows count them once"
        )


@dataclass(frozen=True)
class ValidBatch:
    """A batch that passed the contract, stored as `validated/<key>.parquet` + sidecar JSON."""

    key: str
    content_hash: str
    rows: int
    parquet_path: Path
    # The newest value of the spec's time column (seconds since the epoch for dates), if any.
    newest_time: float | None = None
    # Rows already landed in earlier batches (None for batches stored before this was kept).
    redelivered: Redelivery | None = None
    stored_at: float = 0.0  # seconds since the epoch

    def read(self) -> pd.DataFrame:
        return pd.read_parquet(self.parquet_path)

    @property
    def wholly_redelivered(self) -> bool:
        """Every row was landed before: the batch adds nothing to a training window."""
        return self.redelivered is not None and self.redelivered.rows == self.rows


@dataclass(frozen=True)
class IngestOutcome:
    key: str
    source: Path
    content_hash: str
    contract: ContractResult | None
    read_error: str | None
    valid: ValidBatch | None
    quarantined_to: Path | None
    # The batch (validated, or quarantined under this file name) that already holds this
    # content: this ingest stored nothing, and no new batch exists.
    duplicate_of: str | None = None

    @property
    def passed(self) -> bool:
        return self.valid is not None

    @property
    def already_stored(self) -> bool:
        """The batch was validated and stored by an earlier ingest: nothing was read now."""
        return self.valid is not None and self.contract is None

    @property
    def duplicate_note(self) -> str:
        """The run-log line for a duplicate ingest ("" when this ingest was no duplicate)."""
        if self.duplicate_of is None:
            return ""
        return (
            f"{self.key}: duplicate of batch {self.duplicate_of} (identical content, sha256 "
            f"{self.content_hash[:12]}...): no new batch"
        )

    @property
    def failure_summary(self) -> str:
        """One line naming what failed, for logs and the run's error message."""
        if self.read_error is not None:
            return f"{self.key}: unreadable: {self.read_error}"
        if self.contract is None or self.contract.passed:
            return ""
        rules = "; ".join(rule.describe() for rule in self.contract.failed)
        return f"{self.key}: data contract failed: {rules}"


def landed_path(spec: Spec, key: str) -> Path:
    """The landing-folder file of batch `key` (`<name>` or `<name>@<hash12>`)."""
    return spec.landing_dir / landed_name(key)


def ingest_batch(
    key: str, spec: Spec, paths: Paths, *, expected_hash: str | None = None
) -> IngestOutcome:
    """Validate batch `key`; write it as typed Parquet when it passes, quarantine it otherwise.

    Idempotent: a batch already validated with the same content is not read again.
    One content, one batch: content another batch already holds (validated or quarantined,
    under any key) is not stored again; the outcome names that batch in `duplicate_of`. The
    look-up and the write happen under the content's claim (`data.claims`), so two ingests
    of one file racing from separate processes store it once.
    Raises `LandedFileChanged` when the file no longer holds the batch's content (the
    `expected_hash` the sensor saw, what an earlier ingest of `key` stored, or the hash
    prefix of a `<name>@<hash12>` key): that content
    is another batch, which the landing sensor keys on its own.
    """
    path = landed_path(spec, key)
    content_hash = file_sha256(path)
    with content_claim(paths, content_hash, key):
        return _ingest_claimed(key, path, content_hash, spec, paths, expected_hash)


def _ingest_claimed(
    key: str, path: Path, content_hash: str, spec: Spec, paths: Paths, expected_hash: str | None
) -> IngestOutcome:
    existing = find_valid_batch(paths, key)
    recorded = (
        expected_hash
        or (existing.content_hash if existing is not None else None)
        or key_hash_prefix(key)
    )
    if recorded is not None and not content_hash.startswith(recorded):
        raise LandedFileChanged(
            f"batch {key}: {path} changed since it was landed (sha256 {recorded[:12]}..., now "
            f"{content_hash[:12]}...): the new content is ingested as its own batch, this one "
            "is left as it was"
        )
    if existing is not None:
        return IngestOutcome(key, path, content_hash, None, None, existing, None)
    holder = batch_holding(paths, content_hash)
    if holder is not None:
        return IngestOutcome(key, path, content_hash, None, None, None, None, holder)
    try:
        frame = read_batch(path, spec.dataset)
    except BatchReadError as error:
        moved = quarantine_batch(path, error, paths.quarantine, content_hash=content_hash)
        return IngestOutcome(key, path, content_hash, None, str(error), None, moved)
    result = check_contract(frame, spec.dataset)
    if not result.passed or result.clean is None:
        moved = quarantine_batch(path, result, paths.quarantine, content_hash=content_hash)
        return IngestOutcome(key, path, content_hash, result, None, None, moved)
    newest = newest_time(result.clean, spec.dataset.time_column)
    redelivered = redelivered_rows(result.clean, key, paths)
    valid = _store_valid(result.clean, key, content_hash, newest, redelivered, paths)
    return IngestOutcome(key, path, content_hash, result, None, valid, None)


def newest_time(frame: pd.DataFrame, time_column: str | None) -> float | None:
    """The newest time of a cleaned frame as a number that orders batches chronologically."""
    if time_column is None or frame.empty:
        return None
    newest = frame[time_column].max()
    return pd.Timestamp(newest).timestamp() if isinstance(newest, pd.Timestamp) else float(newest)


def redelivered_rows(clean: pd.DataFrame, key: str, paths: Paths) -> Redelivery:
    """The rows of `clean` that validated batches stored before it already hold.

    Earlier content of the same landed name is left out: a corrected re-delivery supersedes
    it in training windows, so repeating its rows is expected.
    """
    from ct_platform.data.training_set import row_hashes

    hashes = row_hashes(clean)
    copy_number = hashes.groupby(hashes, sort=False).cumcount().to_numpy()
    repeated = pd.Series(False, index=hashes.index)
    earlier: dict[str, int] = {}
    for batch in _stored_batches(paths):
        if landed_name(batch.key) == landed_name(key):
            continue
        held = row_hashes(batch.read()).value_counts()
        # A row repeats this batch's copy n of it when the earlier batch holds more than n.
        in_batch = (copy_number < hashes.map(held).fillna(0).to_numpy()) & ~repeated
        if in_batch.any():
            earlier[batch.key] = int(in_batch.sum())
            repeated |= in_batch
    rows = int(repeated.sum())
    return Redelivery(rows, rows / len(clean) if len(clean) else 0.0, earlier)


def _stored_batches(paths: Paths) -> list[ValidBatch]:
    """Every validated batch on disk, in the order they were stored."""
    found = (find_valid_batch(paths, sidecar.stem) for sidecar in paths.validated.glob("*.json"))
    return sorted(filter(None, found), key=lambda batch: batch.stored_at)


def _store_valid(
    clean: pd.DataFrame,
    key: str,
    content_hash: str,
    newest: float | None,
    redelivered: Redelivery,
    paths: Paths,
) -> ValidBatch:
    parquet_path = paths.validated / f"{key}.parquet"
    # Per process: a catch-up run and the landing sensor's run may store the same key at once.
    temporary = parquet_path.with_name(f".{parquet_path.name}.{os.getpid()}.tmp")
    clean.to_parquet(temporary, index=False)
    temporary.replace(parquet_path)
    sidecar = {
        "key": key,
        "content_hash": content_hash,
        "rows": len(clean),
        "newest_time": newest,
        "redelivered": asdict(redelivered),
        "at": time.time(),
    }
    # Whole or absent: a step killed mid-write must not leave a sidecar no reader can parse.
    write_atomically(_sidecar_path(paths, key), json.dumps(sidecar))
    return ValidBatch(
        key, content_hash, len(clean), parquet_path, newest, redelivered, sidecar["at"]
    )


def _sidecar_path(paths: Paths, key: str) -> Path:
    return paths.validated / f"{key}.json"


def find_valid_batch(paths: Paths, key: str) -> ValidBatch | None:
    sidecar = _sidecar_path(paths, key)
    parquet_path = paths.validated / f"{key}.parquet"
    if not sidecar.exists() or not parquet_path.exists():
        return None
    record = json.loads(sidecar.read_text())
    redelivered = record.get("redelivered")
    return ValidBatch(
        key,
        record["content_hash"],
        record["rows"],
        parquet_path,
        record.get("newest_time"),
        Redelivery(**redelivered) if redelivered else None,
        record.get("at", 0.0),
    )


def valid_batches(paths: Paths, keys_in_order: list[str]) -> list[ValidBatch]:
    """The valid batches among `keys_in_order` (oldest first), skipping quarantined ones."""
    found = (find_valid_batch(paths, key) for key in keys_in_order)
    return [batch for batch in found if batch is not None]
