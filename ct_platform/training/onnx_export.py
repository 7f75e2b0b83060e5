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

# Opset every onnxruntime >= 1.17 runs; the ai.onnx.ml domain carries the tree ensembles.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


class OnnxExportError(RuntimeError):
    """The pipeline cannot be expressed as an ONNX graph (the message says why)."""


@dataclass(frozen=True)
class ParityResult:
    """ONNX vs sklearn on the holdout. Diffs are over every compared value (probabilities of
    every class, or regression values); `rows_over` counts rows with a value outside
    `tolerance + relative_tolerance * |sklearn|`."""

    labels_identical: bool
    max_abs_diff: float
    max_rel_diff: float
    rows_over: int
    tolerance: float
    relative_tolerance: float
    n_rows: int
    reason: str | None

    @property
    def passed(self) -> bool:
        return self.reason is None


def pipeline_to_onnx(pipeline: Pipeline, spec: Spec) -> bytes:
    """Serialized ONNX model of the whole fitted pipeline; raises `OnnxExportError`."""
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
    """Labels must match exactly; probabilities (or regression values) must be close in the
    sense of `numpy.isclose` with the spec's tolerances for the task (`ParityGate`)."""
    features = holdout[spec.dataset.feature_columns]
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(None, onnx_feeds(features, spec, onnx_input_names(onnx_bytes)))
    if is_classifier(pipeline):
        onnx_labels, onnx_values = onnx_outputs[0].ravel(), onnx_outputs[1]
        labels_identical = bool(np.array_equal(onnx_labels, pipeline.predict(features)))
        sklearn_values = pipeline.predict_proba(features)
    else:
        labels_identical = True
        onnx_values, sklearn_values = onnx_outputs[0], pipeline.predict(features)
    output_scale = float(np.nanmax(np.abs(sklearn_values), initial=0.0))
    tolerance, relative_tolerance = spec.gates.parity.tolerances(spec.dataset.task, output_scale)
    gap = _Gap.of(onnx_values, sklearn_values, tolerance, relative_tolerance)
    reason = None
    if not labels_identical:
        reason = "ONNX labels differ from sklearn labels on the holdout"
    elif gap.rows_over:
        reason = (
            f"ONNX outputs differ from sklearn beyond the tolerance ({tolerance:g} + "
            f"{relative_tolerance:g} x |sklearn|) on {gap.rows_over} of {len(features)} "
            f"holdout rows: max abs diff {gap.max_abs:.3g}, max rel diff {gap.max_rel:.3g}"
        )
    return ParityResult(
        labels_identical=labels_identical,
        max_abs_diff=gap.max_abs,
        max_rel_diff=gap.max_rel,
        rows_over=gap.rows_over,
        tolerance=tolerance,
        relative_tolerance=relative_tolerance,
        n_rows=len(features),
        reason=reason,
    )


@dataclass(frozen=True)
class _Gap:
    max_abs: float
    max_rel: float
    rows_over: int

    @classmethod
    def of(
        cls, onnx_values: np.ndarray, sklearn_values: np.ndarray, atol: float, rtol: float
    ) -> _Gap:
        """Value gaps, one row per holdout row (a column per class for probabilities)."""
        sklearn_values = np.asarray(sklearn_values, dtype=np.float64)
        sklearn_values = sklearn_values.reshape(len(sklearn_values), -1)
        onnx_values = np.asarray(onnx_values, dtype=np.float64).reshape(sklearn_values.shape)
        if onnx_values.size == 0:
            return cls(0.0, 0.0, 0)
        diff = np.abs(onnx_values - sklearn_values)
        # numpy.isclose semantics; NaN on either side is never close (reported as an
        # infinite gap).
        close = np.isclose(onnx_values, sklearn_values, rtol=rtol, atol=atol)
        rows_over = int((~close).any(axis=1).sum())
        if np.isnan(diff).any():
            return cls(float("inf"), float("inf"), rows_over)
        scale = np.abs(sklearn_values)
        nonzero = scale > 0
        max_rel = float((diff[nonzero] / scale[nonzero]).max()) if nonzero.any() else 0.0
        return cls(float(diff.max()), max_rel, rows_over)
