"""Append every scored row to rotating JSONL segments; disk writes off the request path.

`submit` turns a scored batch into one JSON line (a row record for a one-row request, a
columnar batch record for a multi-row one: see `jsonl` and docs/architecture.md) and
appends it to an in-memory deque; the app calls it on the event loop *after* the
response has been written. A background thread wakes every `flush_seconds` (sooner once
`wake_lines` lines are pending), appends what is pending to the current segment and
flushes: no system call per line and no wake-up per request, so the event loop hands the
GIL to the writer at most once per `wake_lines` requests. Segments rotate by size and by
age.

Why format on the loop and not in the thread: formatting costs ~20 µs for one row and
~0.2 ms for 1,000 (one orjson call over the batch's arrays), while every hand-over of the
GIL between a busy event loop and a worker thread can cost milliseconds of scheduling
delay on a loaded machine (measured: p99 6-8 ms without the thread's Python work,
11-23 ms with it). The thread takes the GIL a few times a second, for a write.

A slow disk never slows a prediction: when `max_pending` batches are waiting, new ones are
dropped and counted (`dropped`) instead. A crash loses at most the last `flush_seconds` of
records; a reader should skip a torn last line in the newest segment.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import orjson

from ct_platform.serving.bundle import Prediction
from ct_platform.serving.schema import MISSING_CATEGORY

_BUFFER_BYTES = 4 * 1024 * 1024
_BATCH_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
_BATCH_HEAD = b'{"rows":'
# Lines pending that wake the writer before `flush_seconds` are up. Thousands of lines
# held for 0.25 s (a busy server's) filled fresh allocator arenas that were handed back to
# the kernel once written, and faulted in again: 0.3 page faults a request, ~5 µs of
# kernel CPU (benchmarks/serving/README.md). A wake costs the loop one `Event.set`.
WAKE_LINES = 128


class ScoredBatch(NamedTuple):
    # A named tuple, not a frozen dataclass: as immutable, built in a tenth of the
    # instructions (a frozen dataclass sets each field through object.__setattr__).
    request_id: str
    ts: float
    slot: str
    model_version: str
    column_names: list[str]
    columns: list[np.ndarray]
    prediction: Prediction
    latency_ms: float
    # One row parsed by the one-row path: its values as logged, plain Python objects in
    # schema order, a missing category as None (`ParsedRows.logged_values`); the record
    # is written from them, and `columns` may be empty.
    row: list[Any] | None = None
    # A multi-row batch's "features", formatted beforehand by `features_json` from the
    # same columns (while the model scored them); None: formatted by `jsonl`.
    features: orjson.Fragment | None = None


class PredictionLog:
    def __init__(
        self,
        directory: Path,
        *,
        max_segment_bytes: int = 64 * 1024 * 1024,
        max_segment_seconds: float = 3600.0,
        flush_seconds: float = 0.25,
        max_pending: int = 100_000,
        wake_lines: int = WAKE_LINES,
    ) -> None:
        self.directory = directory
        self.max_segment_bytes = max_segment_bytes
        self.max_segment_seconds = max_segment_seconds
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.wake_lines = wake_lines
        self.dropped = 0
        self.written = 0
        # One JSON line per submitted batch (`jsonl`); the writer reads its row count from
        # the line (`rows_in`): no (bytes, rows) tuple made per request on the loop.
        self._pending: deque[bytes] = deque()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by `submit` once `wake_lines` are pending
        self._segment: IO[bytes] | None = None
        self._segment_opened = 0.0
        self._segment_bytes = 0
        self._segment_seq = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def submit(self, batch: ScoredBatch) -> None:
        """Never blocks: a full backlog means the disk cannot keep up, so the batch is dropped."""
        pending = len(self._pending)
        if pending >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append(jsonl(batch))
        if pending >= self.wake_lines and not self._wake.is_set():
            self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Write everything already submitted, then stop the thread and close the segment."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self._drain()
        self._drain()
        self._close_segment()

    def _drain(self) -> None:
        while self._pending:  # popleft is atomic: no lock shared with the event loop
            line = self._pending.popleft()
            # Buffered: rotation can happen between batches, syscalls happen per buffer.
            # No system call per line (the segment's size is counted here, not asked
            # with `tell()`, an lseek): each one let go of the GIL, and taking it back
            # from the busy event loop cost both threads a futex hand-over per request.
            self._current_segment().write(line)
            self._segment_bytes += len(line)
            self.written += rows_in(line)
        if self._segment is not None:
            self._segment.flush()
            if time.time() - self._segment_opened >= self.max_segment_seconds:
                self._close_segment()

    def _current_segment(self) -> IO[bytes]:
        if self._segment is not None and self._segment_bytes >= self.max_segment_bytes:
            self._close_segment()
        if self._segment is None:
            self._segment_seq += 1
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            name = f"predictions-{stamp}-{os.getpid()}-{self._segment_seq:04d}.jsonl"
            # A large buffer: one write syscall (one GIL hand-over) per drain, not per 8 KiB.
            self._segment = open(self.directory / name, "ab", buffering=_BUFFER_BYTES)  # noqa: SIM115
            self._segment_bytes = self._segment.tell()
            self._segment_opened = time.time()
        return self._segment

    def _close_segment(self) -> None:
        if self._segment is not None:
            self._segment.close()
            self._segment = None


def jsonl(batch: ScoredBatch) -> bytes:
    """The batch's prediction-log record as one JSON line (docs/architecture.md).

    A one-row request: the row's record (`request_id` as sent). A multi-row request: one
    batch record, `{"rows": n, "request_id", "ts", "slot", "model_version", "features":
    {column: [n values]}, "output": {"label": [n], "proba": [n]} | {"value": [n]},
    "latency_ms"}`, which readers expand into n row records with ids `<request_id>:<i>`
    (`monitoring.prediction_log.prediction_records`). One orjson call that writes each
    numeric column straight from its array: 1,000 bank rows in 0.78 M instructions, where
    a line per row assembled from JSON text took 21 M (3.4-4 ms, holding the GIL).
    `"rows"` comes first: the writer thread reads the row count from the line's head.
    """
    if batch.row is not None:
        return _one_row_jsonl(batch, batch.row)
    n_rows = batch.columns[0].shape[0]
    if n_rows == 1:
        values = [column.item() for column in batch.columns]
        return _one_row_jsonl(
            batch, [None if value == MISSING_CATEGORY else value for value in values]
        )
    record = {
        "rows": n_rows,
        "request_id": batch.request_id,
        "ts": batch.ts,
        "slot": batch.slot,
        "model_version": batch.model_version,
        "features": (
            _features(batch.column_names, batch.columns)
            if batch.features is None
            else batch.features
        ),
        "output": _batch_output(batch.prediction),
        "latency_ms": batch.latency_ms,
    }
    return orjson.dumps(record, option=_BATCH_OPTIONS)


def features_json(column_names: list[str], columns: list[np.ndarray]) -> orjson.Fragment:
    """The "features" of a multi-row batch's record (`jsonl`) as JSON: `columns` (one per
    name, n values each, as `ParsedRows.columns`) formatted the way `jsonl` formats them,
    so that they can be formatted beforehand, e.g. in another thread while the model
    scores them (ONNX Runtime lets go of the GIL): ~0.25 ms for 1,000 bank rows, most of
    a record's."""
    return orjson.Fragment(
        orjson.dumps(_features(column_names, columns), option=orjson.OPT_SERIALIZE_NUMPY)
    )


def _features(column_names: list[str], columns: list[np.ndarray]) -> dict[str, Any]:
    return dict(zip(column_names, map(_logged_column, columns), strict=True))


def rows_in(line: bytes) -> int:
    """How many scored rows one line of `jsonl` holds: a batch record's `"rows"`, else 1."""
    if line.startswith(_BATCH_HEAD):
        return int(line[len(_BATCH_HEAD) : line.index(b",", len(_BATCH_HEAD))])
    return 1


def _one_row_jsonl(batch: ScoredBatch, values: list[Any]) -> bytes:
    """The record of a one-row batch whose values as logged (schema order, a missing
    category as None) are `values`: one dict, one orjson call (a row record as it is, no
    batch record for a reader to expand)."""
    features = dict(zip(batch.column_names, values, strict=True))
    record = {
        "request_id": batch.request_id,
        "ts": batch.ts,
        "slot": batch.slot,
        "model_version": batch.model_version,
        "features": features,
        "output": _one_row_output(batch.prediction),
        "latency_ms": batch.latency_ms,
    }
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def _one_row_output(prediction: Prediction) -> dict[str, Any]:
    if prediction.values is not None:
        return {"value": float(prediction.values[0])}
    label = prediction.labels.item(0)  # as `tolist()[0]`, without the list
    proba = prediction.proba
    if proba is None:
        return {"label": label, "proba": None}
    # Binary: probability of the positive (second) class; multiclass: of the predicted label.
    # `item` gives the element as a Python float, as `float()` of it does.
    return {"label": label, "proba": proba.item(1) if proba.shape[1] == 2 else float(proba.max())}


def _logged_column(values: np.ndarray) -> np.ndarray | list[Any]:
    """A feature column as logged: numbers as float64 (NaN: missing, written as null);
    categories as a list of str, `MISSING_CATEGORY` as null."""
    if values.dtype != object:
        return np.ascontiguousarray(values, dtype=np.float64)
    listed = values.tolist()
    if MISSING_CATEGORY in listed:
        return [None if value == MISSING_CATEGORY else value for value in listed]
    return listed


def _batch_output(prediction: Prediction) -> dict[str, Any]:
    """The outputs of many rows as columns, values as `_one_row_output` gives them."""
    if prediction.values is not None:
        return {"value": np.ascontiguousarray(prediction.values, dtype=np.float64)}
    labels = prediction.labels.tolist()  # as the one-row record: a float32 label as float64
    if prediction.proba is None:
        return {"label": labels, "proba": [None] * len(labels)}
    # Binary: probability of the positive (second) class; multiclass: of the predicted label.
    proba = prediction.proba
    scores = proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)
    return {"label": labels, "proba": np.ascontiguousarray(scores, dtype=np.float64)}
