"""Ground-truth labels posted after the fact, appended to `$CT_HOME/feedback/*.jsonl`.

Feedback is rare next to predictions, so it is written before the 200 (in a worker
thread, one daily file): a client that got its 200 knows the label is on disk.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ct_platform.serving.schema import InputError

MAX_REQUEST_ID_LENGTH = 200


def parse_feedback(body: bytes) -> list[dict[str, Any]]:
    """`{"request_id": str, "label": number|str}` or a list of those -> records to append."""
    if not body.strip():
        raise InputError("empty request body")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"request body is not valid JSON: {exc}") from None
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise InputError("no feedback items")
    now = time.time()
    return [_record(index, item, now) for index, item in enumerate(items)]


def _record(index: int, item: Any, now: float) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InputError(f"feedback item {index} is not a JSON object")
    request_id, label = item.get("request_id"), item.get("label")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID_LENGTH:
        raise InputError(f"feedback item {index}: 'request_id' must be a non-empty string")
    if type(label) is bool or not isinstance(label, int | float | str):
        raise InputError(f"feedback item {index}: 'label' must be a number or a string")
    return {"request_id": request_id, "label": label, "ts": now}


class FeedbackLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    def append(self, records: list[dict[str, Any]]) -> None:
        lines = b"".join(orjson.dumps(record) + b"\n" for record in records)
        name = f"feedback-{datetime.now(UTC).strftime('%Y%m%d')}.jsonl"
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.directory / name, "ab") as handle:
                handle.write(lines)
