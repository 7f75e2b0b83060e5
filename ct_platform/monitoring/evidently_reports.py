"""Full Evidently reports: model quality on a scored holdout, data drift between two frames.

These run the real Evidently presets and save their HTML, so a person can open what the numbers
came from. Columns are always declared from the spec (never Evidently's auto-inference): an
int column with few values would otherwise be guessed categorical, and a category spelled with
digits guessed numeric, which changes the drift method Evidently picks.

For frames of the size of one batch against a training set, full Evidently is fast enough; for
a million rows use `ct_platform.monitoring.drift.detect_drift`, which reproduces Evidently's
default per-column method choice on a sample and on saved reference sketches.

Prediction columns: a frame handed to `model_quality_report` carries the target under its spec
name plus `PREDICTION_COLUMN` (the predicted label, or the predicted value for regression)
and/or `PROBA_COLUMN` (probability of the positive class, binary classification only).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import pandas as pd
from evidently import (
    BinaryClassification,
    DataDefinition,
    Dataset,
    MulticlassClassification,
    Regression,
    Report,
)
from evidently.core.report import Snapshot
from evidently.legacy.calculations import stattests
from evidently.metrics import ValueDrift
from evidently.presets import ClassificationPreset, DataDriftPreset, RegressionPreset

from ct_platform.monitoring.frames import PREDICTION_COLUMN, PROBA_COLUMN
from ct_platform.monitoring.results import ColumnDrift, DriftResult, summarise
from ct_platform.settings import DatasetSpec, Spec

__all__ = [
    "PREDICTION_COLUMN",
    "PROBA_COLUMN",
    "DriftSummary",
    "data_definition",
    "data_drift_report",
    "evidently_drift",
    "evidently_value_drift",
    "model_quality_report",
]

# Rows per side in `evidently_value_drift`'s HTML: plenty for the plots, seconds to render.
HTML_SAMPLE_ROWS = 20_000

PredictionKind = Literal["label", "proba", "both"] | None

# The same shape as the fast check's result, so callers handle both verdicts alike.
DriftSummary = DriftResult

# Evidently metric type -> headline key. Dict-valued metrics ({"mean", "std"}) report the mean.
_HEADLINE_METRICS = {
    "Accuracy": "accuracy",
    "Precision": "precision",
    "Recall": "recall",
    "F1Score": "f1",
    "RocAuc": "roc_auc",
    "LogLoss": "log_loss",
    "MeanError": "mean_error",
    "MAE": "mae",
    "RMSE": "rmse",
    "R2Score": "r2",
    "MAPE": "mape",
    "AbsMaxError": "abs_max_error",
}


def data_definition(
    dataset: DatasetSpec, *, include_target: bool, prediction: PredictionKind
) -> DataDefinition:
    """Evidently column mapping built from the spec's column types.

    With a target and predictions, the task mapping (classification/regression) is declared so
    the quality presets can run. Without a target, prediction columns are declared as plain
    columns (label categorical, probability/value numeric) so their drift can be measured.
    """
    numerical = list(dataset.numeric_features)
    categorical = list(dataset.categorical_features)
    if include_target and prediction is not None:
        return DataDefinition(
            numerical_columns=numerical,
            categorical_columns=categorical,
            **_task_mapping(dataset, prediction),
        )
    regression = dataset.task == "regression"
    if include_target:
        (numerical if regression else categorical).append(dataset.target)
    if prediction in ("label", "both"):
        (numerical if regression else categorical).append(PREDICTION_COLUMN)
    if prediction in ("proba", "both"):
        numerical.append(PROBA_COLUMN)
    return DataDefinition(numerical_columns=numerical, categorical_columns=categorical)


def _task_mapping(dataset: DatasetSpec, prediction: Literal["label", "proba", "both"]) -> dict:
    labels = PREDICTION_COLUMN if prediction in ("label", "both") else None
    probas = PROBA_COLUMN if prediction in ("proba", "both") else None
    if dataset.task == "regression":
        if prediction != "label":
            raise ValueError("a regression model predicts values: use prediction='label'")
        return {"regression": [Regression(target=dataset.target, prediction=PREDICTION_COLUMN)]}
    classes = dataset.target_labels
    if classes is not None and len(classes) > 2:
        if probas is not None:
            raise ValueError("multiclass quality is computed from predicted labels only")
        task = MulticlassClassification(target=dataset.target, prediction_labels=labels)
        return {"classification": [task]}
    # Binary: the positive class is the last declared label (1 for [0, 1], "yes" for [no, yes]).
    positive = classes[-1] if classes else 1
    task = BinaryClassification(
        target=dataset.target,
        prediction_labels=labels,
        prediction_probas=probas,
        pos_label=positive,
    )
    return {"classification": [task]}


def model_quality_report(frame: pd.DataFrame, spec: Spec, html_path: Path) -> dict[str, float]:
    """Evidently quality preset for the spec's task on a scored frame; saves HTML.

    Returns the headline numbers, e.g. accuracy/precision/recall/f1/roc_auc/log_loss for
    classification (roc_auc and log_loss only when probabilities are present) or
    mae/rmse/r2/mean_error/mape/abs_max_error for regression.
    """
    dataset = spec.dataset
    prediction = _prediction_kind(frame)
    definition = data_definition(dataset, include_target=True, prediction=prediction)
    preset = ClassificationPreset() if dataset.task == "classification" else RegressionPreset()
    columns = [*dataset.feature_columns, dataset.target, *_prediction_columns(prediction)]
    snapshot = Report([preset]).run(_dataset(frame[columns], definition), None)
    _save_html(snapshot, html_path)
    return _headline(snapshot)


def _prediction_kind(frame: pd.DataFrame) -> Literal["label", "proba", "both"]:
    has_label, has_proba = PREDICTION_COLUMN in frame, PROBA_COLUMN in frame
    if has_label and has_proba:
        return "both"
    if has_label:
        return "label"
    if has_proba:
        return "proba"
    raise ValueError(f"frame has neither '{PREDICTION_COLUMN}' nor '{PROBA_COLUMN}' column")


def _prediction_columns(prediction: PredictionKind) -> list[str]:
    return {
        "label": [PREDICTION_COLUMN],
        "proba": [PROBA_COLUMN],
        "both": [PREDICTION_COLUMN, PROBA_COLUMN],
        None: [],
    }[prediction]


def _headline(snapshot: Snapshot) -> dict[str, float]:
    numbers: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        metric_type = metric["config"]["type"].rsplit(":", 1)[-1]
        key = _HEADLINE_METRICS.get(metric_type)
        if key is None:
            continue
        value = metric["value"]
        numbers[key] = float(value["mean"] if isinstance(value, dict) else value)
    return numbers


def data_drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, spec: Spec, html_path: Path
) -> DriftSummary:
    """Evidently `DataDriftPreset` (default methods) on the spec's features; saves HTML."""
    threshold = spec.monitoring.drift_share_threshold
    summary, snapshot = evidently_drift(
        reference, current, spec.dataset, drift_share_threshold=threshold
    )
    _save_html(snapshot, html_path)
    return summary


def evidently_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    dataset: DatasetSpec,
    *,
    drift_share_threshold: float,
) -> tuple[DriftSummary, Snapshot]:
    """Run `DataDriftPreset` with default methods; the verdicts and the snapshot (for HTML).

    The per-column verdicts are Evidently's own test outcomes, so p-value methods (used below
    1,000 reference rows) and distance methods (above) are each read in their own direction.
    A column with no values at all on either side (e.g. `pdays` in a period when nobody had
    been contacted before) has no distribution to compare: Evidently refuses it, so it is left
    out of the verdicts and of the drift share.
    """
    definition = data_definition(dataset, include_target=False, prediction=None)
    features = dataset.feature_columns
    comparable = [c for c in features if reference[c].notna().any() and current[c].notna().any()]
    preset = DataDriftPreset(columns=comparable, drift_share=drift_share_threshold)
    report = Report([preset], include_tests=True)
    snapshot = report.run(
        _dataset(current[features], definition), _dataset(reference[features], definition)
    )
    return summarise(_column_verdicts(snapshot), drift_share_threshold), snapshot


def evidently_value_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    dataset: DatasetSpec,
    html_path: Path,
    *,
    verdict: DriftResult,
    sample_rows: int = HTML_SAMPLE_ROWS,
) -> None:
    """An HTML drift report to go with a fast-check verdict, on samples of both frames.

    One preset-free `ValueDrift` per column, told the method and threshold the fast check
    used, so a reader sees the same kind of score the verdict came from (on a sample of
    `sample_rows`, the scores differ from the verdict's by sampling error only). Columns
    the verdict left out (no values on one side) are left out here too.
    """
    definition = data_definition(dataset, include_target=False, prediction=None)
    metrics = [
        ValueDrift(column=name, method=column.method, threshold=column.threshold)
        for name, column in verdict.columns.items()
    ]
    features = dataset.feature_columns
    snapshot = Report(metrics).run(
        _dataset(_sample(current[features], sample_rows), definition),
        _dataset(_sample(reference[features], sample_rows), definition),
    )
    _save_html(snapshot, html_path)


def _sample(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    return frame.sample(n=rows, random_state=0) if len(frame) > rows else frame


def _column_verdicts(snapshot: Snapshot) -> dict[str, ColumnDrift]:
    result = snapshot.dict()
    drifted_by_metric = {
        test["metric_config"]["metric_id"]: test["status"].value == "FAIL"
        for test in result["tests"]
        if test["id"] == "drift"
    }
    columns: dict[str, ColumnDrift] = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if not config["type"].endswith(":ValueDrift"):
            continue
        columns[config["column"]] = ColumnDrift(
            method=_stattest_names().get(config["method"], config["method"]),
            score=float(metric["value"]),
            threshold=float(config["threshold"]),
            drift=drifted_by_metric[metric["id"]],
        )
    return columns


@cache
def _stattest_names() -> dict[str, str]:
    """Evidently reports the display name ("Wasserstein distance (normed)"); we use the short
    registered name ("wasserstein"), as the fast check and Evidently's own options do."""
    return {
        test.display_name: test.name
        for test in vars(stattests).values()
        if isinstance(test, stattests.StatTest)
    }


def _dataset(frame: pd.DataFrame, definition: DataDefinition) -> Dataset:
    return Dataset.from_pandas(frame, data_definition=definition)


def _save_html(snapshot: Snapshot, html_path: Path) -> None:
    html_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html_path))
