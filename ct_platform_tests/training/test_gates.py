"""Each model gate passes and fails on real figures, and says why in its description."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sklearn.pipeline import Pipeline

from ct_platform.data.training_set import TrainingSet
from ct_platform.settings import Spec
from ct_platform.training.bundling import build_bundle
from ct_platform.training.gates import (
    champion_regression_gate,
    latency_gate,
    metric_floor_gate,
    model_size_gate,
)
from ct_platform.training.latency import BATCH_ROWS, MIN_CALLS, SINGLE_ROW_CALLS, measure_bundle


def _with_gates(spec: Spec, **gates: dict) -> Spec:
    """A copy of `spec` with some gate settings replaced (specs are frozen)."""
    raw = spec.model_dump()
    for name, settings in gates.items():
        raw["gates"][name] |= settings
    return Spec.model_validate(raw)


@pytest.fixture
def gated(bank_spec: Spec) -> Spec:
    """The bank spec with gate settings pinned here, so the figures below do not follow
    edits to the shipped demo spec."""
    return _with_gates(
        bank_spec,
        metric_floor={"threshold": 0.65, "blocking": True},
        champion_regression={"tolerance": 0.02, "blocking": True},
        latency={"max_ms": 25, "blocking": False},
        model_size={"max_mb": 50, "blocking": True},
    )


def test_metric_floor_passes_and_fails(gated: Spec) -> None:
    passed = metric_floor_gate({"roc_auc": 0.71}, gated)
    failed = metric_floor_gate({"roc_auc": 0.61}, gated)
    assert (passed.passed, passed.blocking) == (True, True)
    assert passed.description == "roc_auc 0.7100 meets the floor 0.6500"
    assert not failed.passed
    assert failed.description == "roc_auc 0.6100 misses the floor 0.6500"
    assert failed.metadata == {
        "metric": "roc_auc",
        "value": 0.61,
        "threshold": 0.65,
        "lower_is_better": False,
    }


def test_metric_floor_is_a_ceiling_for_error_metrics(synthetic_spec) -> None:
    spec = _with_gates(
        synthetic_spec("regression", "sklearn.linear_model.Ridge", "rmse"),
        metric_floor={"threshold": 1.0},
    )
    assert metric_floor_gate({"rmse": 0.8}, spec).passed
    failed = metric_floor_gate({"rmse": 1.3}, spec)
    assert not failed.passed
    assert failed.description == "rmse 1.3000 misses the ceiling 1.0000"


def test_metric_floor_fails_an_undefined_metric(gated: Spec) -> None:
    failed = metric_floor_gate({"roc_auc": math.nan}, gated)
    assert not failed.passed
    assert failed.description == "roc_auc is undefined on this holdout"


def test_champion_regression_without_champion_passes_and_says_so(gated: Spec) -> None:
    result = champion_regression_gate({"roc_auc": 0.62}, None, gated)
    assert result.passed
    assert (
        result.description == "no champion yet: nothing to regress from (candidate roc_auc 0.6200)"
    )


def test_champion_regression_within_and_beyond_tolerance(gated: Spec) -> None:
    better = champion_regression_gate({"roc_auc": 0.70}, {"roc_auc": 0.68}, gated)
    within = champion_regression_gate({"roc_auc": 0.665}, {"roc_auc": 0.68}, gated)
    beyond = champion_regression_gate({"roc_auc": 0.65}, {"roc_auc": 0.68}, gated)
    assert better.passed
    assert better.description == "candidate roc_auc 0.7000 is no worse than champion 0.6800"
    assert within.passed
    assert within.metadata["shortfall"] == pytest.approx(0.015)
    assert not beyond.passed
    assert beyond.blocking
    assert beyond.description == (
        "candidate roc_auc 0.6500 is 0.0300 worse than champion 0.6800, beyond the tolerance 0.0200"
    )
    assert beyond.metadata["champion"] == 0.68
    assert beyond.metadata["candidate"] == 0.65


def test_champion_regression_respects_lower_is_better(synthetic_spec) -> None:
    spec = _with_gates(
        synthetic_spec("regression", "sklearn.linear_model.Ridge", "mae"),
        champion_regression={"tolerance": 0.1},
    )
    assert champion_regression_gate({"mae": 0.9}, {"mae": 1.0}, spec).passed
    assert champion_regression_gate({"mae": 1.05}, {"mae": 1.0}, spec).passed
    worse = champion_regression_gate({"mae": 1.2}, {"mae": 1.0}, spec)
    assert not worse.passed
    assert worse.metadata["shortfall"] == pytest.approx(0.2)
    assert worse.metadata["lower_is_better"] is True


def test_latency_gate_times_the_onnx_bundle_through_the_server_scoring_path(
    bank_model: Pipeline, bank_window: TrainingSet, bank_spec: Spec
) -> None:
    holdout = bank_window.holdout  # target column included: the gate ignores it
    advisory = _with_gates(bank_spec, latency={"max_ms": 1000, "blocking": False})

    generous = latency_gate(bank_model, holdout, advisory)

    figures = generous.metadata
    assert figures["artifact"] == "onnx" and figures["fallback_reason"] == ""
    assert generous.passed and not generous.blocking
    assert MIN_CALLS <= figures["calls"] <= SINGLE_ROW_CALLS
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert figures["batch_rows"] == BATCH_ROWS and figures["batch_p50_ms"] > 0
    assert figures["sklearn_p50_ms"] > 0 and figures["sklearn_calls"] >= MIN_CALLS
    assert figures["max_ms"] == 1000
    assert generous.description.startswith("onnx bundle, server scoring path: single-row p50 ")
    assert f"p50 {figures['p50_ms']:.3f} ms" in generous.description
    assert f"sklearn predict on a one-row DataFrame p50 {figures['sklearn_p50_ms']:.2f}" in (
        generous.description
    )
    # The decision is the serving path's median against the spec's max_ms. Nothing scores a
    # row in a nanosecond, however idle the machine: the same model fails that limit.
    strict = _with_gates(bank_spec, latency={"max_ms": 1e-6, "blocking": True})
    failed = latency_gate(bank_model, holdout, strict)
    assert not failed.passed and failed.blocking
    assert failed.metadata["artifact"] == "onnx"
    assert "over the limit 1e-06 ms" in failed.description


def test_latency_gate_times_the_sklearn_fallback_when_that_is_what_will_serve(
    bank_model: Pipeline, bank_window: TrainingSet, bank_spec: Spec
) -> None:
    """A graph that fails parity is never shipped: the gate times the fallback instead."""
    no_graph = _with_gates(
        bank_spec, parity={"tolerance": 1e-12}, latency={"max_ms": 1000, "blocking": True}
    )
    result = latency_gate(bank_model, bank_window.holdout, no_graph)
    assert result.metadata["artifact"] == "sklearn"
    assert str(result.metadata["fallback_reason"]).startswith("parity gate:")
    assert result.description.startswith("sklearn bundle, server scoring path")
    assert result.passed == (result.metadata["p50_ms"] <= 1000)


def test_measure_bundle_scores_parsed_rows_with_the_loaded_bundle(
    bank_model: Pipeline, bank_window: TrainingSet, bank_spec: Spec, tmp_path: Path
) -> None:
    bundle = build_bundle(
        bank_model,
        bank_spec,
        name="bank",
        version=1,
        fingerprint="fp",
        holdout=bank_window.holdout,
        directory=tmp_path / "b",
    )
    latency = measure_bundle(bundle, bank_window.holdout.head(7))  # cycled to 1,000 rows
    assert latency.artifact == "onnx"
    assert latency.batch_rows == BATCH_ROWS
    assert 0 < latency.single_row_p50_ms <= latency.single_row_p99_ms
    assert latency.figures()["artifact"] == "onnx"


def test_latency_gate_needs_rows(
    bank_model: Pipeline, bank_window: TrainingSet, bank_spec: Spec
) -> None:
    with pytest.raises(ValueError, match="at least one holdout row"):
        latency_gate(bank_model, bank_window.holdout.head(0), bank_spec)


def test_model_size_gate(gated: Spec) -> None:
    small = model_size_gate(1_500_000, gated)
    large = model_size_gate(60 * 1024 * 1024, gated)
    assert small.passed
    assert small.description == "model is 1.43 MB, within the limit 50 MB"
    assert not large.passed
    assert large.blocking
    assert large.description == "model is 60.00 MB, over the limit 50 MB"
    assert large.metadata == {"size_bytes": 62914560, "size_mb": 60.0, "max_mb": 50.0}
