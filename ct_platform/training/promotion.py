"""Champion vs challenger: score both on the same holdout, run the gates, promote or refuse.

The holdout gates (metric floor, champion comparison) judge the holdout fit; what is
promoted is its whole-window refit, which inherits this verdict and passes the artifact
gates itself (`training.refit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ct_platform.registry.versions import CHAMPION
from ct_platform.settings import Spec
from ct_platform.training.datasets import TrainingSetRef
from ct_platform.training.gates import GateResult, champion_regression_gate, metric_floor_gate

if TYPE_CHECKING:  # heavy: the code location imports this module for its types only
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from ct_platform.registry.mlflow_registry import ModelRegistry

GATES_PASSED_TAG = "ct.gates_passed"
# Set on a version when it became champion: a version once promoted is never re-promoted by
# a run resuming a killed promotion (`training.refit.promotion_pending`).
PROMOTED_TAG = "ct.promoted_by"


class PromotionRefused(RuntimeError):
    """The candidate failed a blocking gate; the champion alias stays where it is."""


@dataclass(frozen=True)
class Contender:
    version: int
    model: Pipeline


@dataclass(frozen=True)
class EvaluationOutcome:
    """One candidate's verdict, with the training set it was trained and scored on.

    Everything computed later for this version (reports, drift reference) reads
    `training_set`, never whichever training set was built last.
    """

    version: int
    run_id: str
    metrics: dict[str, float]
    champion_version: int | None
    champion_metrics: dict[str, float] | None
    gates: tuple[GateResult, ...]
    training_set: TrainingSetRef

    @property
    def blocking_failures(self) -> list[GateResult]:
        return [gate for gate in self.gates if gate.blocking and not gate.passed]

    @property
    def promotable(self) -> bool:
        return not self.blocking_failures

    def rejection(self) -> str:
        """`candidate version N rejected: <gate>: <figures>; ...`, one line per failed gate."""
        failed = "\n".join(f"  {gate.name}: {gate.description}" for gate in self.blocking_failures)
        champion = f"version {self.champion_version}" if self.champion_version else "none"
        return (
            f"candidate version {self.version} rejected by blocking gate(s) "
            f"{', '.join(g.name for g in self.blocking_failures)} "
            f"(data {self.training_set.fingerprint[:12]}, {self.training_set.holdout_rows} "
            f"holdout rows); the champion stays ({champion}):\n{failed}"
        )


def evaluate_candidate(
    candidate: Contender,
    run_id: str,
    champion: Contender | None,
    holdout: pd.DataFrame,
    training_set: TrainingSetRef,
    spec: Spec,
) -> EvaluationOutcome:
    """Score candidate and champion on the same holdout, compare them with a paired test
    (`training.comparison`) and run the holdout gates."""
    from ct_platform.training.comparison import compare  # scipy, sklearn: the step only
    from ct_platform.training.evaluate import predict, score_predictions

    predictions = predict(candidate.model, holdout, spec)
    metrics = score_predictions(predictions, spec)
    champion_metrics, comparison = None, None
    if champion is not None:
        champion_predictions = predict(champion.model, holdout, spec)
        champion_metrics = score_predictions(champion_predictions, spec)
        regression = spec.gates.champion_regression
        comparison = compare(
            predictions, champion_predictions, spec.evaluation.primary_metric, regression.alpha
        )
    gates = (
        metric_floor_gate(metrics, spec, champion_metrics),
        champion_regression_gate(metrics, comparison, spec),
    )
    return EvaluationOutcome(
        version=candidate.version,
        run_id=run_id,
        metrics=metrics,
        champion_version=champion.version if champion else None,
        champion_metrics=champion_metrics,
        gates=gates,
        training_set=training_set,
    )


def promote(registry: ModelRegistry, version: int, dagster_run_id: str) -> int | None:
    """Move `champion` to `version` if its recorded gates allow it; return the previous one.

    The gate verdict is read back from the registry rather than trusted from the caller, so a
    later run (or an automation tick) can never promote a candidate that failed a gate. The
    version is tagged `ct.promoted_by=<Dagster run>`.
    """
    verdict = registry.version(version).tags.get(GATES_PASSED_TAG)
    if verdict != "true":
        raise PromotionRefused(
            f"version {version} is not promotable: its blocking gates did not pass "
            f"({GATES_PASSED_TAG}={verdict!r}); the champion alias stays where it is"
        )
    previous = registry.alias_version(CHAMPION)
    registry.set_alias(CHAMPION, version)
    # After the alias: a run killed in between leaves a champion, never a tag without one.
    registry.set_tags(version, {PROMOTED_TAG: dagster_run_id})
    return previous.version if previous else None
