"""Set a rejected batch aside, untouched, with a record of why it was rejected.

The file is moved, never deleted or rewritten, and never overwrites an earlier quarantined
file of the same name: a re-delivered bad batch gets a numbered name instead.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from ct_platform.atomic import write_atomically
from ct_platform.data.contract import ContractResult
from ct_platform.data.landing import batch_suffix, file_sha256
from ct_platform.data.reader import BatchReadError

RECORD_SUFFIX = ".json"


def quarantine_batch(
    path: Path,
    reason: ContractResult | BatchReadError | str,
    quarantine_dir: Path,
    *,
    content_hash: str | None = None,
) -> Path:
    """Move `path` into `quarantine_dir` and write `<name>.json` beside it; return the new path.

    `content_hash` saves re-reading the file when the caller (the landing scan) knows it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot quarantine {path}: no such file")
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "file": path.name,
        "original_path": str(path),
        "content_hash": content_hash or file_sha256(path),
        "size_bytes": path.stat().st_size,
        "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **_describe_reason(reason),
    }
    target = _free_name(quarantine_dir, path.name)
    record["quarantined_as"] = target.name
    shutil.move(path, target)
    write_atomically(target.with_name(target.name + RECORD_SUFFIX), json.dumps(record, indent=2))
    return target


def _describe_reason(reason: ContractResult | BatchReadError | str) -> dict[str, object]:
    if isinstance(reason, ContractResult):
        return {
            "kind": "contract",
            "reason": "; ".join(rule.describe() for rule in reason.failed),
            "n_rows": reason.n_rows,
            "failed_rules": [
                {"rule": r.rule, "column": r.column, "message": r.message, "figures": r.figures}
                for r in reason.failed
            ],
        }
    if isinstance(reason, BatchReadError):
        return {"kind": "read_error", "reason": str(reason)}
    return {"kind": "other", "reason": reason}


def _free_name(folder: Path, name: str) -> Path:
    """`name`, or `<stem>-<n><suffix>` when that file (or its record) already exists."""
    suffix = batch_suffix(name) or Path(name).suffix
    stem = name[: len(name) - len(suffix)] if suffix else name
    candidate, number = folder / name, 1
    while candidate.exists() or candidate.with_name(candidate.name + RECORD_SUFFIX).exists():
        candidate = folder / f"{stem}-{number}{suffix}"
        number += 1
    return candidate
