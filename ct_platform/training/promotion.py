"""Champion vs challenger: score both on the same holdout, run the gates, promote or refuse.

The holdout gates (metric floor, champion comparison) judge the holdout fit; what is
promoted is its whole-window refit, which inherits this verdict and passes the artifact
gates itself (`training.refit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ct_platform.registry.versions import CHAMPION, INTERVAL_TAG_PREFIX, release_alias
from ct_platform.settings import Spec
from ct_platform.training.datasets import TrainingSetRef
from ct_platform.training.gates import (
    GateResult,
    baseline_gate,
    champion_regression_gate,
    metric_floor_gate,
)

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
    # When this version is the serving champion's holdout fit scored in its place
    # (`training.evaluation_run.champion_comparator`): the serving champion.
    stands_in_for: int | None = None


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
    # `champion_version` is the version scored as the champion; when it is the serving
    # champion's holdout fit standing in for it, this is the serving champion.
    stands_in_for: int | None = None
    # The naive baseline's metrics on the same holdout (`training.baseline`).
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    # Metric -> its 95 % confidence interval on the holdout (`comparison.metric_interval`)
    # and the method that gave it.
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    interval_methods: dict[str, str] = field(default_factory=dict)

    def holdout_figures(self) -> dict[str, float]:
        """The run metrics of this evaluation: `holdout_<metric>`, its interval's bounds
        `holdout_<metric>_ci_low` / `_ci_high` (where defined) and the naive baseline's
        `holdout_baseline_<metric>`."""
        intervals = {
            f"holdout_{name}_ci_{side}": bound
            for name, (low, high) in self.intervals.items()
            for side, bound in (("low", low), ("high", high))
            if math.isfinite(bound)
        }
        baseline = {f"holdout_baseline_{k}": v for k, v in self.baseline_metrics.items()}
        return {f"holdout_{k}": v for k, v in self.metrics.items()} | intervals | baseline

    def holdout_tags(self) -> dict[str, str]:
        """The run tags of this evaluation: `ct.interval.holdout_<metric>`, how that metric's
        interval was computed (`comparison.metric_interval`: delong, wilson, t, bootstrap,
        bootstrap_normal)."""
        return {f"{INTERVAL_TAG_PREFIX}holdout_{k}": v for k, v in self.interval_methods.items()}

    @property
    def serving_champion(self) -> int | None:
        """The champion serving when the candidate was judged (None: there was none)."""
        return self.stands_in_for or self.champion_version

    @property
    def blocking_failures(self) -> list[GateResult]:
        return [gate for gate in self.gates if gate.blocking and not gate.passed]

    def gate(self, name: str) -> GateResult:
        """The result of gate `name`; KeyError if it did not run."""
        for gate in self.gates:
            if gate.name == name:
                return gate
        raise KeyError(f"gate {name!r} did not run (ran: {[g.name for g in self.gates]})")

    @property
    def promotable(self) -> bool:
        return not self.blocking_failures

    def rejection(self) -> str:
        """`candidate version N rejected: <gate>: <figures>; ...`, one line per failed gate."""
        failed = "\n".join(f"  {gate.name}: {gate.description}" for gate in self.blocking_failures)
        champion = f"version {self.serving_champion}" if self.serving_champion else "none"
        if self.stands_in_for is not None:
            champion += f"; compared with its holdout fit, version {self.champion_version}"
        return (
            f"candidate version {self.version} rejected by blocking gate(s) "
            f"{', '.join(g.name for g in self.blocking_failures)} "
            f"(data {self.training_set.fingerprint[:12]}, {self.training_set.holdout_rows} "
            f"holdout rows); the champion stays ({champion}):\n{failed}"
        )


def _compared_name(champion: Contender | None) -> str:
    """Who the candidate's holdout figures are compared with, as the gate verdicts say it."""
    if champion is None or champion.stands_in_for is None:
        return "the serving champion"
    return (
        f"the champion's holdout fit (version {champion.version}, standing in for the "
        f"serving champion, version {champion.stands_in_for})"
    )


def evaluate_candidate(
    candidate: Contender,
    run_id: str,
    champion: Contender | None,
    holdout: pd.DataFrame,
    training_set: TrainingSetRef,
    spec: Spec,
) -> EvaluationOutcome:
    """Score candidate, champion and the naive baseline on the same holdout, compare the
    candidate with each by a paired test (`training.comparison`) and run the holdout gates."""
    from ct_platform.training.baseline import naive_baseline

    # scipy, sklearn: the step only
    from ct_platform.training.comparison import CARD_ALPHA, compare, metric_interval
    from ct_platform.training.evaluate import predict, score_predictions
    from ct_platform.training.fairness import fairness_gate
    from ct_platform.training.security import secrets_gate, training_set_pii_gate

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
    primary = spec.evaluation.primary_metric
    baseline = naive_baseline(training_set, holdout, spec)
    intervals = {name: metric_interval(predictions, name, CARD_ALPHA) for name in metrics}
    against_baseline = compare(
        predictions, baseline.predictions, primary, spec.gates.baseline.alpha
    )
    named = _compared_name(champion)
    gates = (
        metric_floor_gate(metrics, spec, champion_metrics, named),
        champion_regression_gate(metrics, comparison, spec, named),
        baseline_gate(metrics, against_baseline, baseline.description, spec),
        fairness_gate(candidate.model, holdout, spec),
        secrets_gate(spec, candidate.model),
        training_set_pii_gate(training_set, spec),
    )
    return EvaluationOutcome(
        version=candidate.version,
        run_id=run_id,
        metrics=metrics,
        champion_version=champion.version if champion else None,
        champion_metrics=champion_metrics,
        gates=gates,
        training_set=training_set,
        stands_in_for=champion.stands_in_for if champion else None,
        baseline_metrics=score_predictions(baseline.predictions, spec),
        intervals={name: (found.low, found.high) for name, found in intervals.items()},
        interval_methods={name: found.method for name, found in intervals.items()},
    )


def promote(
    registry: ModelRegistry,
    version: int,
    spec: Spec,
    *,
    actor: str = "automation",
    dagster_run_id: str | None = None,
) -> int | None:
    """Move the release alias (`registry.versions.release_alias`: `champion`, or `canary` under
    a progressive rollout, which moves `champion` when it completes) to `version` if its
    recorded gates allow it; return the previous champion. `actor` is who or what started
    the promotion (`governance.audit.run_actor` of the Dagster run). The version is tagged
    `ct.promoted_by=<Dagster run or actor>` (a refit promoted once is never promoted again).

    The gate verdict is read back from the registry rather than trusted from the caller, so a
    later run (or an automation tick) can never promote a candidate that failed a gate. With
    `governance.approval: required`, a person's approval is read back the same way
    (`governance.approval.NotApproved` until then). Every promotion goes to the audit log.
    """
    from ct_platform.governance.approval import require_approval
    from ct_platform.governance.lifecycle import promotion_event, set_champion

    candidate = registry.version(version)
    verdict = candidate.tags.get(GATES_PASSED_TAG)
    if verdict != "true":
        raise PromotionRefused(
            f"version {version} is not promotable: its blocking gates did not pass "
            f"({GATES_PASSED_TAG}={verdict!r}); the champion alias stays where it is"
        )
    previous = registry.alias_version(CHAMPION)
    promoted_before = candidate.tags.get(PROMOTED_TAG)
    if promoted_before is not None and (previous is None or previous.version != version):
        # Rolled back (or replaced): a rerun of an old step must not undo a person's rollback.
        raise PromotionRefused(
            f"version {version} was promoted before ({PROMOTED_TAG}={promoted_before}) and "
            "is no longer champion (rolled back or replaced): it is not promoted again"
        )
    require_approval(
        registry, candidate, spec.governance, actor=actor, dagster_run_id=dagster_run_id
    )
    alias = release_alias(spec)
    if alias == CHAMPION:  # else its rollout moves `champion` (and records it) on completion
        # Built before the move (its MLflow reads), appended right after it.
        event = promotion_event(
            registry, previous, candidate, actor=actor, dagster_run_id=dagster_run_id
        )
        set_champion(registry, version, spec, event)
    else:
        registry.set_alias(alias, version)
    # After the alias: a run killed in between leaves a champion, never a tag without one.
    registry.set_tags(version, {PROMOTED_TAG: dagster_run_id or actor})
    return previous.version if previous else None
