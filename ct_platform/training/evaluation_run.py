"""One evaluation: score candidate vs champion on the same holdout, run the gates, record.

The verdict is written to the candidate's model version as tags (`ct.gates_passed`, one
`ct.gate.<name>` = pass|fail and one `ct.gate.<name>.reason` per gate), which is what
`promotion.promote` trusts later, and each gate's numeric figures are logged to its MLflow
run as metrics `gate.<name>.<figure>` (e.g. `gate.champion_regression.p_value`). The
Evidently HTML reports are not on this path (see `evaluation_reports`): promotion never
waits on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
from sklearn.pipeline import Pipeline

from ct_platform.registry.versions import CHAMPION, REFIT_OF_TAG
from ct_platform.settings import Spec
from ct_platform.training.datasets import TrainingSetRef
from ct_platform.training.evaluate import score_by_group
from ct_platform.training.gates import GateResult
from ct_platform.training.promotion import (
    GATES_PASSED_TAG,
    Contender,
    EvaluationOutcome,
    evaluate_candidate,
)

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry
    from ct_platform.registry.versions import ModelVersionInfo

MAX_TAG_CHARS = 5000


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
        champion_comparator(registry, training_set),
        holdout,
        training_set,
        spec,
    )
    _record(registry, candidate, outcome)
    group_figures = _group_figures(model, holdout, spec)
    # On the version's own run too: its model card reads them from there.
    registry.log_metrics(candidate.run_id, group_figures)
    return EvaluationRun(outcome, group_figures)


def champion_comparator(registry: ModelRegistry, training_set: TrainingSetRef) -> Contender | None:
    """The model the candidate is compared with on its holdout: the champion, or a stand-in.

    A whole-window refit learned from its whole window, holdout included. The candidate's
    holdout is the newest rows of its own window, which reach back into older batches
    whenever the newest batch is smaller than the holdout: if the candidate's window shares
    any batch with the serving refit's, scoring the refit there would be (partly) in-sample
    and favour it. Its holdout fit (`ct.refit_of`) stands in: it never saw the newest part of
    its window, which is where the candidate's holdout rows from shared batches lie (same
    holdout fraction, a window at least as new). The outcome's `champion_version` names the
    version actually scored, its `stands_in_for` the serving champion it stood in for. Only
    a window of entirely new batches meets the refit itself.
    """
    info = registry.alias_version(CHAMPION)
    if info is None:
        return None
    learned_from = set(info.tags.get("ct.batches", "").split(","))
    if info.is_refit and learned_from & set(training_set.batch_keys):
        fit = int(info.tags[REFIT_OF_TAG])
        return Contender(fit, registry.load_model(fit), stands_in_for=info.version)
    return Contender(info.version, registry.load_model(info.version))


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
    registry.log_metrics(candidate.run_id, outcome.holdout_figures(), tags=outcome.holdout_tags())
    record_gates(registry, candidate, outcome.gates, promotable=outcome.promotable)


def record_gates(
    registry: ModelRegistry,
    version: ModelVersionInfo,
    gates: Sequence[GateResult],
    *,
    promotable: bool,
    described: Sequence[GateResult] | None = None,
) -> None:
    """Write the verdict of `gates` on `version`: tags, figures as run metrics, description.

    `described` (default: `gates`) are the gates listed in the version's description, e.g.
    the inherited holdout gates next to a refit's own.
    """
    record_gate_verdicts(registry, version, gates)
    registry.set_tags(version.version, {GATES_PASSED_TAG: str(promotable).lower()})
    registry.describe_verdict(
        version.version, promotable=promotable, gates=described if described is not None else gates
    )


def record_gate_verdicts(
    registry: ModelRegistry, version: ModelVersionInfo, gates: Sequence[GateResult]
) -> None:
    """Each gate's verdict and reason as tags on `version`, its figures as run metrics.

    Also for gates judged after promotion (on the exported bundle): they land on the version
    they judge without touching `ct.gates_passed`, the promotion verdict.
    """
    registry.log_metrics(version.run_id, gate_figures(gates))
    registry.set_tags(version.version, gate_tags(gates))


def gate_tags(gates: Sequence[GateResult]) -> dict[str, str]:
    """`ct.gate.<name>` = pass|fail and `ct.gate.<name>.reason` = its one-line description."""
    tags = {}
    for gate in gates:
        tags[f"ct.gate.{gate.name}"] = "pass" if gate.passed else "fail"
        # MLflow caps a model version tag value at 5,000 characters.
        tags[f"ct.gate.{gate.name}.reason"] = gate.description[:MAX_TAG_CHARS]
    return tags


def gate_figures(gates: Sequence[GateResult]) -> dict[str, float]:
    """Every finite numeric figure of every gate, as `gate.<name>.<figure>`."""
    return {
        f"gate.{gate.name}.{key}": float(value)
        for gate in gates
        for key, value in gate.metadata.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }
