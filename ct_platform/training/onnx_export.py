"""Convert a fitted pipeline to one ONNX graph and check it predicts what sklearn predicts.

The graph has one input per feature column, in `spec.dataset.feature_columns` order: numeric
columns as `float32 [None, 1]`, categorical columns as `string [None, 1]`. skl2onnx renames
inputs it considers invalid (`emp.var.rate` -> `emp_var_rate`), so callers bind by position;
`onnx_input_names` reads the names the graph actually uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline

from ct_platform.settings import Spec
from ct_platform.training.preparation import without_preparation

# Opset every onnxruntime >= 1.17 runs; the ai.onnx.ml domain carries the tree ensembles.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


class OnnxExportError(RuntimeError):
    """The pipeline cannot be expressed as an ONNX graph (the message says why)."""


@dataclass(frozen=True)
class ParityResult:
    labels_identical: bool
    max_abs_diff: float
    tolerance: float
    passed: bool
    n_rows: int
    reason: str | None


def pipeline_to_onnx(pipeline: Pipeline, spec: Spec) -> bytes:
    """Serialized ONNX model of the fitted pipeline; raises `OnnxExportError`.

    The graph starts after the input preparation step, which the server does itself.
    """
    pipeline = without_preparation(pipeline)
    dataset = spec.dataset
    initial_types = [
        (
            name,
            FloatTensorType([None, 1])
            if dataset.columns[name].is_numeric
            else StringTensorType([None, 1]),
        )
        for name in dataset.feature_columns
    ]
    # zipmap off: probabilities come back as one float tensor, not a list of dicts.
    options = {id(pipeline): {"zipmap": False}} if is_classifier(pipeline) else None
    try:
        model = to_onnx(
            pipeline, initial_types=initial_types, options=options, target_opset=TARGET_OPSET
        )
    except Exception as exc:  # skl2onnx raises many types (RuntimeError, NotImplementedError...)
        # Some converter messages dump whole tree ensembles: keep the first line, bounded.
        detail = str(exc).split("\n", 1)[0][:300]
        raise OnnxExportError(
            f"skl2onnx cannot convert this pipeline: {type(exc).__name__}: {detail}"
        ) from exc
    return model.SerializeToString()


def onnx_input_names(onnx_bytes: bytes) -> list[str]:
    return [graph_input.name for graph_input in onnx.load_from_string(onnx_bytes).graph.input]


def onnx_feeds(frame: pd.DataFrame, spec: Spec, input_names: list[str]) -> dict[str, np.ndarray]:
    """ONNX inputs for a cleaned frame (numeric float64 with NaN, categoricals as str)."""
    feeds = {}
    for input_name, column in zip(input_names, spec.dataset.feature_columns, strict=True):
        values = frame[column].to_numpy()
        if spec.dataset.columns[column].is_numeric:
            feeds[input_name] = values.astype(np.float32).reshape(-1, 1)
        else:
            feeds[input_name] = values.astype(str).astype(object).reshape(-1, 1)
    return feeds


def check_parity(
    pipeline: Pipeline, onnx_bytes: bytes, holdout: pd.DataFrame, spec: Spec
) -> ParityResult:
    """Labels must match exactly; probabilities (or regression values) within the tolerance."""
    tolerance = spec.gates.parity.tolerance
    features = holdout[spec.dataset.feature_columns]
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(None, onnx_feeds(features, spec, onnx_input_names(onnx_bytes)))
    if is_classifier(pipeline):
        onnx_labels, onnx_proba = onnx_outputs[0].ravel(), onnx_outputs[1]
        sklearn_labels = pipeline.predict(features)
        labels_identical = bool(np.array_equal(onnx_labels, sklearn_labels))
        max_abs_diff = _max_abs_diff(onnx_proba, pipeline.predict_proba(features))
    else:
        labels_identical = True
        max_abs_diff = _max_abs_diff(onnx_outputs[0].ravel(), pipeline.predict(features))
    reason = _parity_failure(labels_identical, max_abs_diff, tolerance)
    return ParityResult(
        labels_identical=labels_identical,
        max_abs_diff=max_abs_diff,
        tolerance=tolerance,
        passed=reason is None,
        n_rows=len(features),
        reason=reason,
    )


def _max_abs_diff(onnx_values: np.ndarray, sklearn_values: np.ndarray) -> float:
    onnx_values = np.asarray(onnx_values, dtype=np.float64)
    sklearn_values = np.asarray(sklearn_values, dtype=np.float64).reshape(onnx_values.shape)
    if onnx_values.size == 0:
        return 0.0
    # NaN anywhere means the graph and the pipeline disagree: report it as an infinite gap.
    diff = np.abs(onnx_values - sklearn_values)
    return float("inf") if np.isnan(diff).any() else float(diff.max())


def _parity_failure(labels_identical: bool, max_abs_diff: float, tolerance: float) -> str | None:
    if not labels_identical:
        return "ONNX labels differ from sklearn labels on the holdout"
    if max_abs_diff > tolerance:
        return f"ONNX outputs differ from sklearn by {max_abs_diff:.3g} (tolerance {tolerance:g})"
    return None
