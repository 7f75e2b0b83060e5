"""Ingest one landed file: read it, apply the contract, keep it as typed Parquet or quarantine it.

This is the one code path for a batch, whether the landing sensor's per-batch run or a
`training_job` catching up on files dropped while no sensor was running calls it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ct_platform.data.contract import ContractResult, check_contract
from ct_platform.data.landing import file_sha256
from ct_platform.data.quarantine import quarantine_batch
from ct_platform.data.reader import BatchReadError, read_batch
from ct_platform.settings import Paths, Spec


@dataclass(frozen=True)
class ValidBatch:
    """A batch that passed the contract, stored as `validated/<key>.parquet` + sidecar JSON."""

    key: str
    content_hash: str
    rows: int
    parquet_path: Path

    def read(self) -> pd.DataFrame:
        return pd.read_parquet(self.parquet_path)


@dataclass(frozen=True)
class IngestOutcome:
    key: str
    source: Path
    content_hash: str
    contract: ContractResult | None
    read_error: str | None
    valid: ValidBatch | None
    quarantined_to: Path | None

    @property
    def passed(self) -> bool:
        return self.valid is not None

    @property
    def failure_summary(self) -> str:
        """One line naming what failed, for logs and the run's error message."""
        if self.read_error is not None:
            return f"{self.key}: unreadable: {self.read_error}"
        if self.contract is None or self.contract.passed:
            return ""
        rules = "; ".join(rule.message for rule in self.contract.failed)
        return f"{self.key}: data contract failed: {rules}"


def ingest_batch(path: Path, spec: Spec, paths: Paths) -> IngestOutcome:
    """Validate `path`; write it as typed Parquet when it passes, quarantine it otherwise.

    Idempotent: a batch already validated with the same content is not read again.
    """
    key = path.name
    content_hash = file_sha256(path)
    existing = find_valid_batch(paths, key)
    if existing is not None and existing.content_hash == content_hash:
        return IngestOutcome(key, path, content_hash, None, None, existing, None)
    try:
        frame = read_batch(path, spec.dataset)
    except BatchReadError as error:
        moved = quarantine_batch(path, error, paths.quarantine)
        return IngestOutcome(key, path, content_hash, None, str(error), None, moved)
    result = check_contract(frame, spec.dataset)
    if not result.passed or result.clean is None:
        moved = quarantine_batch(path, result, paths.quarantine)
        return IngestOutcome(key, path, content_hash, result, None, None, moved)
    valid = _store_valid(result.clean, key, content_hash, paths)
    return IngestOutcome(key, path, content_hash, result, None, valid, None)


def _store_valid(clean: pd.DataFrame, key: str, content_hash: str, paths: Paths) -> ValidBatch:
    parquet_path = paths.validated / f"{key}.parquet"
    temporary = parquet_path.with_name(f".{parquet_path.name}.tmp")
    clean.to_parquet(temporary, index=False)
    temporary.replace(parquet_path)
    sidecar = {"key": key, "content_hash": content_hash, "rows": len(clean), "at": time.time()}
    _sidecar_path(paths, key).write_text(json.dumps(sidecar))
    return ValidBatch(key, content_hash, len(clean), parquet_path)


def _sidecar_path(paths: Paths, key: str) -> Path:
    return paths.validated / f"{key}.json"


def find_valid_batch(paths: Paths, key: str) -> ValidBatch | None:
    sidecar = _sidecar_path(paths, key)
    parquet_path = paths.validated / f"{key}.parquet"
    if not sidecar.exists() or not parquet_path.exists():
        return None
    record = json.loads(sidecar.read_text())
    return ValidBatch(key, record["content_hash"], record["rows"], parquet_path)


def valid_batches(paths: Paths, keys_in_order: list[str]) -> list[ValidBatch]:
    """The valid batches among `keys_in_order` (oldest first), skipping quarantined ones."""
    found = (find_valid_batch(paths, key) for key in keys_in_order)
    return [batch for batch in found if batch is not None]
