"""Append every scored row to rotating JSONL segments; disk writes off the request path.

`submit` turns a scored batch into JSONL bytes (records: see docs/architecture.md) and
appends them to an in-memory deque; the app calls it on the event loop *after* the
response has gone out (`loop.call_soon`). A background thread wakes every
`flush_seconds`, joins what is pending, appends it to the current segment and flushes.
Segments rotate by size and by age.

Why format on the loop and not in the thread: formatting costs a few microseconds a row,
while every hand-over of the GIL between a busy event loop and a worker thread can cost
milliseconds of scheduling delay on a loaded machine (measured: p99 6-8 ms without the
thread's Python work, 11-23 ms with it). The thread now takes the GIL a few times a
second, for a join and a write.

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


class PredictionLog:
    def __init__(
        self,
        directory: Path,
        *,
        max_segment_bytes: int = 64 * 1024 * 1024,
        max_segment_seconds: float = 3600.0,
        flush_seconds: float = 0.25,
        max_pending: int = 100_000,
    ) -> None:
        self.directory = directory
        self.max_segment_bytes = max_segment_bytes
        self.max_segment_seconds = max_segment_seconds
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.dropped = 0
        self.written = 0
        # JSONL bytes per submitted batch, one line per row (the writer counts the lines:
        # no (bytes, rows) tuple made per request on the loop).
        self._pending: deque[bytes] = deque()
        self._stop = threading.Event()
        self._segment: IO[bytes] | None = None
        self._segment_opened = 0.0
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
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append(jsonl(batch))

    def close(self, timeout: float = 10.0) -> None:
        """Write everything already submitted, then stop the thread and close the segment."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self._drain()
        self._drain()
        self._close_segment()

    def _drain(self) -> None:
        while self._pending:  # popleft is atomic: no lock shared with the event loop
            lines = self._pending.popleft()
            # Buffered: rotation can happen between batches, syscalls happen per buffer.
            self._current_segment().write(lines)
            self.written += lines.count(b"\n")  # orjson escapes newlines inside values
        if self._segment is not None:
            self._segment.flush()
            if time.time() - self._segment_opened >= self.max_segment_seconds:
                self._close_segment()

    def _current_segment(self) -> IO[bytes]:
        if self._segment is not None and self._segment.tell() >= self.max_segment_bytes:
            self._close_segment()
        if self._segment is None:
            self._segment_seq += 1
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            name = f"predictions-{stamp}-{os.getpid()}-{self._segment_seq:04d}.jsonl"
            # A large buffer: one write syscall (one GIL hand-over) per drain, not per 8 KiB.
            self._segment = open(self.directory / name, "ab", buffering=_BUFFER_BYTES)  # noqa: SIM115
            self._segment_opened = time.time()
        return self._segment

    def _close_segment(self) -> None:
        if self._segment is not None:
            self._segment.close()
            self._segment = None


def jsonl(batch: ScoredBatch) -> bytes:
    """The batch's prediction-log records, one JSON line per scored row (row i of a
    multi-row request: `<id>:<i>`); see docs/architecture.md for the fields.

    Assembled from JSON text, not a dict per row and field handed to the encoder (1,000
    rows: ~3 ms, was ~8 ms): the fields every row shares are encoded once; the features of
    one row as one dict; of many rows a column at a time: orjson encodes a numeric column
    as one array, split into its numbers with the column's `"name":` in front, and each
    distinct category or label once; then one `join` per row.
    """
    n_rows = batch.columns[0].shape[0]
    if n_rows == 1:
        return _one_row_jsonl(batch)
    fields = f',"ts":{_json(batch.ts)},"slot":{_json(batch.slot)}'
    fields += f',"model_version":{_json(batch.model_version)},"features":{{'
    latency = f',"latency_ms":{_json(batch.latency_ms)}}}'
    tails = [f'}},"output":{output}{latency}' for output in _json_outputs(batch.prediction)]
    request_id = _json(batch.request_id)[:-1]  # the id's JSON string, reopened for ":<i>"
    heads = [f'{{"request_id":{request_id}:{i}"{fields}' for i in range(n_rows)]
    columns = [
        _json_column(name, values)
        for name, values in zip(batch.column_names, batch.columns, strict=True)
    ]
    columns[0] = [head + pair for head, pair in zip(heads, columns[0], strict=True)]
    columns[-1] = [pair + tail for pair, tail in zip(columns[-1], tails, strict=True)]
    lines = map(",".join, zip(*columns, strict=True))
    return ("\n".join(lines) + "\n").encode()


def _one_row_jsonl(batch: ScoredBatch) -> bytes:
    """The record of a one-row batch: one dict, one orjson call (the same bytes as the
    many-row assembly, in a third of its instructions)."""
    features = {
        name: None if value == MISSING_CATEGORY else value
        for name, value in zip(batch.column_names, [c.item() for c in batch.columns], strict=True)
    }
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
    label = prediction.labels.tolist()[0]
    if prediction.proba is None:
        return {"label": label, "proba": None}
    proba = prediction.proba[0]
    # Binary: probability of the positive (second) class; multiclass: of the predicted label.
    return {"label": label, "proba": float(proba[1] if proba.shape[0] == 2 else proba.max())}


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_column(name: str, values: np.ndarray) -> list[str]:
    """`"name":value` for each value of a feature column (missing as null)."""
    key = f"{_json(name)}:"
    if values.dtype == object:  # categories: missing (`MISSING_CATEGORY`) as null
        listed = values.tolist()
        pairs = {
            value: key + _json(None if value == MISSING_CATEGORY else value)
            for value in set(listed)
        }
        return [pairs[value] for value in listed]
    # NaN (missing, or a sentinel mapped to missing) is written as null by orjson.
    return _json_numbers(values.tolist(), key)


def _json_numbers(numbers: list[float], key: str = "") -> list[str]:
    """Each number as JSON, `key` in front. A JSON number holds no comma and orjson never
    writes a raw newline, so orjson's array splits at its commas into the numbers."""
    inner = _json(numbers)[1:-1]
    return (key + inner.replace(",", "\n" + key)).split("\n")


def _json_each(values: list[Any]) -> list[str]:
    """Each value as JSON, encoding each distinct one once (a request has few labels)."""
    encoded = {value: _json(value) for value in set(values)}
    return [encoded[value] for value in values]


def _json_outputs(prediction: Prediction) -> list[str]:
    if prediction.values is not None:
        return [f'{{"value":{value}}}' for value in _json_numbers(prediction.values.tolist())]
    labels = _json_each(prediction.labels.tolist())
    if prediction.proba is None:
        return [f'{{"label":{label},"proba":null}}' for label in labels]
    # Binary: probability of the positive (second) class; multiclass: of the predicted label.
    proba = prediction.proba
    scores = proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)
    return [
        f'{{"label":{label},"proba":{score}}}'
        for label, score in zip(labels, _json_numbers(scores.astype(float).tolist()), strict=True)
    ]
