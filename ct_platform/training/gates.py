"""Model gates: the checks a candidate must pass before it may become the champion.

Each gate returns a `GateResult` whose description says why it passed or failed, with the
figures, and whose metadata carries those figures for Dagster and MLflow. Whether a failed
gate blocks promotion is the spec's call (`gates.<name>.blocking`), not the gate's.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ct_platform.settings import LOWER_IS_BETTER, Spec

if TYPE_CHECKING:  # heavy: the code location imports this module for GateResult only
    import pandas as pd
    from sklearn.pipeline import Pipeline

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


def latency_gate(pipeline: Pipeline, holdout: pd.DataFrame, spec: Spec) -> GateResult:
    """Median single-row scoring time of the bundle this pipeline exports to must stay under
    `max_ms`.

    The bundle is built exactly as the export will build it (ONNX graph behind the parity
    gate on this holdout, else the sklearn fallback), in a temporary folder, and timed
    through the server's scoring path (`training.latency`): what decides is what will
    serve. A 1,000-row request and scikit-learn's own single-row `predict` are reported too,
    the latter for information only. `holdout` is the cleaned holdout frame (features and
    target).

    Raises:
        ValueError: `holdout` is empty.
    """
    # Imported on use: onnxruntime, skl2onnx and skops stay out of the code location's import.
    from ct_platform.serving.bundle import read_meta
    from ct_platform.training.bundling import build_bundle
    from ct_platform.training.latency import measure_bundle, sklearn_single_row_ms

    gate = spec.gates.latency
    if holdout.empty:
        raise ValueError("latency gate needs at least one holdout row")
    with tempfile.TemporaryDirectory(prefix="ct-latency-") as folder:
        bundle = build_bundle(
            pipeline,
            spec,
            name=spec.model.name,
            version="candidate",
            fingerprint="latency gate (temporary bundle)",
            holdout=holdout,
            directory=Path(folder) / "bundle",
        )
        serving = measure_bundle(bundle, holdout)
        fallback_reason = read_meta(bundle).onnx.reason or ""
    sklearn_p50, sklearn_calls = sklearn_single_row_ms(
        pipeline, holdout[spec.dataset.feature_columns]
    )
    passed = serving.single_row_p50_ms <= gate.max_ms
    relation = "within" if passed else "over"
    return GateResult(
        "latency",
        passed,
        gate.blocking,
        f"{serving.artifact} bundle, server scoring path: single-row p50 "
        f"{serving.single_row_p50_ms:.3f} ms (p99 {serving.single_row_p99_ms:.3f} ms over "
        f"{serving.single_row_calls} calls), {relation} the limit {gate.max_ms:g} ms; "
        f"{serving.batch_rows} rows p50 {serving.batch_p50_ms:.2f} ms. For information: "
        f"sklearn predict on a one-row DataFrame p50 {sklearn_p50:.2f} ms",
        {
            **serving.figures(),
            "max_ms": gate.max_ms,
            "sklearn_p50_ms": sklearn_p50,
            "sklearn_calls": sklearn_calls,
            "fallback_reason": fallback_reason,
        },
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
