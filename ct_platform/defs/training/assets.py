"""Training set -> candidate model -> evaluation (holdout gates) -> whole-window refit
(artifact gates) -> champion.

The champion is the refit, never the holdout fit: see `training.refit` for the design."""

import atexit
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from ct_platform.defs.automation import follows_every_update
from ct_platform.defs.data.assets import VALIDATED_BATCH
from ct_platform.defs.data.catch_up import catch_up_landing
from ct_platform.defs.governance.approval import not_approved_observation, release_metadata
from ct_platform.defs.metadata import numbers, report_links, severity
from ct_platform.defs.resources import MlflowResource
from ct_platform.registry.versions import (
    CHAMPION,
    DAGSTER_RUN_TAG,
    ModelVersionInfo,
    release_alias,
)
from ct_platform.settings import Paths, Spec
from ct_platform.training.claims import (
    IN_PROGRESS,
    claim_fingerprint,
    release_claim,
)
from ct_platform.training.datasets import TrainingSetRef
from ct_platform.training.gates import GateResult
from ct_platform.training.promotion import EvaluationOutcome
from ct_platform.training.refit import ARTIFACT_GATES, RefitOutcome
from ct_platform.training.window import NoValidData, build_window

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry

GATES = ("metric_floor", "champion_regression", "baseline", "fairness", "secrets", "pii")
GATE_DESCRIPTIONS = {
    "metric_floor": "The primary metric on the holdout reaches the spec's floor, unless the "
    "champion is under it too on the same holdout and the candidate is better (then an alert "
    "says so: champion_under_floor).",
    "champion_regression": "Candidate vs champion on the same holdout by a paired test "
    "(DeLong for ROC AUC, else paired bootstrap / paired t): the spec's policy "
    "(non-inferiority within the margin, or superiority) on its confidence interval.",
    "baseline": "Candidate vs the naive baseline (scikit-learn's DummyRegressor / "
    "DummyClassifier, fitted on the same training rows) on the same holdout, by the same "
    "paired test: passes only when significantly better (gates.baseline).",
    "fairness": "Demographic parity and equalized odds differences, and the primary metric's "
    "largest gap, between the groups of each sensitive column stay under the spec's bounds "
    "(fairlearn, on the holdout; small groups reported, not judged).",
    "secrets": "No secret (detect-secrets) in the spec's values or the model's parameters.",
    "pii": "No emails, phone numbers, IBANs or Luhn-valid card numbers in the training set's "
    "text columns (presidio pattern recognizers); recorded on the version.",
    "model_size": "The serialized refit stays under the spec's size limit.",
    "resources": "Single-row and 1,000-row latency and peak memory of the refit's bundle "
    "(ONNX or its sklearn fallback), measured in a fresh process through the server's "
    "scoring path, stay under the spec's limits.",
    "onnx_parity": "The refit's ONNX graph agrees with sklearn on the holdout; otherwise "
    "its bundle is sklearn-only (a warning).",
}
MODEL_EVALUATION = dg.AssetKey("model_evaluation")
REFIT_MODEL = dg.AssetKey("refit_model")
PARTITION_TAG = "dagster/partition"
# Set by the retrain sensor: a drift or decay retrain trains on a shorter, recent window.
WINDOW_TAG = "ct/window_batches"


def build_training_defs(spec: Spec) -> dg.Definitions:
    @dg.asset(
        deps=[VALIDATED_BATCH],
        group_name="training",
        kinds={"parquet"},
        description="The latest valid batches, time-ordered, split into train and holdout.",
    )
    def training_dataset(context: dg.AssetExecutionContext) -> dg.Output[TrainingSetRef]:
        skip_final_collection_at_exit()
        collect_whole_heap_less_often()
        paths = Paths.from_env()
        quarantined: list[str] = []
        if PARTITION_TAG not in context.run.tags:
            # A run for the whole pipeline (CLI, CI): ingest what landed while no sensor ran.
            quarantined = catch_up_landing(context, spec, paths)
        keys = context.instance.get_dynamic_partitions("batches")
        window = context.run.tags.get(WINDOW_TAG)
        try:
            ref = build_window(keys, spec, paths, int(window) if window else None)
        except NoValidData as error:
            raise dg.Failure("\n".join([str(error), *quarantined])) from None
        return dg.Output(
            ref,
            metadata={
                "fingerprint": dg.MetadataValue.text(ref.fingerprint),
                "batches": dg.MetadataValue.int(len(ref.batch_keys)),
                "newest_batch": dg.MetadataValue.text(ref.batch_keys[-1]),
                "train_rows": dg.MetadataValue.int(ref.train_rows),
                "holdout_rows": dg.MetadataValue.int(ref.holdout_rows),
                "redelivered_rows": dg.MetadataValue.int(ref.redelivered_rows),
                "holdout_in_train_dropped": dg.MetadataValue.int(ref.holdout_in_train_dropped),
                "quarantined_now": dg.MetadataValue.text("\n".join(quarantined) or "-"),
            },
        )

    @dg.asset(
        group_name="training",
        kinds={"sklearn", "mlflow"},
        output_required=False,
        description="A pipeline fitted on the older part of the window (the holdout fit), "
        "registered in MLflow as `challenger`. Skipped when the data fingerprint already has a "
        "verdict or another live run is training it; a version left by a killed run without a "
        "verdict, or with a passing verdict whose refit was never promoted, is resumed.",
    )
    def candidate_model(
        context: dg.AssetExecutionContext, training_dataset: TrainingSetRef, mlflow: MlflowResource
    ) -> Iterator[dg.Output[ModelVersionInfo]]:
        from ct_platform.training.promotion import GATES_PASSED_TAG
        from ct_platform.training.recovery import fail_orphaned_runs
        from ct_platform.training.refit import promotion_pending, register_holdout_fit

        registry = model_registry(mlflow, spec)
        for run_id in fail_orphaned_runs(registry, lambda r: dagster_run_status(context, r)):
            context.log.warning(f"MLflow run {run_id} was left RUNNING by a dead run: now FAILED")
        fingerprint = training_dataset.fingerprint
        if not claimed(context, fingerprint):
            return
        existing = registry.find_version_by_fingerprint(fingerprint)
        if existing is None:
            info = register_holdout_fit(training_dataset, registry, spec, context.run.run_id)
        elif GATES_PASSED_TAG not in existing.tags:
            info = resume(context, existing, training_dataset, registry, NO_VERDICT)
        elif promotion_pending(registry, existing):
            info = resume(context, existing, training_dataset, registry, NOT_PROMOTED)
        else:
            context.log.info(
                f"data fingerprint {fingerprint[:12]} was already trained and evaluated as "
                f"version {existing.version}: no new model, champion unchanged"
            )
            release_claim(claims_dir(), fingerprint, context.run.run_id)
            return
        yield dg.Output(
            info,
            metadata={
                "version": dg.MetadataValue.int(info.version),
                "mlflow_run_id": dg.MetadataValue.text(info.run_id),
                "train_rows": dg.MetadataValue.int(training_dataset.train_rows),
                "resumed": dg.MetadataValue.bool(existing is not None),
            },
        )

    @dg.asset(
        group_name="training",
        kinds={"sklearn", "mlflow"},
        check_specs=gate_check_specs(MODEL_EVALUATION, GATES, spec),
        description="Candidate and champion scored on the same holdout, compared by a paired "
        "test, and the holdout gates. Its Evidently reports and figures are the holdout fit's "
        "(the only fit whose holdout figures mean something).",
    )
    def model_evaluation(
        context: dg.AssetExecutionContext,
        candidate_model: ModelVersionInfo,
        training_dataset: TrainingSetRef,
        mlflow: MlflowResource,
    ) -> Iterator[dg.Output[EvaluationOutcome] | dg.AssetCheckResult]:
        from ct_platform.training.evaluation_run import run_evaluation

        if candidate_model.fingerprint != training_dataset.fingerprint:
            raise dg.Failure(
                description=f"version {candidate_model.version} was trained on data "
                f"{candidate_model.fingerprint}, but the training set given is "
                f"{training_dataset.fingerprint}: run training_dataset and candidate_model "
                "together with model_evaluation",
                allow_retries=False,
            )
        registry = model_registry(mlflow, spec)
        evaluation = run_evaluation(candidate_model, training_dataset, registry, spec)
        outcome = evaluation.outcome
        under_floor = [g for g in outcome.gates if g.metadata.get("champion_under_floor")]
        for gate in under_floor:
            context.log.warning(f"ALERT champion_under_floor: {gate.description}")
        metadata = {
            **numbers("candidate", outcome.metrics),
            **numbers("champion", outcome.champion_metrics or {}),
            **numbers("", evaluation.group_figures),
            # Figures as numbers, so the UI plots them over versions.
            **numbers("fairness", outcome.gate("fairness").metadata),
            "version": dg.MetadataValue.int(outcome.version),
            # The serving champion, and the version scored for it (`champion/*` figures):
            # itself, or its holdout fit standing in (`champion_comparator`).
            "champion_version": dg.MetadataValue.text(str(outcome.serving_champion or "none")),
            "compared_version": dg.MetadataValue.text(str(outcome.champion_version or "none")),
            "champion_under_floor": dg.MetadataValue.bool(bool(under_floor)),
            "promotable": dg.MetadataValue.bool(outcome.promotable),
        }
        yield dg.Output(outcome, metadata=metadata)
        yield from gate_check_results(MODEL_EVALUATION, outcome.gates)
        if not outcome.promotable:
            # The verdict is final: the fingerprint counts as trained, other runs may go on.
            release_claim(claims_dir(), training_dataset.fingerprint, context.run.run_id)
            champion = outcome.serving_champion
            audit_rejection(
                context, spec.model.name, outcome.version, champion, outcome.rejection()
            )
            # A rejection is an outcome, not a crash: a Failure's description (each failed
            # gate with its figures) is the step's failure message, its metadata shows in the
            # UI, and it is never retried. The run still fails (CI exits non-zero).
            raise rejected(outcome.rejection(), outcome.blocking_failures)

    @dg.asset(
        group_name="training",
        kinds={"sklearn", "mlflow", "onnx"},
        check_specs=gate_check_specs(REFIT_MODEL, ARTIFACT_GATES, spec),
        description="The evaluated candidate refit on its whole window (holdout included) "
        "with the same estimator and preparation: a new MLflow version (`ct.fit=whole_window`,"
        " `ct.refit_of`) inheriting the holdout verdict, judged by the artifact gates on its "
        "own bundle. This is what becomes champion.",
    )
    def refit_model(
        context: dg.AssetExecutionContext,
        model_evaluation: EvaluationOutcome,
        mlflow: MlflowResource,
    ) -> Iterator[dg.Output[RefitOutcome] | dg.AssetCheckResult]:
        from ct_platform.training.refit import refit_candidate

        outcome = refit_candidate(
            model_evaluation, model_registry(mlflow, spec), spec, context.run.run_id
        )
        yield dg.Output(
            outcome,
            metadata={
                "version": dg.MetadataValue.int(outcome.version),
                "refit_of": dg.MetadataValue.int(model_evaluation.version),
                "semver": dg.MetadataValue.text(outcome.semver),
                "mlflow_run_id": dg.MetadataValue.text(outcome.run_id),
                "window_rows": dg.MetadataValue.int(
                    model_evaluation.training_set.train_rows
                    + model_evaluation.training_set.holdout_rows
                ),
                "reused": dg.MetadataValue.bool(outcome.reused),
                "promotable": dg.MetadataValue.bool(outcome.promotable),
            },
        )
        yield from gate_check_results(REFIT_MODEL, outcome.gates)
        if not outcome.promotable:
            release_claim(
                claims_dir(), model_evaluation.training_set.fingerprint, context.run.run_id
            )
            champion = model_evaluation.serving_champion
            audit_rejection(
                context, spec.model.name, outcome.version, champion, outcome.rejection()
            )
            raise rejected(outcome.rejection(), outcome.blocking_failures)

    @dg.asset(
        group_name="training",
        kinds={"evidently", "mlflow"},
        automation_condition=follows_every_update(),
        # Lowest step priority: in a training run, promotion and export never wait on HTML.
        op_tags={"dagster/priority": "-1"},
        description="Evidently HTML reports of each candidate (model quality on the holdout, "
        "newest batch vs training data), also logged to its MLflow run. Built from the "
        "candidate, not the verdict, so a candidate rejected by a blocking gate is reported too; "
        "always on that version's own training set, found by its data fingerprint.",
    )
    def evaluation_reports(
        context: dg.AssetExecutionContext,
        candidate_model: ModelVersionInfo,
        mlflow: MlflowResource,
    ) -> dg.MaterializeResult:
        from ct_platform.training.datasets import load_training_set
        from ct_platform.training.evaluation_reports import write_evaluation_reports

        registry = model_registry(mlflow, spec)
        run_id = candidate_model.run_id
        training_set = load_training_set(candidate_model.fingerprint, Paths.from_env())
        reports = write_evaluation_reports(
            candidate_model.version, run_id, training_set, registry, spec
        )
        return dg.MaterializeResult(
            metadata={
                **report_links(
                    {f"report/{name}": path for name, path in reports.paths.items()},
                    lambda path: registry.artifact_view_url(run_id, f"reports/{path.name}"),
                ),
                **numbers("", reports.figures),
                "version": dg.MetadataValue.int(candidate_model.version),
                "fingerprint": dg.MetadataValue.text(training_set.fingerprint),
            }
        )

    @dg.asset(
        group_name="training",
        kinds={"mlflow"},
        # Across runs too: never promote a candidate whose blocking gates did not pass. Only a
        # new evaluation is a reason to promote; a rebuilt training set alone is not.
        automation_condition=dg.AutomationCondition.eager()
        & dg.AutomationCondition.all_deps_blocking_checks_passed(),
        # Not materialized while the refit waits for a person's approval (see below).
        output_required=False,
        description=f"The MLflow alias `{CHAMPION}`, moved to the whole-window refit when "
        "every blocking gate (holdout and artifact) passed and, with `governance.approval: "
        "required`, a person approved; the drift reference becomes its whole window. Under a "
        "progressive strategy the refit gets `canary` and its rollout moves `champion`.",
    )
    def champion(
        context: dg.AssetExecutionContext,
        refit_model: RefitOutcome,
        mlflow: MlflowResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
        from ct_platform.governance.approval import NotApproved
        from ct_platform.governance.audit import run_actor
        from ct_platform.training.promotion import promote

        registry = mlflow.registry(spec)
        try:
            previous = promote(
                registry,
                refit_model.version,
                spec,
                actor=run_actor(context.run),
                dagster_run_id=context.run.run_id,
            )
        except NotApproved as waiting:  # an outcome, not a failure: the champion stays
            release_claim(claims_dir(), refit_model.training_set.fingerprint, context.run.run_id)
            yield not_approved_observation(context, waiting)
            return
        release_claim(claims_dir(), refit_model.training_set.fingerprint, context.run.run_id)
        # `promote` moved the drift reference with `champion` (to the refit's whole window);
        # under a progressive strategy the rollout moves both when it completes.
        metric = spec.evaluation.primary_metric
        holdout_metric = refit_model.evaluation.metrics[metric]
        if release_alias(spec) == CHAMPION:
            context.log.info(f"champion: version {previous} -> {refit_model.version}")
        else:
            context.log.info(
                f"`{release_alias(spec)}`: version {refit_model.version}, rolled out beside "
                f"the champion (version {previous}), which moves only when the rollout completes"
            )
        yield dg.MaterializeResult(
            metadata={
                **release_metadata(registry, refit_model.version, previous, spec),
                "semver": dg.MetadataValue.text(refit_model.semver),
                "refit_of": dg.MetadataValue.int(refit_model.evaluation.version),
                metric: dg.MetadataValue.float(holdout_metric),
            }
        )

    return dg.Definitions(
        assets=[
            training_dataset,
            candidate_model,
            model_evaluation,
            refit_model,
            evaluation_reports,
            champion,
        ]
    )


def gate_check_specs(
    asset: dg.AssetKey, gates: tuple[str, ...], spec: Spec
) -> list[dg.AssetCheckSpec]:
    """One check per gate on `asset`, blocking (ERROR) or not (WARN) as the spec says."""
    return [
        dg.AssetCheckSpec(
            gate,
            asset=asset,
            blocking=spec.gates.gate(gate).blocking,
            description=GATE_DESCRIPTIONS[gate],
        )
        for gate in gates
    ]


def model_registry(mlflow: MlflowResource, spec: Spec) -> "ModelRegistry":
    """The registry, for a step that logs or loads models: skops is imported before MLflow.

    Importing skops lists the trusted scipy ufuncs by searching every loaded module, in
    import order, once per ufunc (`skops.io._utils.whichmodule`): imported after MLflow's
    900-odd modules it took 1.0 -> 3.2 s of wall, 0.65 s more CPU in the run's process
    (benchmarks/training/README.md, eighth round). MLflow itself imports skops only when
    it saves or loads a model, so the order is ours to choose. Once per process.
    """
    import ct_platform.registry.skops_types  # noqa: F401  (the import is the point)

    return mlflow.registry(spec)


def skip_final_collection_at_exit() -> None:
    """Have this process skip the garbage collector's last passes when it exits.

    A training run's process has imported scikit-learn, MLflow, Evidently and Dagster:
    collecting their millions of objects at interpreter shutdown took about half of the
    run's exit (6.1 -> 3.2 s, benchmarks/training/README.md). `gc.freeze` at exit moves
    them out of the collector's reach; everything else of a normal exit still happens
    (atexit handlers, `weakref.finalize` callbacks, flushing stdout and stderr, each
    object freed by reference counting). Registered once per process, however many runs.
    """
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


# Collections of the middle generation between two of the oldest (CPython's default: 10).
MIDDLE_COLLECTIONS_PER_FULL = 100


def collect_whole_heap_less_often() -> None:
    """Have this process run the garbage collector's full passes about 10 times less often.

    A full pass walks every tracked object, and a training run's process holds millions
    (Dagster, MLflow, scikit-learn, skops, Evidently, presidio, imported step by step):
    CPython starts one after every 10 passes over the middle generation once the oldest
    has grown by a quarter, which each of those imports does. One bank run made 10 full
    passes (9.1 of its 14.1 s in the collector, benchmarks/training/README.md, fifth
    round). Cyclic garbage is still freed, by the young passes or the next full one;
    reference counting frees everything else as before. Process-wide, like the exit
    setting above; never lowers a higher setting.
    """
    young, middle, oldest = gc.get_threshold()
    gc.set_threshold(young, middle, max(oldest, MIDDLE_COLLECTIONS_PER_FULL))


def claims_dir() -> Path:
    return Paths.from_env().state / "claims"


def dagster_run_status(context: dg.AssetExecutionContext, run_id: str) -> str:
    """The status name of a Dagster run of this instance; "unknown" if there is none."""
    run = context.instance.get_run_by_id(run_id)
    return "unknown" if run is None else run.status.value


def claimed(context: dg.AssetExecutionContext, fingerprint: str) -> bool:
    """Claim the fingerprint for this run (see `training.claims`); False, logged, if a live
    run holds it: that run registers and evaluates this data, this one trains nothing."""
    holder = claim_fingerprint(
        claims_dir(),
        fingerprint,
        context.run.run_id,
        run_finished=lambda run_id: dagster_run_status(context, run_id) not in IN_PROGRESS,
    )
    if holder.run_id == context.run.run_id:
        return True
    context.log.info(
        f"data fingerprint {fingerprint[:12]} is being trained by Dagster run {holder.run_id} "
        f"(process {holder.worker}): no model from this run, champion unchanged"
    )
    return False


NO_VERDICT = "has no gate verdict: the run that registered it ended before the gates ran"
NOT_PROMOTED = (
    "passed its gates, but its whole-window refit was never promoted: the run that "
    "evaluated it ended first"
)


def resume(
    context: dg.AssetExecutionContext,
    version: ModelVersionInfo,
    training_set: TrainingSetRef,
    registry: "ModelRegistry",
    why: str,
) -> ModelVersionInfo:
    """A holdout fit a killed run left unfinished on this data: evaluate it again (and so
    refit and promote it) rather than train a duplicate (the model is complete once
    registered)."""
    from ct_platform.registry.versions import CHALLENGER
    from ct_platform.training.recovery import REEVALUATED_TAG

    context.log.warning(
        f"version {version.version} (data {training_set.fingerprint[:12]}) {why} (Dagster "
        f"run {version.tags.get(DAGSTER_RUN_TAG, '?')}). Resuming that version; no new "
        "version is trained."
    )
    # The killed run may have died before logging the holdout: log it again (same data).
    registry.log_artifact(version.run_id, training_set.holdout_path)
    registry.set_tags(version.version, {REEVALUATED_TAG: context.run.run_id})
    registry.set_alias(CHALLENGER, version.version)
    return registry.version(version.version)


def gate_check_results(
    asset: dg.AssetKey, gates: tuple[GateResult, ...]
) -> Iterator[dg.AssetCheckResult]:
    for gate in gates:
        yield dg.AssetCheckResult(
            asset_key=asset,
            check_name=gate.name,
            passed=gate.passed,
            severity=severity(gate.blocking),
            metadata=numbers("", gate.metadata),
            description=gate.description,
        )


def audit_rejection(
    context: dg.AssetExecutionContext,
    model: str,
    version: int,
    champion: int | None,
    rejection: str,
) -> None:
    """The audit log's line for a version rejected by a blocking gate (once per version)."""
    from ct_platform.governance.audit import run_actor
    from ct_platform.governance.lifecycle import record_gate_rejection

    record_gate_rejection(
        model,
        version,
        champion,
        rejection,
        actor=run_actor(context.run),
        dagster_run_id=context.run.run_id,
    )


def rejected(description: str, failures: list[GateResult]) -> dg.Failure:
    """The step's failure for a rejection: each failed gate with its figures, never retried."""
    return dg.Failure(
        description=description,
        metadata=numbers("", {g.name: g.description for g in failures}),
        allow_retries=False,
    )
