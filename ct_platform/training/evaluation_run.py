"""One evaluation: score candidate vs champion on the same holdout, run the gates, record.

The verdict is written to the candidate's model version as tags (`ct.gates_passed`, one
`ct.gate.<name>` per gate), which is what `promotion.promote` trusts later. The Evidently
HTML reports are not on this path (see `evaluation_reports`): promotion never waits on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
from sklearn.pipeline import Pipeline

from ct_platform.registry.versions import CHAMPION
from ct_platform.settings import Spec
from ct_platform.training.datasets import TrainingSetRef
from ct_platform.training.evaluate import score_by_group
from ct_platform.training.promotion import (
    GATES_PASSED_TAG,
    Contender,
    EvaluationOutcome,
    evaluate_candidate,
)

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry
    from ct_platform.registry.versions import ModelVersionInfo


@dataclass(frozen=True)
class EvaluationRun:
    outcome: EvaluationOutcome
    # The primary metric and row count per value of the sensitive column.
    group_figures: dict[str, float]


def run_evaluation(
    candidate: ModelVersionInfo, training_set: TrainingSetRef, registry: ModelRegistry, spec: Spec
) -> EvaluationRun:
    """Score `candidate` on its own training set's holdout and record the verdict on it."""
    if candidate.fingerprint != training_set.fingerprint:
        raise ValueError(
            f"version {candidate.version} was trained on data {candidate.fingerprint}, not on "
            f"the training set given ({training_set.fingerprint}): refusing to score it there"
        )
    model = registry.load_model(candidate.version)
    holdout = training_set.load_holdout()
    outcome = evaluate_candidate(
        Contender(candidate.version, model),
        candidate.run_id,
        _current_champion(registry),
        holdout,
        training_set,
        registry.model_size_bytes(model),
        spec,
    )
    _record(registry, candidate, outcome)
    group_figures = _group_figures(model, holdout, spec)
    # On the version's own run too: its model card reads them from there.
    registry.log_metrics(candidate.run_id, group_figures)
    return EvaluationRun(outcome, group_figures)


def _current_champion(registry: ModelRegistry) -> Contender | None:
    info = registry.alias_version(CHAMPION)
    return Contender(info.version, registry.load_model(info.version)) if info else None


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
    registry: ModelRegistry, candidate: ModelVersionInfo, outcome: EvaluationOutcome
) -> None:
    registry.log_metrics(candidate.run_id, {f"holdout_{k}": v for k, v in outcome.metrics.items()})
    gate_tags = {f"ct.gate.{g.name}": "pass" if g.passed else "fail" for g in outcome.gates}
    # MLflow caps a model-version tag at 5,000 characters; the check metadata has it all.
    gate_tags |= {f"ct.gate.{g.name}.reason": g.description[:4000] for g in outcome.gates}
    verdict = {GATES_PASSED_TAG: str(outcome.promotable).lower()}
    registry.set_tags(candidate.version, {**gate_tags, **verdict})
    registry.describe_verdict(candidate.version, promotable=outcome.promotable, gates=outcome.gates)
