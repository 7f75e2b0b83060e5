"""Training set -> candidate model -> evaluation (with the model gates) -> champion."""

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from ct_platform.defs.automation import follows_every_update
from ct_platform.defs.data.assets import VALIDATED_BATCH
from ct_platform.defs.data.catch_up import catch_up_landing
from ct_platform.defs.governance.approval import not_approved_observation
from ct_platform.defs.metadata import numbers, report_links, severity
from ct_platform.defs.resources import MlflowResource
from ct_platform.registry.versions import CHAMPION, DAGSTER_RUN_TAG, ModelVersionInfo
from ct_platform.settings import Paths, Spec
from ct_platform.training.claims import (
    IN_PROGRESS,
    claim_fingerprint,
    current_worker,
    release_claim,
)
from ct_platform.training.datasets import TrainingSetRef
from ct_platform.training.promotion import EvaluationOutcome
from ct_platform.training.window import NoValidData, build_window

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry

GATES = (
    "metric_floor",
    "champion_regression",
    "latency",
    "model_size",
    "fairness",
    "secrets",
    "pii",
)
GATE_DESCRIPTIONS = {
    "metric_floor": "The primary metric on the holdout reaches the spec's floor.",
    "champion_regression": "No worse than the champion, beyond the tolerance, on the same holdout.",
    "latency": "Median single-row scoring time of the bundle that will serve (ONNX or its "
    "sklearn fallback, through the server's scoring path) stays under the spec's limit.",
    "model_size": "The serialized model stays under the spec's size limit.",
    "fairness": "Demographic parity and equalized odds differences, and the primary metric's "
    "largest gap, between the groups of each sensitive column stay under the spec's bounds "
    "(fairlearn, on the holdout; small groups reported, not judged).",
    "secrets": "No secret (detect-secrets) in the spec's values or the model's parameters.",
    "pii": "No emails, phone numbers, IBANs or Luhn-valid card numbers in the training set's "
    "text columns (presidio pattern recognizers); recorded on the version.",
}
MODEL_EVALUATION = dg.AssetKey("model_evaluation")
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
        paths = Paths.from_env()
        if PARTITION_TAG not in context.run.tags:
            # A run for the whole pipeline (CLI, CI): ingest what landed while no sensor ran.
            catch_up_landing(context, spec, paths)
        keys = context.instance.get_dynamic_partitions("batches")
        window = context.run.tags.get(WINDOW_TAG)
        try:
            ref = build_window(keys, spec, paths, int(window) if window else None)
        except NoValidData as error:
            raise dg.Failure(str(error)) from None
        return dg.Output(
            ref,
            metadata={
                "fingerprint": dg.MetadataValue.text(ref.fingerprint),
                "batches": dg.MetadataValue.int(len(ref.batch_keys)),
                "newest_batch": dg.MetadataValue.text(ref.batch_keys[-1]),
                "train_rows": dg.MetadataValue.int(ref.train_rows),
                "holdout_rows": dg.MetadataValue.int(ref.holdout_rows),
            },
        )

    @dg.asset(
        group_name="training",
        kinds={"sklearn", "mlflow"},
        output_required=False,
        description="A pipeline fitted on the training set, registered in MLflow as `challenger`."
        " Skipped when the data fingerprint already has a verdict or another live run is "
        "training it; a version left without a verdict by a killed run is re-evaluated.",
    )
    def candidate_model(
        context: dg.AssetExecutionContext, training_dataset: TrainingSetRef, mlflow: MlflowResource
    ) -> Iterator[dg.Output[ModelVersionInfo]]:
        from ct_platform.training.promotion import GATES_PASSED_TAG
        from ct_platform.training.recovery import fail_orphaned_runs

        registry = mlflow.registry(spec)
        for run_id in fail_orphaned_runs(registry, lambda r: dagster_run_status(context, r)):
            context.log.warning(f"MLflow run {run_id} was left RUNNING by a dead run: now FAILED")
        fingerprint = training_dataset.fingerprint
        if not claimed(context, fingerprint):
            return
        existing = registry.find_version_by_fingerprint(fingerprint)
        if existing is None:
            info = register_candidate(context, training_dataset, registry, spec)
        elif existing.tags.get(GATES_PASSED_TAG) is not None:
            context.log.info(
                f"data fingerprint {fingerprint[:12]} was already trained and evaluated as "
                f"version {existing.version}: no new model, champion unchanged"
            )
            release_claim(claims_dir(), fingerprint, context.run.run_id)
            return
        else:
            info = reevaluate_orphan(context, existing, training_dataset, registry)
        yield dg.Output(
            info,
            metadata={
                "version": dg.MetadataValue.int(info.version),
                "mlflow_run_id": dg.MetadataValue.text(info.run_id),
                "train_rows": dg.MetadataValue.int(training_dataset.train_rows),
                "reevaluated_orphan": dg.MetadataValue.bool(existing is not None),
            },
        )

    @dg.asset(
        group_name="training",
        kinds={"sklearn", "mlflow"},
        check_specs=[
            dg.AssetCheckSpec(
                gate,
                asset=MODEL_EVALUATION,
                blocking=spec.gates.gate(gate).blocking,
                description=GATE_DESCRIPTIONS[gate],
            )
            for gate in GATES
        ],
        description="Candidate and champion scored on the same holdout, and the model gates.",
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
        registry = mlflow.registry(spec)
        evaluation = run_evaluation(candidate_model, training_dataset, registry, spec)
        outcome = evaluation.outcome
        # The verdict is recorded: the fingerprint counts as trained, other runs may go on.
        release_claim(claims_dir(), training_dataset.fingerprint, context.run.run_id)
        metadata = {
            **numbers("candidate", outcome.metrics),
            **numbers("champion", outcome.champion_metrics or {}),
            **numbers("", evaluation.group_figures),
            # Figures as numbers, so the UI plots them over versions.
            **numbers("fairness", outcome.gate("fairness").metadata),
            "version": dg.MetadataValue.int(outcome.version),
            "champion_version": dg.MetadataValue.text(str(outcome.champion_version or "none")),
            "promotable": dg.MetadataValue.bool(outcome.promotable),
        }
        yield dg.Output(outcome, metadata=metadata)
        for gate in outcome.gates:
            yield dg.AssetCheckResult(
                asset_key=MODEL_EVALUATION,
                check_name=gate.name,
                passed=gate.passed,
                severity=severity(gate.blocking),
                metadata=numbers("", gate.metadata),
                description=gate.description,
            )
        if not outcome.promotable:
            # A rejection is an outcome, not a crash: a Failure's description (each failed
            # gate with its figures) is the step's failure message, its metadata shows in the
            # UI, and it is never retried. The run still fails (CI exits non-zero).
            raise dg.Failure(
                description=outcome.rejection(),
                metadata=numbers("", {g.name: g.description for g in outcome.blocking_failures}),
                allow_retries=False,
            )

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

        registry = mlflow.registry(spec)
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
        # Not materialized while the candidate waits for a person's approval (see below).
        output_required=False,
        description=f"The MLflow alias `{CHAMPION}`, moved to the candidate when every "
        "blocking gate passed (and, with `governance.approval: required`, a person approved).",
    )
    def champion(
        context: dg.AssetExecutionContext,
        model_evaluation: EvaluationOutcome,
        mlflow: MlflowResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
        from ct_platform.governance.approval import NotApproved
        from ct_platform.monitoring.champion_reference import save_champion_reference
        from ct_platform.training.promotion import promote

        registry = mlflow.registry(spec)
        try:
            # A progressive strategy gives the version `canary`; its rollout moves `champion`.
            previous = promote(
                registry,
                model_evaluation.version,
                spec,
                dagster_run_id=context.run.run_id,
            )
        except NotApproved as waiting:  # an outcome, not a failure: the champion stays
            yield not_approved_observation(context, waiting)
            return
        # Drift is measured against what the serving model learned from (this version's own
        # training set, carried by its evaluation): move the reference.
        metric = spec.evaluation.primary_metric
        save_champion_reference(
            model_evaluation.training_set.train_path,
            model_evaluation.version,
            model_evaluation.metrics[metric],
            spec,
            Paths.from_env(),
        )
        context.log.info(f"champion: version {previous} -> {model_evaluation.version}")
        yield dg.MaterializeResult(
            metadata={
                "version": dg.MetadataValue.int(model_evaluation.version),
                "previous_version": dg.MetadataValue.text(str(previous or "none")),
                metric: dg.MetadataValue.float(model_evaluation.metrics[metric]),
            }
        )

    return dg.Definitions(
        assets=[training_dataset, candidate_model, model_evaluation, evaluation_reports, champion]
    )


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


def register_candidate(
    context: dg.AssetExecutionContext,
    training_set: TrainingSetRef,
    registry: "ModelRegistry",
    spec: Spec,
) -> ModelVersionInfo:
    """Fit on the training set, register the version, and log the holdout with its run."""
    from ct_platform.training.fit import fit_pipeline
    from ct_platform.training.recovery import WORKER_TAG

    train = training_set.load_train()
    info = registry.log_candidate(
        fit_pipeline(train, spec),
        train=train,
        params={"estimator": spec.model.estimator, **spec.model.params},
        metrics={},
        fingerprint=training_set.fingerprint,
        dagster_run_id=context.run.run_id,
        tags={"ct.batches": ",".join(training_set.batch_keys), WORKER_TAG: current_worker()},
    )
    # Export re-checks ONNX parity on exactly this holdout, so it travels with the run.
    registry.log_artifact(info.run_id, training_set.holdout_path)
    return info


def reevaluate_orphan(
    context: dg.AssetExecutionContext,
    orphan: ModelVersionInfo,
    training_set: TrainingSetRef,
    registry: "ModelRegistry",
) -> ModelVersionInfo:
    """A version registered on this data by a run that died before its gates: evaluate it
    now rather than train a duplicate (the model is complete once registered)."""
    from ct_platform.registry.versions import CHALLENGER
    from ct_platform.training.recovery import REEVALUATED_TAG

    context.log.warning(
        f"version {orphan.version} (data {training_set.fingerprint[:12]}) has no gate verdict: "
        f"its run {orphan.tags.get(DAGSTER_RUN_TAG, '?')} ended before the gates ran. "
        "Re-evaluating that version; no new version is trained."
    )
    # The killed run may have died before logging the holdout: log it again (same data).
    registry.log_artifact(orphan.run_id, training_set.holdout_path)
    registry.set_tags(orphan.version, {REEVALUATED_TAG: context.run.run_id})
    registry.set_alias(CHALLENGER, orphan.version)
    return registry.version(orphan.version)
