"""Evidently reports for an evaluated candidate: model quality on the holdout, and drift of
the newest batch against the training data. Saved as HTML and logged to the MLflow run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from sklearn.pipeline import Pipeline

from ct_platform.monitoring.evidently_reports import (
    PREDICTION_COLUMN,
    PROBA_COLUMN,
    data_drift_report,
    model_quality_report,
)
from ct_platform.settings import Paths, Spec

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry
    from ct_platform.training.datasets import TrainingSetRef


@dataclass(frozen=True)
class EvaluationReports:
    paths: dict[str, Path]
    figures: dict[str, float]


def write_evaluation_reports(
    version: int, run_id: str, training_set: TrainingSetRef, registry: ModelRegistry, spec: Spec
) -> EvaluationReports:
    """Reports of `version` (MLflow run `run_id`) on its own training set and holdout."""
    model = registry.load_model(version)
    holdout = training_set.load_holdout()
    report_dir = Paths.from_env().reports / f"{spec.model.name}-v{version}"
    report_dir.mkdir(parents=True, exist_ok=True)
    quality_path = report_dir / "model_quality.html"
    drift_path = report_dir / "data_drift.html"
    quality = model_quality_report(_scored(model, holdout, spec), spec, quality_path)
    newest = pd.read_parquet(training_set.newest_batch)
    drift = data_drift_report(training_set.load_train(), newest, spec, drift_path)
    figures = {f"evidently/{name}": value for name, value in quality.items()}
    figures["drift/newest_batch_share"] = drift.drift_share
    figures["drift/newest_batch_columns"] = float(drift.n_drifted)
    figures["holdout_rows"] = float(len(holdout))
    paths = {"model_quality": quality_path, "data_drift": drift_path}
    for path in paths.values():
        registry.log_artifact(run_id, path, artifact_path="reports")
    return EvaluationReports(paths, figures)


def _scored(model: Pipeline, holdout: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """The holdout with the model's predictions in the columns Evidently is told about."""
    features = holdout[spec.dataset.feature_columns]
    scored = holdout.copy()
    scored[PREDICTION_COLUMN] = model.predict(features)
    if spec.dataset.task == "classification" and len(model.classes_) == 2:
        scored[PROBA_COLUMN] = model.predict_proba(features)[:, 1]
    return scored
