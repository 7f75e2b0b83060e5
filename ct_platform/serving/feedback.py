"""Ground-truth labels posted after the fact, appended to `$CT_HOME/feedback/*.jsonl`.

Feedback is rare next to predictions, so it is written before the 200 (in a worker
thread, one daily file): a client that got its 200 knows the label is on disk.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ct_platform.serving.bundle import BundleMeta
from ct_platform.serving.schema import JSON_NUMBERS, InputError, OverflowedNumber, load_json, show

MAX_REQUEST_ID_LENGTH = 200


class LabelError(InputError):
    """Well-formed feedback whose label the served model's target cannot take: a 422."""

    status = 422
    error_code = "INVALID_LABEL"


@dataclass(frozen=True)
class LabelRule:
    """What a label must be, from the served bundle: one of `classes` (classification), or
    a finite number within [`low`, `high`] (regression; None: unbounded)."""

    classes: tuple[Any, ...] | None
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, meta: BundleMeta) -> LabelRule:
        if meta.task == "classification":
            return cls(classes=tuple(meta.classes or ()))
        return cls(classes=None, low=meta.target_min, high=meta.target_max)

    def checked(self, index: int, label: Any) -> Any:
        """The label as recorded (a class as the model names it: "1" or 1.0 for class 1 is
        1); raises `LabelError` naming item, value and rule."""
        if self.classes is not None:
            return self._class_of(index, label)
        if type(label) not in JSON_NUMBERS or not _finite(label):
            rule = "NaN is not a number" if _is_nan(label) else "the target is a finite number"
            raise LabelError(f"feedback item {index}: label {show(label)}: {rule}")
        if (self.low is not None and label < self.low) or (
            self.high is not None and label > self.high
        ):
            bounds = f"[{_bound(self.low)}, {_bound(self.high)}]"
            raise LabelError(
                f"feedback item {index}: label {show(label)} is outside the target's range "
                f"{bounds} (spec target_rules)"
            )
        return label

    def _class_of(self, index: int, label: Any) -> Any:
        for known in self.classes or ():
            if _names_class(label, known):
                return known
        raise LabelError(
            f"feedback item {index}: label {show(label)} is not one of the model's classes "
            f"{list(self.classes or ())}"
        )


def _names_class(label: Any, known: Any) -> bool:
    """A label names class `known` when equal to it as sent, or written as its text ("1"
    for 1), or as an integral number (1.0 for 1); true/false never do."""
    if type(label) is bool or isinstance(label, OverflowedNumber):
        return False
    if isinstance(label, str):
        return label == str(known)
    if isinstance(known, str) or type(label) not in JSON_NUMBERS:
        return False
    return label == known  # NaN and infinity equal no class


def _finite(number: float) -> bool:
    """Finite in float64 (an integer beyond it, 10**400, is not)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _bound(value: float | None) -> str:
    return "unbounded" if value is None else f"{value:g}"


def parse_feedback(body: bytes, rule: LabelRule) -> list[dict[str, Any]]:
    """`{"request_id": str, "label": number|str}` or a list of those -> records to append,
    every label checked by `rule` (all or nothing: one bad item refuses the body).

    Raises `InputError` (400) for a body that is not feedback, `LabelError` (422) for a
    label the model's target cannot take (`NaN` included: JSON's NaN literal is read).
    """
    if not body.strip():
        raise InputError("empty request body")
    try:
        payload = load_json(body)
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"request body is not valid JSON: {exc}") from None
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise InputError("no feedback items")
    now = time.time()
    return [_record(index, item, now, rule) for index, item in enumerate(items)]


def _record(index: int, item: Any, now: float, rule: LabelRule) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InputError(f"feedback item {index} is not a JSON object")
    request_id, label = item.get("request_id"), item.get("label")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID_LENGTH:
        raise InputError(f"feedback item {index}: 'request_id' must be a non-empty string")
    if type(label) is bool or not isinstance(label, int | float | str | OverflowedNumber):
        raise InputError(f"feedback item {index}: 'label' must be a number or a string")
    return {"request_id": request_id, "label": rule.checked(index, label), "ts": now}


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
