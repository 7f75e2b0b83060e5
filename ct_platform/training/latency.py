"""Scoring latency of a model bundle through the server's own scoring path.

What the latency gate must judge is what will answer requests: the bundle (its ONNX graph,
or the sklearn fallback when conversion or parity failed), loaded by `serving.bundle`, fed
rows parsed by the server's `InputSchema`, scored by `LoadedModel.predict`, the call the
server makes per request (HTTP and JSON aside). scikit-learn's own single-row `predict` on
a DataFrame is 100-1000x slower than the graph and is reported for information only.

A busy machine makes single timings meaningless, so every figure is a median (or a
percentile) of many calls after warm-up calls, on one thread: a single row gains nothing
from OpenMP, and on a loaded box the thread fan-out alone made the median 5x slower. Each
series stops after a time budget, so a slow fallback cannot stall an evaluation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ct_platform.serving.bundle import load_bundle
from ct_platform.serving.schema import ParsedRows
from ct_platform.serving.slots import ServedModel

SINGLE_ROW_CALLS = 300
BATCH_ROWS = 1000
BATCH_CALLS = 20
SKLEARN_CALLS = 50
WARMUP_CALLS = 10
# Enough repeats for a stable median even when each call takes tens of milliseconds.
MIN_CALLS = 15
# Seconds a timed series may take before it stops early (after MIN_CALLS calls).
SERIES_BUDGET_S = 2.0
# Distinct holdout rows cycled through by the single-row series.
SAMPLE_ROWS = 50


@dataclass(frozen=True)
class ServingLatency:
    """Milliseconds per call. `artifact` is the backend that serves: `onnx` or `sklearn`."""

    artifact: str
    single_row_p50_ms: float
    single_row_p99_ms: float
    single_row_calls: int
    batch_rows: int
    batch_p50_ms: float
    batch_calls: int

    def figures(self) -> dict[str, float | int | str]:
        return {
            "artifact": self.artifact,
            "p50_ms": self.single_row_p50_ms,
            "p99_ms": self.single_row_p99_ms,
            "calls": self.single_row_calls,
            "batch_rows": self.batch_rows,
            "batch_p50_ms": self.batch_p50_ms,
            "batch_calls": self.batch_calls,
        }


def measure_bundle(bundle_dir: Path, rows: pd.DataFrame) -> ServingLatency:
    """Time the bundle's scoring path on single rows and on a `BATCH_ROWS`-row request.

    `rows` is a cleaned frame holding at least the bundle's columns (e.g. the holdout); each
    row is sent as a JSON client would send it and parsed by the server's schema.

    Raises:
        ValueError: `rows` is empty.
    """
    if rows.empty:
        raise ValueError("latency measurement needs at least one row")
    served = ServedModel.of(load_bundle(bundle_dir))
    records = _client_records(rows[served.schema.names])
    singles = [served.schema.from_records([record]) for record in records[:SAMPLE_ROWS]]
    batch = served.schema.from_records([records[i % len(records)] for i in range(BATCH_ROWS)])

    def score(parsed: ParsedRows) -> None:
        served.model.predict(parsed.columns)

    with threadpool_limits(limits=1):
        single_ms = timed_calls(lambda i: score(singles[i % len(singles)]), SINGLE_ROW_CALLS)
        batch_ms = timed_calls(lambda i: score(batch), BATCH_CALLS)
    return ServingLatency(
        artifact=served.model.backend_name,
        single_row_p50_ms=float(np.median(single_ms)),
        single_row_p99_ms=float(np.percentile(single_ms, 99)),
        single_row_calls=len(single_ms),
        batch_rows=BATCH_ROWS,
        batch_p50_ms=float(np.median(batch_ms)),
        batch_calls=len(batch_ms),
    )


def sklearn_single_row_ms(model: object, rows: pd.DataFrame) -> tuple[float, int]:
    """Median ms (and call count) of `model.predict` on one-row DataFrames cut from `rows`."""
    frames = [rows.iloc[[i]] for i in range(min(len(rows), SAMPLE_ROWS))]
    with threadpool_limits(limits=1):
        timings = timed_calls(lambda i: model.predict(frames[i % len(frames)]), SKLEARN_CALLS)
    return float(np.median(timings)), len(timings)


def timed_calls(call: Callable[[int], object], calls: int) -> list[float]:
    """Milliseconds of `call(i)` for i = 0.. after `WARMUP_CALLS` untimed calls (first calls
    pay for lazy imports and caches, not what a request costs). Stops after `calls` calls, or
    once `SERIES_BUDGET_S` is spent and at least `MIN_CALLS` were timed."""
    for i in range(WARMUP_CALLS):
        call(i)
    timings: list[float] = []
    deadline = time.perf_counter() + SERIES_BUDGET_S
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        finished = time.perf_counter()
        timings.append((finished - started) * 1000)
        if finished > deadline and len(timings) >= MIN_CALLS:
            break
    return timings


def _client_records(frame: pd.DataFrame) -> list[dict[str, object]]:
    # Through JSON, as a client sends them: missing values as null, numbers as JSON numbers.
    return json.loads(frame.to_json(orient="records"))
