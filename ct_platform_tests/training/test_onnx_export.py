"""ONNX export of whole pipelines, the parity gate, and the bundle it decides."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from ct_platform.data.training_set import TrainingSet
from ct_platform.serving.bundle import load_bundle, read_meta
from ct_platform.settings import Spec
from ct_platform.training.bundling import build_bundle
from ct_platform.training.fit import fit_pipeline
from ct_platform.training.onnx_export import (
    OnnxExportError,
    check_parity,
    onnx_input_names,
    pipeline_to_onnx,
)
from ct_platform_tests.serving.conftest import parsed_rows
from ct_platform_tests.training.conftest import synthetic_frame


def test_bank_pipeline_exports_one_input_per_column(bank_model: Pipeline, bank_spec: Spec) -> None:
    onnx_bytes = pipeline_to_onnx(bank_model, bank_spec)
    names = onnx_input_names(onnx_bytes)
    assert len(names) == len(bank_spec.dataset.feature_columns)
    assert names[bank_spec.dataset.feature_columns.index("emp.var.rate")] == "emp_var_rate"
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    kinds = [graph_input.type for graph_input in session.get_inputs()]
    expected = [
        "tensor(float)" if bank_spec.dataset.columns[c].is_numeric else "tensor(string)"
        for c in bank_spec.dataset.feature_columns
    ]
    assert kinds == expected
    assert [output.name for output in session.get_outputs()] == ["label", "probabilities"]


def test_bank_pipeline_passes_parity(
    bank_model: Pipeline, bank_window: TrainingSet, bank_spec: Spec
) -> None:
    onnx_bytes = pipeline_to_onnx(bank_model, bank_spec)
    result = check_parity(bank_model, onnx_bytes, bank_window.holdout, bank_spec)
    assert result.passed and result.reason is None
    assert result.labels_identical
    assert result.max_abs_diff < bank_spec.gates.parity.tolerance
    assert result.tolerance == bank_spec.gates.parity.tolerance
    assert result.n_rows == len(bank_window.holdout)


def test_parity_fails_beyond_the_tolerance(
    bank_model: Pipeline, bank_window: TrainingSet, bank_spec: Spec, tmp_path: Path
) -> None:
    """float32 ONNX vs float64 sklearn differ by ~1e-7: a 1e-12 tolerance must fail."""
    strict_gates = bank_spec.gates.model_copy(
        update={"parity": bank_spec.gates.parity.model_copy(update={"tolerance": 1e-12})}
    )
    strict = bank_spec.model_copy(update={"gates": strict_gates})
    onnx_bytes = pipeline_to_onnx(bank_model, strict)
    result = check_parity(bank_model, onnx_bytes, bank_window.holdout, strict)
    assert not result.passed
    assert "tolerance" in result.reason
    bundle = build_bundle(
        bank_model,
        strict,
        name="bank",
        version=3,
        fingerprint="fp",
        holdout=bank_window.holdout,
        directory=tmp_path / "bundle",
    )
    meta = read_meta(bundle)
    assert not meta.onnx.enabled and meta.onnx.reason.startswith("parity gate:")
    assert meta.parity is not None and meta.parity.max_abs_diff == result.max_abs_diff
    assert not (bundle / "model.onnx").exists()
    model = load_bundle(bundle)
    assert model.backend_name == "sklearn"
    holdout = bank_window.holdout.iloc[:500]
    prediction = model.predict(parsed_rows(holdout, strict))
    features = holdout[strict.dataset.feature_columns]
    assert (prediction.labels == bank_model.predict(features)).all()
    assert np.abs(prediction.proba - bank_model.predict_proba(features)).max() == 0.0


@pytest.mark.parametrize(
    ("task", "estimator", "metric", "n_classes"),
    [
        ("regression", "sklearn.ensemble.HistGradientBoostingRegressor", "rmse", None),
        (
            "classification",
            "sklearn.ensemble.HistGradientBoostingClassifier",
            "balanced_accuracy",
            3,
        ),
    ],
)
def test_other_tasks_export_with_parity(
    synthetic_spec: Callable[[str, str, str], Spec],
    tmp_path: Path,
    task: str,
    estimator: str,
    metric: str,
    n_classes: int | None,
) -> None:
    spec = synthetic_spec(task, estimator, metric)
    frame = synthetic_frame(600, n_classes)
    pipeline = fit_pipeline(frame.iloc[:500], spec)
    holdout = frame.iloc[500:]
    bundle = build_bundle(
        pipeline,
        spec,
        name="s",
        version=1,
        fingerprint="fp",
        holdout=holdout,
        directory=tmp_path / "b",
    )
    meta = read_meta(bundle)
    assert meta.onnx.enabled, meta.onnx.reason
    assert meta.parity.labels_identical and meta.parity.max_abs_diff < 1e-4
    onnx_model, sklearn_model = load_bundle(bundle), load_bundle(bundle, use_onnx=False)
    served = onnx_model.predict(parsed_rows(holdout, spec))
    fallback = sklearn_model.predict(parsed_rows(holdout, spec))
    features = holdout[spec.dataset.feature_columns]
    if task == "regression":
        assert meta.classes is None
        assert np.abs(served.values - pipeline.predict(features)).max() < 1e-4
        assert np.array_equal(fallback.values, pipeline.predict(features))
    else:
        assert meta.classes == [0, 1, 2]
        assert (served.labels == pipeline.predict(features)).all()
        assert (fallback.labels == pipeline.predict(features)).all()


def test_unconvertible_pipeline_gives_a_sklearn_only_bundle(
    synthetic_spec: Callable[[str, str, str], Spec], tmp_path: Path
) -> None:
    spec = synthetic_spec("classification", "sklearn.neighbors.NearestCentroid", "accuracy")
    # No imputer: the registry's skops allowlist does not cover SimpleImputer's numpy.dtype.
    frame = synthetic_frame(300, 2).fillna(0.0)
    features = spec.dataset.feature_columns
    preprocess = ColumnTransformer(
        [
            ("numeric", "passthrough", spec.dataset.numeric_features),
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ["region"],
            ),
        ]
    )
    pipeline = Pipeline([("preprocess", preprocess), ("estimator", NearestCentroid())])
    pipeline.fit(frame[features], frame["target"])
    with pytest.raises(OnnxExportError, match="NearestCentroid"):
        pipeline_to_onnx(pipeline, spec)
    bundle = build_bundle(
        pipeline,
        spec,
        name="nc",
        version=1,
        fingerprint="fp",
        holdout=frame,
        directory=tmp_path / "b",
    )
    meta = read_meta(bundle)
    assert not meta.onnx.enabled and "skl2onnx cannot convert" in meta.onnx.reason
    assert meta.parity is None
    model = load_bundle(bundle)
    assert model.backend_name == "sklearn"
    prediction = model.predict(parsed_rows(frame, spec))
    assert (prediction.labels == pipeline.predict(frame[features])).all()


def test_bundle_records_schema_and_classes(
    bank_model: Pipeline, bank_window: TrainingSet, bank_spec: Spec, tmp_path: Path
) -> None:
    bundle = build_bundle(
        bank_model,
        bank_spec,
        name="bank_marketing",
        version=7,
        fingerprint="abc123",
        holdout=bank_window.holdout.iloc[:1000],
        directory=tmp_path / "b",
    )
    meta = read_meta(bundle)
    assert (meta.name, meta.version, meta.fingerprint, meta.task) == (
        "bank_marketing",
        "7",
        "abc123",
        "classification",
    )
    assert [c.name for c in meta.columns] == bank_spec.dataset.feature_columns
    pdays = next(c for c in meta.columns if c.name == "pdays")
    assert pdays.sentinels == [999] and pdays.type == "int"
    job = next(c for c in meta.columns if c.name == "job")
    assert job.categories == bank_spec.dataset.columns["job"].categories
    assert meta.classes == [0, 1]
    assert meta.onnx.enabled and meta.onnx.input_names[0] == "age"
    assert meta.skops_trusted_types == [
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
    ]
    assert dataclasses.asdict(meta)["parity"]["labels_identical"] is True


def _regression_in_the_hundreds(
    synthetic_spec: Callable[[str, str, str], Spec], **parity: float
) -> tuple[Spec, pd.DataFrame]:
    """HGB regression on targets of 30..1,200 with a feature in the hundreds (a bike-count or
    price shape), optionally with parity settings; returns the spec and a 3,000-row frame."""
    spec = synthetic_spec("regression", "sklearn.ensemble.HistGradientBoostingRegressor", "rmse")
    if parity:
        gates = spec.gates.model_copy(
            update={"parity": spec.gates.parity.model_copy(update=parity)}
        )
        spec = spec.model_copy(update={"gates": gates})
    frame = synthetic_frame(3000, None, seed=2)
    frame["target"] = 600 + 60 * frame["target"]
    frame["x1"] = 100 * frame["x1"]
    return spec, frame


def test_regression_graph_within_float32_rounding_passes_by_default(
    synthetic_spec: Callable[[str, str, str], Spec], tmp_path: Path
) -> None:
    """The issue's example: values in the hundreds, graph off by ~2e-4 (float32 rounding
    alone), over the old absolute-only 1e-4, so a good graph was dropped."""
    spec, frame = _regression_in_the_hundreds(synthetic_spec)
    train, holdout = frame.iloc[:2400], frame.iloc[2400:]
    pipeline = fit_pipeline(train, spec)
    onnx_bytes = pipeline_to_onnx(pipeline, spec)

    result = check_parity(pipeline, onnx_bytes, holdout, spec)

    scale = np.abs(pipeline.predict(holdout[spec.dataset.feature_columns])).max()
    assert 500 < scale < 2000
    assert 1e-4 < result.max_abs_diff < 1e-3  # beyond the old absolute-only default
    assert result.max_rel_diff < 1e-5
    assert result.passed and result.reason is None and result.rows_over == 0
    assert result.relative_tolerance == 1e-5
    assert result.tolerance == pytest.approx(1e-5 * scale)
    # The old rule (absolute 1e-4, nothing relative) drops this good graph, naming figures.
    absolute_only = _regression_in_the_hundreds(synthetic_spec, relative_tolerance=0.0)[0]
    old = check_parity(pipeline, onnx_bytes, holdout, absolute_only)
    assert (old.tolerance, old.relative_tolerance) == (1e-4, 0.0)
    assert not old.passed and old.rows_over > 0
    assert f"on {old.rows_over} of {len(holdout)} holdout rows" in old.reason
    # The bundle serves the graph and records the figures the onnx_parity check reports.
    meta = read_meta(
        build_bundle(
            pipeline,
            spec,
            name="r",
            version=1,
            fingerprint="fp",
            holdout=holdout,
            directory=tmp_path / "b",
        )
    )
    assert meta.onnx.enabled, meta.onnx.reason
    assert meta.parity.passed
    assert (meta.parity.rows_over, meta.parity.rows) == (0, len(holdout))
    assert meta.parity.max_abs_diff == result.max_abs_diff
    assert meta.parity.max_rel_diff == result.max_rel_diff
    assert meta.parity.relative_tolerance == 1e-5


def test_a_wrong_regression_graph_still_fails(
    synthetic_spec: Callable[[str, str, str], Spec], tmp_path: Path
) -> None:
    """A graph of another version (fitted on other rows) is off by far more than rounding:
    the relative tolerance does not let it through, and the bundle falls back to sklearn."""
    spec, frame = _regression_in_the_hundreds(synthetic_spec)
    holdout = frame.iloc[2400:]
    pipeline = fit_pipeline(frame.iloc[:2400], spec)
    other_version = fit_pipeline(frame.iloc[:1200], spec)

    result = check_parity(pipeline, pipeline_to_onnx(other_version, spec), holdout, spec)

    assert not result.passed
    assert result.rows_over > len(holdout) // 2
    assert result.max_abs_diff > 1.0 and result.max_rel_diff > 1e-3
    assert "beyond the tolerance" in result.reason
    assert f"max abs diff {result.max_abs_diff:.3g}" in result.reason


def test_parity_tolerances_follow_the_task_unless_the_spec_sets_them(bank_spec: Spec) -> None:
    parity = bank_spec.gates.parity.model_copy(update={"tolerance": None})
    assert parity.tolerances("classification", 1.0) == (1e-4, 0.0)
    assert parity.tolerances("regression", 400.0) == (pytest.approx(4e-3), 1e-5)
    assert parity.tolerances("regression", 3.0) == (1e-4, 1e-5)  # never below 1e-4
    explicit = parity.model_copy(update={"tolerance": 0.5, "relative_tolerance": 1e-3})
    assert explicit.tolerances("regression", 400.0) == (0.5, 1e-3)
    assert explicit.tolerances("classification", 1.0) == (0.5, 1e-3)
