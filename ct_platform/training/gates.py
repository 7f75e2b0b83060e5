"""Model gates: the checks a candidate must pass before it may become the champion.

Each gate returns a `GateResult` whose description says why it passed or failed, with the
figures, and whose metadata carries those figures for Dagster and MLflow. Whether a failed
gate blocks promotion is the spec's call (`gates.<name>.blocking`), not the gate's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ct_platform.settings import LOWER_IS_BETTER, Spec

if TYPE_CHECKING:  # heavy: the code location imports this module for GateResult only
    import pandas as pd

    from ct_platform.serving.bundle import BundleMeta, ParityInfo
    from ct_platform.training.comparison import PairedComparison
    from ct_platform.training.latency import ServingResources

BYTES_PER_MB = 1024 * 1024

MetadataValue = float | int | str | bool


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    blocking: bool
    description: str
    metadata: dict[str, MetadataValue] = field(default_factory=dict)


def metric_floor_gate(
    metrics: dict[str, float],
    spec: Spec,
    champion_metrics: dict[str, float] | None = None,
    champion_name: str = "the serving champion",
) -> GateResult:
    """The primary metric must reach the threshold (stay under it for error metrics).

    The floor is symmetric: `champion_metrics` are the serving champion's figures on the same
    holdout. When the champion is under the floor too, a candidate better than it is not held
    out by the floor alone (else a worse model keeps serving), and the result carries the
    alert `champion_under_floor=true`. `gates.metric_floor.symmetric: false` keeps the floor
    absolute (the alert stays). `champion_name` names whose figures they are in the verdict
    (its holdout fit when that stood in for it).
    """
    from ct_platform.training.evaluate import is_better  # imports sklearn.metrics

    gate = spec.gates.metric_floor
    metric = spec.evaluation.primary_metric
    value = metrics.get(metric, math.nan)
    champion = math.nan if champion_metrics is None else champion_metrics.get(metric, math.nan)
    lower_is_better = metric in LOWER_IS_BETTER
    bound = "ceiling" if lower_is_better else "floor"

    def meets(figure: float) -> bool:
        return figure <= gate.threshold if lower_is_better else figure >= gate.threshold

    champion_under = bool(not math.isnan(champion) and not meets(champion))
    if math.isnan(value):
        passed, verdict = False, f"{metric} is undefined on this holdout"
    else:
        passed = bool(meets(value))
        outcome = "meets" if passed else "misses"
        verdict = f"{metric} {value:.4f} {outcome} the {bound} {gate.threshold:.4f}"
        if not passed and gate.symmetric and champion_under and is_better(value, champion, metric):
            passed = True
            verdict += (
                f", but {champion_name} scores {champion:.4f} on the same holdout and the "
                f"candidate is better: not held out by the {bound} alone"
            )
    if champion_under:
        verdict += f"; ALERT: {champion_name} ({champion:.4f}) is under its {bound}"
    metadata: dict[str, MetadataValue] = {
        "metric": metric,
        "value": value,
        "threshold": gate.threshold,
        "lower_is_better": lower_is_better,
        "champion_under_floor": champion_under,
    }
    if not math.isnan(champion):
        metadata["champion_value"] = champion
    return GateResult("metric_floor", passed, gate.blocking, verdict, metadata)


def champion_regression_gate(
    candidate_metrics: dict[str, float],
    comparison: PairedComparison | None,
    spec: Spec,
    champion_name: str = "the champion",
) -> GateResult:
    """Candidate vs champion on the same holdout, judged by the spec's policy on the paired
    test's confidence interval (`training.comparison`); `comparison` is None without a
    champion; `champion_name` names it in the verdict (its holdout fit when that stood in for it).

    `non_inferiority`: pass unless the interval's worse bound is below -tolerance (the
    margin). `superiority`: pass only when the worse bound is above 0, i.e. the candidate is
    significantly better. The worse bound of a two-sided (1 - alpha) interval is a one-sided
    test at alpha/2, the usual reading of a non-inferiority margin (ICH E9).
    """
    gate = spec.gates.champion_regression
    metric = spec.evaluation.primary_metric
    candidate = candidate_metrics.get(metric, math.nan)
    # In the metric's units; unset, relative to the champion's figure for mae and rmse.
    tolerance = gate.margin(metric, math.nan if comparison is None else comparison.champion)
    metadata: dict[str, MetadataValue] = {
        "metric": metric,
        "candidate": candidate,
        "tolerance": tolerance,
        "policy": gate.policy,
        "alpha": gate.alpha,
        "lower_is_better": metric in LOWER_IS_BETTER,
    }
    if comparison is None or math.isnan(comparison.champion):
        reason = "no champion yet" if comparison is None else f"champion has no {metric} here"
        return GateResult(
            "champion_regression",
            True,
            gate.blocking,
            f"{reason}: nothing to compare with (candidate {metric} {candidate:.4f})",
            metadata,
        )
    metadata |= {"champion": comparison.champion, **comparison.figures()}
    if math.isnan(candidate) or math.isnan(comparison.ci_low):
        return GateResult(
            "champion_regression",
            False,
            gate.blocking,
            f"candidate {metric} ({candidate:.4f}) or its difference to {champion_name} "
            f"({comparison.champion:.4f}) is undefined on this holdout",
            metadata,
        )
    worse = comparison.ci_low
    if gate.policy == "non_inferiority":
        passed = bool(worse >= -tolerance)
        relation = ">=" if passed else "<"
        rule = f"non-inferiority: worse bound {worse:+.4f} {relation} -{tolerance:.4f}"
    else:
        passed = bool(worse > 0)
        rule = f"superiority: worse bound {worse:+.4f} {'>' if passed else '<='} 0"
    description = (
        f"candidate {metric} {candidate:.4f} vs {champion_name} {comparison.champion:.4f}: "
        f"improvement {comparison.improvement:+.4f}, {comparison.confidence:.0%} CI "
        f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}], {comparison.method} p "
        f"{comparison.p_value:.3g}, smallest detectable {comparison.mde:.4f} "
        f"({comparison.rows} rows); {rule}"
    )
    return GateResult("champion_regression", passed, gate.blocking, description, metadata)


def baseline_gate(
    candidate_metrics: dict[str, float],
    comparison: PairedComparison,
    baseline: str,
    spec: Spec,
) -> GateResult:
    """Candidate vs the naive baseline (`training.baseline`; `baseline` says what it predicts)
    on the same holdout: it passes only when significantly better, i.e. the worse bound of
    the paired test's (1 - alpha) interval of its improvement (`training.comparison`) is
    above 0. `gates.baseline.enabled: false` records the figures and passes.
    """
    gate = spec.gates.baseline
    metric = spec.evaluation.primary_metric
    candidate = candidate_metrics.get(metric, math.nan)
    metadata: dict[str, MetadataValue] = {
        "metric": metric,
        "candidate": candidate,
        "baseline": comparison.champion,
        "baseline_strategy": baseline,
        "alpha": gate.alpha,
        "lower_is_better": metric in LOWER_IS_BETTER,
        **comparison.figures(),
    }
    against = (
        f"the naive baseline ({baseline}) at {comparison.champion:.4f} on the same "
        f"{comparison.rows:,} holdout rows"
    )
    if math.isnan(candidate) or math.isnan(comparison.ci_low):
        passed = False
        verdict = f"{metric} {candidate:.4f} or its difference to {against} is undefined"
    else:
        passed = bool(comparison.ci_low > 0)
        if passed:
            relation = "is better than"
        elif comparison.improvement > 0:
            relation = "is not significantly better than"
        else:
            relation = "is not better than"
        verdict = (
            f"{metric} {candidate:.4f} {relation} {against}: improvement "
            f"{comparison.improvement:+.4f}, {comparison.confidence:.0%} CI "
            f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}], {comparison.method} p "
            f"{comparison.p_value:.3g}"
        )
    if not gate.enabled:
        passed, verdict = True, f"not judged (gates.baseline.enabled: false): {verdict}"
    return GateResult("baseline", passed, gate.blocking, verdict, metadata)


def resources_gate(bundle: Path, rows: pd.DataFrame, spec: Spec) -> GateResult:
    """Latency and peak memory of `bundle` (the one that will serve), measured in a fresh
    subprocess through the server's scoring path (`training.latency`), against the spec's
    `gates.resources` limits. `rows` is a cleaned frame with the bundle's columns.

    A bundle that cannot be measured (its process crashed or timed out) fails the gate,
    with the reason: it would not serve either.
    """
    from ct_platform.training.latency import ResourceProbeError, measure_in_subprocess

    gate = spec.gates.resources
    limits = resource_limits(spec)
    try:
        usage = measure_in_subprocess(bundle, rows)
    except ResourceProbeError as error:
        return GateResult("resources", False, gate.blocking, f"not measured: {error}", limits)
    return judge_resources(usage, spec)


def judge_resources(usage: ServingResources, spec: Spec) -> GateResult:
    """The measured `usage` against the spec's `gates.resources` limits."""
    gate = spec.gates.resources
    over = []
    if usage.single_row_p50_ms > gate.max_latency_ms:
        over.append(
            f"single-row p50 {usage.single_row_p50_ms:.3f} ms over {gate.max_latency_ms:g} ms"
        )
    if gate.max_batch_latency_ms is not None and usage.batch_p50_ms > gate.max_batch_latency_ms:
        over.append(
            f"{usage.batch_rows}-row p50 {usage.batch_p50_ms:.2f} ms over "
            f"{gate.max_batch_latency_ms:g} ms"
        )
    if usage.peak_rss_mb > gate.max_memory_mb:
        over.append(f"peak memory {usage.peak_rss_mb:.1f} MB over {gate.max_memory_mb:g} MB")
    verdict = "; ".join(over) if over else "within the limits"
    return GateResult(
        "resources",
        not over,
        gate.blocking,
        f"{usage.artifact} bundle in a fresh process: single-row p50 "
        f"{usage.single_row_p50_ms:.3f} ms (p99 {usage.single_row_p99_ms:.3f} ms), "
        f"{usage.batch_rows}-row p50 {usage.batch_p50_ms:.2f} ms, peak RSS "
        f"{usage.peak_rss_mb:.1f} MB: {verdict}",
        {**usage.figures(), **resource_limits(spec)},
    )


def resource_limits(spec: Spec) -> dict[str, MetadataValue]:
    gate = spec.gates.resources
    return {
        "max_latency_ms": gate.max_latency_ms,
        "max_batch_latency_ms": gate.max_batch_latency_ms or math.nan,
        "max_memory_mb": gate.max_memory_mb,
    }


def onnx_parity_gate(meta: BundleMeta, spec: Spec) -> GateResult:
    """The ONNX parity gate, as recorded when the bundle was built (`training.bundling`).

    A graph that disagrees with sklearn is never shipped: the bundle is then sklearn-only and
    the gate fails as a warning (the fallback serves, slower). A blocking failure is left for
    a bundle that claims ONNX without passing parity.
    """
    parity = meta.parity
    agrees = parity is not None and parity.passed
    figures: dict[str, MetadataValue] = {
        "onnx_enabled": meta.onnx.enabled,
        "reason": meta.onnx.reason or "",
    }
    if parity is not None:
        figures.update(parity_figures(parity, meta.task))
    if not meta.onnx.enabled:
        return GateResult(
            "onnx_parity", False, False, f"bundle is sklearn-only: {meta.onnx.reason}", figures
        )
    description = (
        f"ONNX matches sklearn on the holdout (max abs diff {parity.max_abs_diff:.2e}, "
        f"max rel diff {parity.max_rel_diff:.2e})"
        if agrees and parity is not None
        else "bundle serves ONNX that does not match sklearn: deployment blocked"
    )
    return GateResult("onnx_parity", agrees, spec.gates.parity.blocking, description, figures)


def parity_figures(parity: ParityInfo, task: str) -> dict[str, MetadataValue]:
    """The parity figures that mean something for the bundle's `task`: `labels_identical`
    (predicted labels equal) for classification only; a regressor has no labels."""
    figures = asdict(parity)
    if task != "classification":
        del figures["labels_identical"]
    return figures


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
