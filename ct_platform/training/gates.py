"""Model gates: the checks a candidate must pass before it may become the champion.

Each gate returns a `GateResult` whose description says why it passed or failed, with the
figures, and whose metadata carries those figures for Dagster and MLflow. Whether a failed
gate blocks promotion is the spec's call (`gates.<name>.blocking`), not the gate's.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ct_platform.settings import LOWER_IS_BETTER, Spec

if TYPE_CHECKING:  # heavy: the code location imports this module for GateResult only
    import pandas as pd

# Single-row calls timed by the latency gate, after the warm-up calls (first calls pay for
# lazy imports and caches, which is not what serving a request costs).
LATENCY_CALLS = 200
LATENCY_WARMUP_CALLS = 10
BYTES_PER_MB = 1024 * 1024

MetadataValue = float | int | str | bool


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    blocking: bool
    description: str
    metadata: dict[str, MetadataValue] = field(default_factory=dict)


def metric_floor_gate(metrics: dict[str, float], spec: Spec) -> GateResult:
    """The primary metric must reach the threshold (stay under it for error metrics)."""
    gate = spec.gates.metric_floor
    metric = spec.evaluation.primary_metric
    value = metrics.get(metric, math.nan)
    lower_is_better = metric in LOWER_IS_BETTER
    if math.isnan(value):
        passed, verdict = False, f"{metric} is undefined on this holdout"
    else:
        passed = value <= gate.threshold if lower_is_better else value >= gate.threshold
        bound = "ceiling" if lower_is_better else "floor"
        outcome = "meets" if passed else "misses"
        verdict = f"{metric} {value:.4f} {outcome} the {bound} {gate.threshold:.4f}"
    return GateResult(
        "metric_floor",
        passed,
        gate.blocking,
        verdict,
        {
            "metric": metric,
            "value": value,
            "threshold": gate.threshold,
            "lower_is_better": lower_is_better,
        },
    )


def champion_regression_gate(
    candidate_metrics: dict[str, float], champion_metrics: dict[str, float] | None, spec: Spec
) -> GateResult:
    """The candidate may be at most `tolerance` worse than the champion in the primary metric.

    For a fair comparison both should be scored on the same holdout.
    """
    gate = spec.gates.champion_regression
    metric = spec.evaluation.primary_metric
    candidate = candidate_metrics.get(metric, math.nan)
    metadata: dict[str, MetadataValue] = {
        "metric": metric,
        "candidate": candidate,
        "tolerance": gate.tolerance,
        "lower_is_better": metric in LOWER_IS_BETTER,
    }
    champion = math.nan if champion_metrics is None else champion_metrics.get(metric, math.nan)
    if champion_metrics is None or math.isnan(champion):
        reason = "no champion yet" if champion_metrics is None else f"champion has no {metric}"
        return GateResult(
            "champion_regression",
            True,
            gate.blocking,
            f"{reason}: nothing to regress from (candidate {metric} {candidate:.4f})",
            metadata,
        )
    from ct_platform.training.evaluate import shortfall  # imports sklearn.metrics

    worse_by = shortfall(candidate, champion, metric)
    passed = not math.isnan(candidate) and worse_by <= gate.tolerance
    if math.isnan(candidate):
        description = f"candidate {metric} is undefined; champion has {champion:.4f}"
    elif worse_by <= 0:
        description = f"candidate {metric} {candidate:.4f} is no worse than champion {champion:.4f}"
    else:
        within = "within" if passed else "beyond"
        description = (
            f"candidate {metric} {candidate:.4f} is {worse_by:.4f} worse than champion "
            f"{champion:.4f}, {within} the tolerance {gate.tolerance:.4f}"
        )
    metadata |= {"champion": champion, "shortfall": worse_by}
    return GateResult("champion_regression", passed, gate.blocking, description, metadata)


def latency_gate(model: object, sample: pd.DataFrame, spec: Spec) -> GateResult:
    """Median single-row `predict` latency must stay under `max_ms`.

    Rows are cut from `sample` before timing, so only the model call is measured. Timed on
    one thread: a single row gains nothing from OpenMP, and on a busy machine the thread
    fan-out alone made the median 5x slower with 1 s outliers (measured on HGB).
    """
    import numpy as np
    from threadpoolctl import threadpool_limits

    gate = spec.gates.latency
    if sample.empty:
        raise ValueError("latency gate needs at least one sample row")
    features = sample[spec.dataset.feature_columns]
    rows = [features.iloc[[i]] for i in range(len(features))]
    timings_ms = []
    with threadpool_limits(limits=1):
        for i in range(LATENCY_WARMUP_CALLS):
            model.predict(rows[i % len(rows)])
        for i in range(LATENCY_CALLS):
            row = rows[i % len(rows)]
            started = time.perf_counter()
            model.predict(row)
            timings_ms.append((time.perf_counter() - started) * 1000)
    p50 = statistics.median(timings_ms)
    p95 = float(np.percentile(timings_ms, 95))
    passed = p50 <= gate.max_ms
    relation = "within" if passed else "over"
    return GateResult(
        "latency",
        passed,
        gate.blocking,
        f"single-row predict p50 {p50:.2f} ms (p95 {p95:.2f} ms over {LATENCY_CALLS} calls, "
        "one thread), "
        f"{relation} the limit {gate.max_ms:g} ms",
        {"p50_ms": p50, "p95_ms": p95, "max_ms": gate.max_ms, "calls": LATENCY_CALLS},
    )


def model_size_gate(model_size_bytes: int, spec: Spec) -> GateResult:
    """The stored model (skops bytes) must stay under `max_mb` (MiB)."""
    gate = spec.gates.model_size
    size_mb = model_size_bytes / BYTES_PER_MB
    passed = size_mb <= gate.max_mb
    relation = "within" if passed else "over"
    return GateResult(
        "model_size",
        passed,
        gate.blocking,
        f"model is {size_mb:.2f} MB, {relation} the limit {gate.max_mb:g} MB",
        {"size_bytes": model_size_bytes, "size_mb": size_mb, "max_mb": gate.max_mb},
    )
