"""Latency and peak memory of a model bundle, measured in a fresh process.

What the resource gate must judge is what will answer requests: the bundle (its ONNX graph,
or the sklearn fallback when conversion or parity failed), loaded by `serving.bundle`, fed
rows parsed by the server's `InputSchema`, scored by `LoadedModel.predict`, the call the
server makes per request (HTTP and JSON aside).

Measured in a subprocess (`python -m ct_platform.training.latency BUNDLE ROWS.json`) that
imports what the server imports and no more (no pandas, no mlflow), so its peak resident
set size (`getrusage` `ru_maxrss`) is the serving process's footprint with this bundle, not
that of the training step that happens to hold three models and a data frame.

A busy machine makes single timings meaningless, so every figure is a median (or a
percentile) of many calls after warm-up calls, on one thread: a single row gains nothing
from OpenMP, and on a loaded box the thread fan-out alone made the median 5x slower. Each
series stops after a time budget, so a slow fallback cannot stall an evaluation.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parent only: the measuring process never imports pandas
    import pandas as pd

SINGLE_ROW_CALLS = 300
BATCH_ROWS = 1000
BATCH_CALLS = 20
WARMUP_CALLS = 10
# Enough repeats for a stable median even when each call takes tens of milliseconds.
MIN_CALLS = 15
# Seconds a timed series may take before it stops early (after MIN_CALLS calls).
SERIES_BUDGET_S = 2.0
# Distinct rows cycled through by the single-row series.
SAMPLE_ROWS = 50
# Seconds the measuring process may take in all (imports and loading included) on a slow box.
PROBE_TIMEOUT_S = 300
KIB_PER_MB = 1024


class ResourceProbeError(RuntimeError):
    """The measuring process failed or timed out; the message holds its error output."""


@dataclass(frozen=True)
class ServingResources:
    """Milliseconds per call and peak RSS in MiB. `artifact` is `onnx` or `sklearn`."""

    artifact: str
    single_row_p50_ms: float
    single_row_p99_ms: float
    single_row_calls: int
    batch_rows: int
    batch_p50_ms: float
    batch_calls: int
    peak_rss_mb: float

    def figures(self) -> dict[str, float | int | str]:
        return {
            "artifact": self.artifact,
            "p50_ms": self.single_row_p50_ms,
            "p99_ms": self.single_row_p99_ms,
            "calls": self.single_row_calls,
            "batch_rows": self.batch_rows,
            "batch_p50_ms": self.batch_p50_ms,
            "batch_calls": self.batch_calls,
            "peak_rss_mb": self.peak_rss_mb,
        }


def measure_in_subprocess(bundle_dir: Path, rows: pd.DataFrame) -> ServingResources:
    """Measure `bundle_dir` in a fresh Python process on rows cut from `rows`.

    `rows` is a cleaned frame holding at least the bundle's columns (e.g. the holdout); each
    row is sent as a JSON client would send it and parsed by the server's schema.

    Raises:
        ValueError: `rows` is empty.
        ResourceProbeError: the process exited non-zero or ran over `PROBE_TIMEOUT_S`.
    """
    from ct_platform.serving.bundle import read_meta

    if rows.empty:
        raise ValueError("resource measurement needs at least one row")
    names = [column.name for column in read_meta(bundle_dir).columns]
    # Through JSON, as a client sends them: missing values as null, numbers as JSON numbers.
    records = json.loads(rows[names].head(BATCH_ROWS).to_json(orient="records"))
    with tempfile.TemporaryDirectory(prefix="ct-probe-") as folder:
        rows_file = Path(folder) / "rows.json"
        rows_file.write_text(json.dumps(records))
        command = [sys.executable, "-m", __name__, str(bundle_dir), str(rows_file)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ResourceProbeError(
                f"measuring {bundle_dir} took over {PROBE_TIMEOUT_S} s"
            ) from None
    if done.returncode != 0:
        raise ResourceProbeError(
            f"measuring {bundle_dir} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    return ServingResources(**json.loads(done.stdout.strip().splitlines()[-1]))


def measure_here(bundle_dir: Path, records: list[dict[str, object]]) -> ServingResources:
    """Time the bundle's scoring path in this process; `records` as a JSON client sends them.

    Peak RSS is this process's so far: meaningful in the fresh process `__main__` runs.
    """
    import numpy as np
    from threadpoolctl import threadpool_limits

    from ct_platform.serving.bundle import load_bundle
    from ct_platform.serving.slots import ServedModel

    served = ServedModel.of(load_bundle(bundle_dir))
    singles = [served.schema.from_records([record]) for record in records[:SAMPLE_ROWS]]
    batch = served.schema.from_records([records[i % len(records)] for i in range(BATCH_ROWS)])
    with threadpool_limits(limits=1):
        single_ms = timed_calls(
            lambda i: served.model.predict(singles[i % len(singles)]), SINGLE_ROW_CALLS
        )
        batch_ms = timed_calls(lambda i: served.model.predict(batch), BATCH_CALLS)
    return ServingResources(
        artifact=served.model.backend_name,
        single_row_p50_ms=float(np.median(single_ms)),
        single_row_p99_ms=float(np.percentile(single_ms, 99)),
        single_row_calls=len(single_ms),
        batch_rows=BATCH_ROWS,
        batch_p50_ms=float(np.median(batch_ms)),
        batch_calls=len(batch_ms),
        # Linux reports ru_maxrss in KiB.
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MB,
    )


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


def main(argv: list[str]) -> None:
    """`BUNDLE ROWS.json`: print the figures as one JSON line on stdout."""
    bundle_dir, rows_file = Path(argv[0]), Path(argv[1])
    usage = measure_here(bundle_dir, json.loads(rows_file.read_text()))
    print(json.dumps(asdict(usage)))


if __name__ == "__main__":
    main(sys.argv[1:])
