"""Each model gate passes and fails on real figures, and says why in its description."""

from __future__ import annotations

import math

import pytest
from sklearn.pipeline import Pipeline

from ct_platform.data.training_set import TrainingSet
from ct_platform.settings import Spec
from ct_platform.training.gates import (
    LATENCY_CALLS,
    champion_regression_gate,
    latency_gate,
    metric_floor_gate,
    model_size_gate,
)


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


def test_latency_gate_measures_single_row_predict(
    bank_model: Pipeline, bank_window: TrainingSet, bank_spec: Spec
) -> None:
    sample = bank_window.holdout.head(50)  # target column included: the gate ignores it
    advisory = _with_gates(bank_spec, latency={"max_ms": 1000, "blocking": False})
    generous = latency_gate(bank_model, sample, advisory)
    assert generous.passed
    assert not generous.blocking
    assert generous.metadata["calls"] == LATENCY_CALLS
    assert 0 < generous.metadata["p50_ms"] <= generous.metadata["p95_ms"]
    assert f"p50 {generous.metadata['p50_ms']:.2f} ms" in generous.description
    # No pipeline answers in a microsecond: the same model fails an impossible limit.
    strict = _with_gates(bank_spec, latency={"max_ms": 0.001, "blocking": True})
    failed = latency_gate(bank_model, sample.head(5), strict)
    assert not failed.passed
    assert failed.blocking
    assert "over the limit 0.001 ms" in failed.description


def test_latency_gate_needs_rows(
    bank_model: Pipeline, bank_window: TrainingSet, bank_spec: Spec
) -> None:
    with pytest.raises(ValueError, match="at least one sample row"):
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
