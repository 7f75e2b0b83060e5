"""Ground-truth labels posted after the fact, appended to `$CT_HOME/feedback/*.jsonl`.

Feedback is rare next to predictions, so it is written before the 200 (in a worker
thread, one daily file): a client that got its 200 knows the label is on disk.

Each label is judged by the rule of the model version that answered the prediction it
labels (`LabelJudge`): during a canary, shadow or A/B rollout two versions answer, and
their label sets can differ (a new class; a regression candidate beside a classifier).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ct_platform.serving.bundle import BundleMeta
from ct_platform.serving.recent import RecentIds
from ct_platform.serving.schema import JSON_NUMBERS, InputError, OverflowedNumber, load_json, show
from ct_platform.serving.transport import is_row_id

MAX_REQUEST_ID_LENGTH = 200
# Requests whose answering version is remembered: the newest, as many as `slot_stats`'.
ANSWERED_LIMIT = 200_000


class LabelError(InputError):
    """Well-formed feedback whose label the served model's target cannot take: a 422."""

    status = 422
    error_code = "INVALID_LABEL"


@dataclass(frozen=True)
class LabelRule:
    """What a label must be, from a bundle: one of `classes` (classification), or a finite
    number within [`low`, `high`] (regression; None: unbounded). `version`: the model
    version whose rule it is (None: not said)."""

    classes: tuple[Any, ...] | None
    low: float | None = None
    high: float | None = None
    version: str | None = None

    @classmethod
    def of(cls, meta: BundleMeta) -> LabelRule:
        if meta.task == "classification":
            return cls(classes=tuple(meta.classes or ()), version=meta.version)
        return cls(classes=None, low=meta.target_min, high=meta.target_max, version=meta.version)

    def checked(self, label: Any) -> Any:
        """The label as recorded (a class as the model names it: "1" or 1.0 for class 1 is
        1); raises `LabelError` naming the value and the rule."""
        if self.classes is not None:
            return self._class_of(label)
        if type(label) not in JSON_NUMBERS or not _finite(label):
            rule = "NaN is not a number" if _is_nan(label) else "the target is a finite number"
            raise LabelError(f"label {show(label)}: {rule}")
        if (self.low is not None and label < self.low) or (
            self.high is not None and label > self.high
        ):
            bounds = f"[{_bound(self.low)}, {_bound(self.high)}]"
            raise LabelError(
                f"label {show(label)} is outside the target's range {bounds} (spec target_rules)"
            )
        return label

    def _class_of(self, label: Any) -> Any:
        for known in self.classes or ():
            if _names_class(label, known):
                return known
        raise LabelError(
            f"label {show(label)} is not one of the model's classes {list(self.classes or ())}"
        )


class LabelJudge:
    """Judges each label by the rule of the model version that answered its request.

    The server tells it which version answered each request (`answered`, for the newest
    `limit` requests, one-row and multi-row alike: a row id `<id>:<i>` is looked up by
    `<id>`). A request not remembered (answered before a restart, too long ago, or never)
    is judged by the versions the server holds now (`serving()`, stable first): the first
    whose rule takes the label records it; none: refused, naming each version's rule.
    """

    def __init__(
        self, serving: Callable[[], Sequence[LabelRule]], limit: int = ANSWERED_LIMIT
    ) -> None:
        self.limit = limit
        self._serving = serving
        self._ring = RecentIds(limit)
        self._rules: list[LabelRule | None] = [None] * limit

    def answered(self, request_id: str, rule: LabelRule) -> None:
        """The model version whose `rule` answered `request_id` (its latest answer wins)."""
        self._rules[self._ring.remember(request_id)] = rule

    def recorded(self, index: int, request_id: str, label: Any) -> Any:
        """Item `index`'s label as recorded, as the answering version names it.

        Raises `LabelError` naming the item, the value, the rule and the version."""
        asked = request_id.rpartition(":")[0] if is_row_id(request_id) else request_id
        position = self._ring.position(asked)
        if position is None:
            return self._by_serving(index, asked, label)
        rule = self._rules[position]
        try:
            return rule.checked(label)
        except LabelError as error:
            raise LabelError(
                f"feedback item {index}: {error} (model version {rule.version} answered "
                f"request {asked!r})"
            ) from None

    def _by_serving(self, index: int, request_id: str, label: Any) -> Any:
        refusals = []
        for rule in self._serving():
            try:
                return rule.checked(label)
            except LabelError as error:
                refusals.append(f"model version {rule.version}: {error}")
        raise LabelError(
            f"feedback item {index}: request {request_id!r} is not among the last "
            f"{self.limit:,} requests this server answered, and no model version it serves "
            f"takes the label: {'; '.join(refusals)}"
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


def parse_feedback(body: bytes, judge: LabelJudge) -> list[dict[str, Any]]:
    """`{"request_id": str, "label": number|str}` or a list of those -> records to append,
    every label judged by `judge` (all or nothing: one bad item refuses the body).

    Raises `InputError` (400) for a body that is not feedback, `LabelError` (422) for a
    label the answering model's target cannot take (`NaN` included: JSON's NaN literal is
    read).
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
    return [_record(index, item, now, judge) for index, item in enumerate(items)]


def _record(index: int, item: Any, now: float, judge: LabelJudge) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InputError(f"feedback item {index} is not a JSON object")
    request_id, label = item.get("request_id"), item.get("label")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID_LENGTH:
        raise InputError(f"feedback item {index}: 'request_id' must be a non-empty string")
    if type(label) is bool or not isinstance(label, int | float | str | OverflowedNumber):
        raise InputError(f"feedback item {index}: 'label' must be a number or a string")
    return {"request_id": request_id, "label": judge.recorded(index, request_id, label), "ts": now}


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
