"""Append every scored row to rotating JSONL segments, off the request path.

Requests hand a `ScoredBatch` (arrays, not JSON) to a bounded queue and move on; one
background thread turns batches into records (see docs/architecture.md) and appends them
to the current segment, flushing whenever the queue runs dry and at least every
`flush_seconds`. Segments rotate by size and by age. A slow disk therefore never slows a
prediction: if the queue fills up, batches are dropped and counted (`dropped`) instead.
A crash loses at most what was not yet flushed to the newest segment; a reader should skip
a torn last line there.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from ct_platform.serving.bundle import Prediction
from ct_platform.serving.schema import MISSING_CATEGORY


@dataclass(frozen=True)
class ScoredBatch:
    request_id: str
    ts: float
    slot: str
    model_version: str
    column_names: list[str]
    columns: list[np.ndarray]
    prediction: Prediction
    latency_ms: float


_STOP = object()


class PredictionLog:
    def __init__(
        self,
        directory: Path,
        *,
        max_segment_bytes: int = 64 * 1024 * 1024,
        max_segment_seconds: float = 3600.0,
        flush_seconds: float = 0.2,
        max_pending: int = 100_000,
    ) -> None:
        self.directory = directory
        self.max_segment_bytes = max_segment_bytes
        self.max_segment_seconds = max_segment_seconds
        self.flush_seconds = flush_seconds
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._segment: IO[bytes] | None = None
        self._segment_opened = 0.0
        self._segment_seq = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def submit(self, batch: ScoredBatch) -> None:
        """Never blocks: a full queue means the disk cannot keep up, so the batch is dropped."""
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 10.0) -> None:
        """Write everything already submitted, then stop the thread and close the segment."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=self.flush_seconds)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if item is not None:
                self._write(item)
            now = time.monotonic()
            if item is None or self._queue.empty() or now - last_flush >= self.flush_seconds:
                self._flush()
                last_flush = now
        self._close_segment()

    def _write(self, batch: ScoredBatch) -> None:
        segment = self._current_segment()
        lines = b"".join(orjson.dumps(record) + b"\n" for record in records(batch))
        segment.write(lines)
        self.written += batch.columns[0].shape[0]

    def _flush(self) -> None:
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
            self._segment = open(self.directory / name, "ab")  # noqa: SIM115 (long-lived)
            self._segment_opened = time.time()
        return self._segment

    def _close_segment(self) -> None:
        if self._segment is not None:
            self._segment.close()
            self._segment = None


def records(batch: ScoredBatch) -> list[dict[str, Any]]:
    """One prediction-log record per scored row (row i of a multi-row request: `<id>:<i>`)."""
    feature_rows = zip(*(_jsonable(values) for values in batch.columns), strict=True)
    outputs = _outputs(batch.prediction)
    single = len(outputs) == 1
    return [
        {
            "request_id": batch.request_id if single else f"{batch.request_id}:{index}",
            "ts": batch.ts,
            "slot": batch.slot,
            "model_version": batch.model_version,
            "features": dict(zip(batch.column_names, features, strict=True)),
            "output": output,
            "latency_ms": batch.latency_ms,
        }
        for index, (features, output) in enumerate(zip(feature_rows, outputs, strict=True))
    ]


def _jsonable(values: np.ndarray) -> list[Any]:
    if values.dtype == object:
        return [None if value == MISSING_CATEGORY else value for value in values.tolist()]
    # NaN (missing, or a sentinel mapped to missing) is logged as null.
    return [None if value != value else value for value in values.tolist()]


def _outputs(prediction: Prediction) -> list[dict[str, Any]]:
    if prediction.values is not None:
        return [{"value": value} for value in prediction.values.tolist()]
    labels = prediction.labels.tolist()
    if prediction.proba is None:
        return [{"label": label, "proba": None} for label in labels]
    # Binary: probability of the positive (second) class; multiclass: of the predicted label.
    proba = prediction.proba
    scores = proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)
    return [
        {"label": label, "proba": score}
        for label, score in zip(labels, scores.astype(float).tolist(), strict=True)
    ]
