"""Training set -> candidate model -> evaluation (with the model gates) -> champion."""

from collections.abc import Iterator

import dagster as dg

from ct_platform.defs.automation import follows_every_update
from ct_platform.defs.data.assets import VALIDATED_BATCH
from ct_platform.defs.data.catch_up import catch_up_landing
from ct_platform.defs.metadata import numbers, report_link, severity
from ct_platform.defs.resources import MlflowResource
from ct_platform.registry.versions import CHAMPION, ModelVersionInfo
from ct_platform.settings import Paths, Spec
from ct_platform.training.datasets import TrainingSetRef
from ct_platform.training.promotion import EvaluationOutcome
from ct_platform.training.window import NoValidData, build_window

GATES = ("metric_floor", "champion_regression", "latency", "model_size")
GATE_DESCRIPTIONS = {
    "metric_floor": "The primary metric on the holdout reaches the spec's floor.",
    "champion_regression": "No worse than the champion, beyond the tolerance, on the same holdout.",
    "latency": "Median single-row scoring time of the bundle that will serve (ONNX or its "
    "sklearn fallback, through the server's scoring path) stays under the spec's limit.",
    "model_size": "The serialized model stays under the spec's size limit.",
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
        " Skipped when the data fingerprint was already trained.",
    )
    def candidate_model(
        context: dg.AssetExecutionContext, training_dataset: TrainingSetRef, mlflow: MlflowResource
    ) -> Iterator[dg.Output[ModelVersionInfo]]:
        from ct_platform.training.fit import fit_pipeline

        registry = mlflow.registry(spec)
        existing = registry.find_version_by_fingerprint(training_dataset.fingerprint)
        if existing is not None:
            context.log.info(
                f"data fingerprint {training_dataset.fingerprint[:12]} was already trained as "
                f"version {existing.version}: no new model, champion unchanged"
            )
            return
        train = training_dataset.load_train()
        model = fit_pipeline(train, spec)
        info = registry.log_candidate(
            model,
            train=train,
            params={"estimator": spec.model.estimator, **spec.model.params},
            metrics={},
            fingerprint=training_dataset.fingerprint,
            dagster_run_id=context.run_id,
            tags={"ct.batches": ",".join(training_dataset.batch_keys)},
        )
        # Export re-checks ONNX parity on exactly this holdout, so it travels with the run.
        registry.log_artifact(info.run_id, training_dataset.holdout_path)
        yield dg.Output(
            info,
            metadata={
                "version": dg.MetadataValue.int(info.version),
                "mlflow_run_id": dg.MetadataValue.text(info.run_id),
                "train_rows": dg.MetadataValue.int(training_dataset.train_rows),
            },
        )

    @dg.asset(
        group_name="training",
        kinds={"sklearn", "mlflow"},
        check_specs=[
            dg.AssetCheckSpec(
                gate,
                asset=MODEL_EVALUATION,
                blocking=getattr(spec.gates, gate).blocking,
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

        registry = mlflow.registry(spec)
        evaluation = run_evaluation(candidate_model, training_dataset, registry, spec)
        outcome = evaluation.outcome
        metadata = {
            **numbers("candidate", outcome.metrics),
            **numbers("champion", outcome.champion_metrics or {}),
            **numbers("", evaluation.group_figures),
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

    @dg.asset(
        group_name="training",
        kinds={"evidently", "mlflow"},
        automation_condition=follows_every_update("training_dataset"),
        description="Evidently HTML reports of each evaluated candidate (model quality on the "
        "holdout, newest batch vs training data), also logged to its MLflow run. Built after "
        "the evaluation, off the promotion path.",
    )
    def evaluation_reports(
        context: dg.AssetExecutionContext,
        model_evaluation: EvaluationOutcome,
        training_dataset: TrainingSetRef,
        mlflow: MlflowResource,
    ) -> dg.MaterializeResult:
        from ct_platform.training.evaluation_reports import write_evaluation_reports

        reports = write_evaluation_reports(
            model_evaluation.version,
            model_evaluation.run_id,
            training_dataset,
            mlflow.registry(spec),
            spec,
        )
        return dg.MaterializeResult(
            metadata={
                **{f"report/{name}": report_link(path) for name, path in reports.paths.items()},
                **numbers("", reports.figures),
                "version": dg.MetadataValue.int(model_evaluation.version),
            }
        )

    @dg.asset(
        group_name="training",
        kinds={"mlflow"},
        # Across runs too: never promote a candidate whose blocking gates did not pass. Only a
        # new evaluation is a reason to promote; a rebuilt training set alone is not.
        automation_condition=dg.AutomationCondition.eager().ignore(
            dg.AssetSelection.assets("training_dataset")
        )
        & dg.AutomationCondition.all_deps_blocking_checks_passed(),
        description=f"The MLflow alias `{CHAMPION}`, moved to the candidate when every "
        "blocking gate passed.",
    )
    def champion(
        context: dg.AssetExecutionContext,
        model_evaluation: EvaluationOutcome,
        training_dataset: TrainingSetRef,
        mlflow: MlflowResource,
    ) -> dg.MaterializeResult:
        from ct_platform.monitoring.champion_reference import save_champion_reference
        from ct_platform.training.promotion import promote

        registry = mlflow.registry(spec)
        previous = promote(registry, model_evaluation.version)
        # Drift is measured against what the serving model learned from: move the reference.
        metric = spec.evaluation.primary_metric
        save_champion_reference(
            training_dataset.train_path,
            model_evaluation.version,
            model_evaluation.metrics[metric],
            spec,
            Paths.from_env(),
        )
        context.log.info(f"champion: version {previous} -> {model_evaluation.version}")
        return dg.MaterializeResult(
            metadata={
                "version": dg.MetadataValue.int(model_evaluation.version),
                "previous_version": dg.MetadataValue.text(str(previous or "none")),
                metric: dg.MetadataValue.float(model_evaluation.metrics[metric]),
            }
        )

    return dg.Definitions(
        assets=[training_dataset, candidate_model, model_evaluation, evaluation_reports, champion]
    )
