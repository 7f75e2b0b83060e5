"""Refit on the whole window: the model that serves has seen the newest data.

The candidate is fitted on the older part of its window and judged on the newest part (the
holdout): that is the only fit whose holdout figures mean something, so the holdout gates
(metric floor, champion comparison, and any other gate of the evaluation) and the Evidently
evaluation reports stay on it. Once it passes, the same estimator and preparation are fitted
again on the whole window, holdout included, and that refit is what is promoted. Without it
the served model never saw the newest regime, which in a drifting stream is the part that
matters most (issue 9: always-retrain on the whole window beat the gated holdout fit by
0.011-0.018 prequential ROC AUC).

Design, and why:
- The refit is its own MLflow version (tags `ct.fit=whole_window`, `ct.refit_of=<holdout
  fit>`; the holdout fit has `ct.fit=holdout_split`), with its own run and lineage (batches,
  fingerprint, Dagster run, the whole window as its logged input). One version per fitted
  artifact keeps "what serves" and "what was judged" apart and both reproducible.
- It inherits the holdout fit's verdict (its `ct.gate.*` tags and holdout metrics, tagged
  `ct.holdout_metrics_of`) but the artifact gates (model size, resources, ONNX parity) are
  judged on the refit's own bundle: that is the thing that will serve.
- A run killed after the verdict but before the refit was promoted leaves a holdout fit
  whose gates passed and no promoted refit. The next run on that data sees that promotion as
  pending (`promotion_pending`), re-evaluates the holdout fit, reuses a registered refit
  (`ModelRegistry.find_refit`) or fits it, and promotes it. A refit once promoted
  (`ct.promoted_by`) is never re-promoted, so a later rollback sticks.
- The fingerprint claim (`training.claims`) is held until the refit is promoted or rejected,
  so an overlapping run on the same data waits instead of refitting a second time.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ct_platform.registry.versions import (
    CHALLENGER,
    CHAMPION,
    FIT_TAG,
    HOLDOUT_SPLIT,
    REFIT_OF_TAG,
    SEMVER_TAG,
    WHOLE_WINDOW,
)
from ct_platform.settings import Spec
from ct_platform.training.datasets import TrainingSetRef
from ct_platform.training.gates import GateResult
from ct_platform.training.promotion import (
    GATES_PASSED_TAG,
    PROMOTED_TAG,
    EvaluationOutcome,
    PromotionRefused,
)

if TYPE_CHECKING:  # heavy: the code location imports this module for RefitOutcome only
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from ct_platform.registry.mlflow_registry import ModelRegistry
    from ct_platform.registry.versions import ModelVersionInfo

ARTIFACT_GATES = ("model_size", "resources", "onnx_parity")
# On a refit: the holdout fit whose holdout metrics were copied onto its run.
HOLDOUT_METRICS_OF_TAG = "ct.holdout_metrics_of"


@dataclass(frozen=True)
class RefitOutcome:
    """The whole-window refit of a holdout fit that passed its gates, and its own verdict."""

    version: int
    run_id: str
    semver: str
    # The holdout fit's evaluation: its metrics and gates are the refit's inherited verdict.
    evaluation: EvaluationOutcome
    # The artifact gates, judged on the refit's own bundle.
    gates: tuple[GateResult, ...]
    # True when a refit registered by an earlier (killed) run was judged again.
    reused: bool

    @property
    def training_set(self) -> TrainingSetRef:
        return self.evaluation.training_set

    @property
    def blocking_failures(self) -> list[GateResult]:
        return [gate for gate in self.gates if gate.blocking and not gate.passed]

    @property
    def promotable(self) -> bool:
        return self.evaluation.promotable and not self.blocking_failures

    def rejection(self) -> str:
        """`refit version N of version M rejected: <gate>: <figures>`, one line per gate."""
        failed = "\n".join(f"  {gate.name}: {gate.description}" for gate in self.blocking_failures)
        return (
            f"whole-window refit version {self.version} of version {self.evaluation.version} "
            f"rejected by blocking gate(s) {', '.join(g.name for g in self.blocking_failures)}; "
            f"the champion stays:\n{failed}"
        )


def register_fit(
    frame: pd.DataFrame,
    training_set: TrainingSetRef,
    registry: ModelRegistry,
    spec: Spec,
    *,
    dagster_run_id: str,
    tags: dict[str, str],
    version_tags: dict[str, str] | None = None,
) -> ModelVersionInfo:
    """Fit the spec's pipeline on `frame`, register it with its lineage and semantic
    version, and log the holdout with its run (export re-checks ONNX parity on it).
    `version_tags` go on the registered version only (see `ModelRegistry.log_candidate`)."""
    from ct_platform.training.claims import current_worker
    from ct_platform.training.fit import fit_pipeline
    from ct_platform.training.recovery import WORKER_TAG
    from ct_platform.training.semver import semver_tags

    model = fit_pipeline(frame, spec)
    info = registry.log_candidate(
        model,
        train=frame,
        params={"estimator": spec.model.estimator, **spec.model.params},
        metrics={},
        fingerprint=training_set.fingerprint,
        dagster_run_id=dagster_run_id,
        tags={
            "ct.batches": ",".join(training_set.batch_keys),
            WORKER_TAG: current_worker(),
            **semver_tags(registry, spec, training_set.fingerprint),
            **tags,
        },
        version_tags=version_tags,
    )
    registry.log_artifact(info.run_id, training_set.holdout_path)
    return info


def register_holdout_fit(
    training_set: TrainingSetRef, registry: ModelRegistry, spec: Spec, dagster_run_id: str
) -> ModelVersionInfo:
    """The candidate: fitted on the older part of the window, judged on the holdout."""
    return register_fit(
        training_set.load_train(),
        training_set,
        registry,
        spec,
        dagster_run_id=dagster_run_id,
        tags={FIT_TAG: HOLDOUT_SPLIT},
    )


def refit_candidate(
    evaluation: EvaluationOutcome, registry: ModelRegistry, spec: Spec, dagster_run_id: str
) -> RefitOutcome:
    """Refit `evaluation`'s version on its whole window (or reuse the refit a killed run
    registered), judge the artifact gates on it and record its verdict.

    Raises:
        PromotionRefused: the holdout fit's recorded verdict is not a pass.
    """
    from ct_platform.training.bundling import gated_bundle_dir
    from ct_platform.training.datasets import save_window

    holdout_fit = registry.version(evaluation.version)
    if holdout_fit.tags.get(GATES_PASSED_TAG) != "true":
        raise PromotionRefused(
            f"version {holdout_fit.version} did not pass its holdout gates "
            f"({GATES_PASSED_TAG}={holdout_fit.tags.get(GATES_PASSED_TAG)!r}): no refit"
        )
    refit = registry.find_refit(holdout_fit)
    reused = refit is not None
    if refit is None:
        refit = register_fit(
            save_window(evaluation.training_set),
            evaluation.training_set,
            registry,
            spec,
            dagster_run_id=dagster_run_id,
            tags={FIT_TAG: WHOLE_WINDOW, REFIT_OF_TAG: str(holdout_fit.version)},
            # Registered with it: 11 tags written one by one later cost 11 transactions.
            version_tags=inherited_verdict(holdout_fit),
        )
    model = registry.load_model(refit.version)
    outcome = RefitOutcome(
        version=refit.version,
        run_id=refit.run_id,
        semver=refit.tags.get(SEMVER_TAG, ""),
        evaluation=evaluation,
        gates=artifact_gates(model, refit, evaluation.training_set, registry, spec),
        reused=reused,
    )
    _record(registry, refit, holdout_fit, outcome)
    if not outcome.promotable:  # never exported: its gated bundle has no use
        shutil.rmtree(gated_bundle_dir(spec, refit.name, refit.version), ignore_errors=True)
    return outcome


def artifact_gates(
    model: Pipeline,
    version: ModelVersionInfo,
    training_set: TrainingSetRef,
    registry: ModelRegistry,
    spec: Spec,
) -> tuple[GateResult, ...]:
    """Model size, resources and ONNX parity of the bundle `model` exports to.

    The bundle is built as the export builds it, without the card (which carries these
    verdicts), in `gated_bundle_dir`: the export seals that very bundle with its card
    rather than converting and checking the same model on the same holdout again.
    """
    from ct_platform.serving.bundle import read_meta
    from ct_platform.training.bundling import build_bundle, gated_bundle_dir
    from ct_platform.training.gates import model_size_gate, onnx_parity_gate, resources_gate

    holdout = training_set.load_holdout()
    bundle = build_bundle(
        model,
        spec,
        name=version.name,
        version=version.version,
        fingerprint=version.fingerprint or f"run:{version.run_id}",
        holdout=holdout,
        directory=gated_bundle_dir(spec, version.name, version.version),
        semver=version.tags.get(SEMVER_TAG),
    )
    return (
        model_size_gate(registry.model_size_bytes(version.version), spec),
        resources_gate(bundle, holdout, spec),
        onnx_parity_gate(read_meta(bundle), spec),
    )


def inherited_verdict(holdout_fit: ModelVersionInfo) -> dict[str, str]:
    """The tags a refit inherits from its holdout fit: each holdout gate's verdict and
    reason (`ct.gate.*`) and which version's holdout metrics it carries."""
    verdict = {key: value for key, value in holdout_fit.tags.items() if key.startswith("ct.gate.")}
    return {**verdict, HOLDOUT_METRICS_OF_TAG: str(holdout_fit.version)}


def _record(
    registry: ModelRegistry,
    refit: ModelVersionInfo,
    holdout_fit: ModelVersionInfo,
    outcome: RefitOutcome,
) -> None:
    """The inherited verdict and holdout metrics, then the refit's own gates, on the refit."""
    from ct_platform.training.evaluation_run import record_gates

    missing = {
        key: value
        for key, value in inherited_verdict(holdout_fit).items()
        if refit.tags.get(key) != value
    }
    if missing:  # a refit registered with its verdict has none (one registered before: all)
        registry.set_tags(refit.version, missing)
    evaluation = outcome.evaluation
    registry.log_metrics(refit.run_id, evaluation.holdout_figures(), tags=evaluation.holdout_tags())
    record_gates(
        registry,
        refit,
        outcome.gates,
        promotable=outcome.promotable,
        described=(*outcome.evaluation.gates, *outcome.gates),
    )
    if outcome.promotable:  # the candidate that may become champion is now the refit
        registry.set_alias(CHALLENGER, refit.version)


def promotion_pending(registry: ModelRegistry, holdout_fit: ModelVersionInfo) -> bool:
    """Whether `holdout_fit` passed its gates but a killed run never promoted its refit.

    Pending while the champion is older than the holdout fit (or there is none), and its
    refit is missing, has no verdict yet, or passed without ever having been champion. A
    refit rejected by an artifact gate, or promoted once (and maybe rolled back since), is
    not pending; nor is anything once a newer version serves.
    """
    if holdout_fit.tags.get(GATES_PASSED_TAG) != "true":
        return False
    champion = registry.alias_version(CHAMPION)
    if champion is not None and champion.version >= holdout_fit.version:
        return False
    refit = registry.find_refit(holdout_fit)
    if refit is None or GATES_PASSED_TAG not in refit.tags:
        return True
    return refit.tags[GATES_PASSED_TAG] == "true" and PROMOTED_TAG not in refit.tags
