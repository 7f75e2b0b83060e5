"""Each model gate passes and fails on real figures, and says why in its description."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from sklearn.pipeline import Pipeline

from ct_platform.data.training_set import TrainingSet
from ct_platform.settings import Spec
from ct_platform.training.bundling import build_bundle
from ct_platform.training.gates import (
    champion_regression_gate,
    judge_resources,
    metric_floor_gate,
    model_size_gate,
    resources_gate,
)
from ct_platform.training.latency import (
    BATCH_ROWS,
    MIN_CALLS,
    SINGLE_ROW_CALLS,
    measure_in_subprocess,
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
        resources={"max_latency_ms": 25, "blocking": False},
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
        "champion_under_floor": False,
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
    assert result.description == (
        "no champion yet: nothing to compare with (candidate roc_auc 0.6200)"
    )


def test_floor_is_symmetric_when_the_champion_is_under_it_too(gated: Spec) -> None:
    """Issue 9: the floor rejected candidates while a champion scoring lower kept serving."""
    better = metric_floor_gate({"roc_auc": 0.62}, gated, {"roc_auc": 0.58})
    assert better.passed
    assert better.metadata["champion_under_floor"] is True
    assert better.metadata["champion_value"] == 0.58
    assert "not held out by the floor alone" in better.description
    assert "ALERT: the serving champion (0.5800) is under its floor" in better.description
    # A candidate worse than that champion is still held out, with the alert too.
    worse = metric_floor_gate({"roc_auc": 0.55}, gated, {"roc_auc": 0.58})
    assert not worse.passed and worse.metadata["champion_under_floor"] is True
    # A champion above the floor changes nothing: the candidate alone misses it.
    alone = metric_floor_gate({"roc_auc": 0.62}, gated, {"roc_auc": 0.70})
    assert not alone.passed and alone.metadata["champion_under_floor"] is False
    assert alone.description == "roc_auc 0.6200 misses the floor 0.6500"
    # An absolute floor (symmetric: false) holds the better candidate out, alert included.
    absolute = _with_gates(gated, metric_floor={"symmetric": False})
    held = metric_floor_gate({"roc_auc": 0.62}, absolute, {"roc_auc": 0.58})
    assert not held.passed and held.metadata["champion_under_floor"] is True


@pytest.fixture(scope="module")
def bank_bundle(
    bank_model: Pipeline, bank_window: TrainingSet, bank_spec: Spec, tmp_path_factory
) -> Path:
    """The bank model's serving bundle (ONNX graph, parity checked), built once."""
    return build_bundle(
        bank_model,
        bank_spec,
        name="bank",
        version=1,
        fingerprint="fp",
        holdout=bank_window.holdout,
        directory=tmp_path_factory.mktemp("bundle") / "b",
    )


def test_resources_are_measured_in_a_fresh_process_and_judged(
    bank_bundle: Path, bank_window: TrainingSet, bank_spec: Spec
) -> None:
    usage = measure_in_subprocess(bank_bundle, bank_window.holdout.head(7))  # cycled to 1,000 rows
    assert usage.artifact == "onnx"
    assert MIN_CALLS <= usage.single_row_calls <= SINGLE_ROW_CALLS
    assert 0 < usage.single_row_p50_ms <= usage.single_row_p99_ms
    assert usage.batch_rows == BATCH_ROWS and usage.batch_p50_ms > 0
    # The measuring process imports what the server imports: tens of MB, never nothing.
    assert usage.peak_rss_mb > 10

    generous = judge_resources(usage, _with_gates(bank_spec, resources={"blocking": True}))
    assert generous.passed == (usage.single_row_p50_ms <= 100 and usage.peak_rss_mb <= 2048)
    assert generous.metadata["peak_rss_mb"] == usage.peak_rss_mb
    assert generous.metadata["max_memory_mb"] == 2048
    tiny = _with_gates(
        bank_spec,
        resources={
            "max_latency_ms": 0.001,
            "max_batch_latency_ms": 0.001,
            "max_memory_mb": 1,
            "blocking": True,
        },
    )
    failed = judge_resources(usage, tiny)
    assert not failed.passed and failed.blocking
    assert f"single-row p50 {usage.single_row_p50_ms:.3f} ms over 0.001 ms" in failed.description
    assert f"1000-row p50 {usage.batch_p50_ms:.2f} ms over 0.001 ms" in failed.description
    assert f"peak memory {usage.peak_rss_mb:.1f} MB over 1 MB" in failed.description


def test_a_bundle_that_cannot_be_measured_fails_the_resource_gate(
    bank_bundle: Path, bank_window: TrainingSet, bank_spec: Spec, tmp_path: Path
) -> None:
    bundle = Path(shutil.copytree(bank_bundle, tmp_path / "b"))
    with (bundle / "model.onnx").open("ab") as graph:
        graph.write(b"tampered")  # the server refuses it: so does the measuring process

    result = resources_gate(bundle, bank_window.holdout.head(3), bank_spec)

    assert not result.passed
    assert result.description.startswith(f"not measured: measuring {bundle} failed (exit 1)")
    assert "model.onnx" in result.description


def test_model_size_gate(gated: Spec) -> None:
    small = model_size_gate(1_500_000, gated)
    large = model_size_gate(60 * 1024 * 1024, gated)
    assert small.passed
    assert small.description == "model is 1.43 MB, within the limit 50 MB"
    assert not large.passed
    assert large.blocking
    assert large.description == "model is 60.00 MB, over the limit 50 MB"
    assert large.metadata == {"size_bytes": 62914560, "size_mb": 60.0, "max_mb": 50.0}
