"""One evaluation: score candidate vs champion, write Evidently reports, record the verdict.

The verdict is written to the candidate's model version as tags (`ct.gates_passed`, one
`ct.gate.<name>` per gate), which is what `promotion.promote` trusts later.
"""

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
from ct_platform.training.datasets import TrainingSetRef
from ct_platform.training.evaluate import score_by_group
from ct_platform.training.promotion import (
    CHAMPION,
    GATES_PASSED_TAG,
    Contender,
    EvaluationOutcome,
    evaluate_candidate,
)

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry, ModelVersionInfo


@dataclass(frozen=True)
class EvaluationRun:
    outcome: EvaluationOutcome
    reports: dict[str, Path]
    report_figures: dict[str, float]


def run_evaluation(
    candidate: ModelVersionInfo, training_set: TrainingSetRef, registry: ModelRegistry, spec: Spec
) -> EvaluationRun:
    model = registry.load_model(candidate.version)
    holdout = training_set.load_holdout()
    outcome = evaluate_candidate(
        Contender(candidate.version, model),
        candidate.run_id,
        _current_champion(registry),
        holdout,
        registry.model_size_bytes(model),
        spec,
    )
    report_dir = Paths.from_env().reports / f"{spec.model.name}-v{candidate.version}"
    reports, figures = _write_reports(model, training_set, holdout, spec, report_dir)
    figures.update(_group_figures(model, holdout, spec))
    _record(registry, candidate, outcome, reports)
    return EvaluationRun(outcome, reports, figures)


def _current_champion(registry: ModelRegistry) -> Contender | None:
    info = registry.alias_version(CHAMPION)
    return Contender(info.version, registry.load_model(info.version)) if info else None


def _write_reports(
    model: Pipeline,
    training_set: TrainingSetRef,
    holdout: pd.DataFrame,
    spec: Spec,
    report_dir: Path,
) -> tuple[dict[str, Path], dict[str, float]]:
    report_dir.mkdir(parents=True, exist_ok=True)
    quality_path = report_dir / "model_quality.html"
    drift_path = report_dir / "data_drift.html"
    quality = model_quality_report(_scored(model, holdout, spec), spec, quality_path)
    newest = pd.read_parquet(training_set.newest_batch)
    drift = data_drift_report(training_set.load_train(), newest, spec, drift_path)
    figures = {f"evidently/{name}": value for name, value in quality.items()}
    figures["drift/newest_batch_share"] = drift.drift_share
    figures["drift/newest_batch_columns"] = float(drift.n_drifted)
    return {"model_quality": quality_path, "data_drift": drift_path}, figures


def _scored(model: Pipeline, holdout: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """The holdout with the model's predictions in the columns Evidently is told about."""
    features = holdout[spec.dataset.feature_columns]
    scored = holdout.copy()
    scored[PREDICTION_COLUMN] = model.predict(features)
    if spec.dataset.task == "classification" and len(model.classes_) == 2:
        scored[PROBA_COLUMN] = model.predict_proba(features)[:, 1]
    return scored


def _group_figures(model: Pipeline, holdout: pd.DataFrame, spec: Spec) -> dict[str, float]:
    """The primary metric per value of the sensitive column: a fairness view in the UI."""
    if spec.dataset.sensitive_column is None:
        return {}
    return {
        f"group/{group}/{name}": value
        for group, figures in score_by_group(model, holdout, spec).items()
        for name, value in figures.items()
    }


def _record(
    registry: ModelRegistry,
    candidate: ModelVersionInfo,
    outcome: EvaluationOutcome,
    reports: dict[str, Path],
) -> None:
    registry.log_metrics(candidate.run_id, {f"holdout_{k}": v for k, v in outcome.metrics.items()})
    for path in reports.values():
        registry.log_artifact(candidate.run_id, path, artifact_path="reports")
    gate_tags = {f"ct.gate.{g.name}": "pass" if g.passed else "fail" for g in outcome.gates}
    verdict = {GATES_PASSED_TAG: str(outcome.promotable).lower()}
    registry.set_tags(candidate.version, {**gate_tags, **verdict})
