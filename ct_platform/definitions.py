"""The Dagster code location: `ct_platform.definitions:defs`.

Assets, checks and sensors come from `ct_platform.defs.<domain>`, each built from the project
spec, so a new dataset is a new spec file and never a code change. An invalid spec fails
here, at load, with an error naming the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from ct_platform.defs.data import build_data_defs
from ct_platform.defs.data.sensors import build_landing_sensor
from ct_platform.defs.governance import build_governance_defs
from ct_platform.defs.io import JsonIOManager
from ct_platform.defs.monitoring import build_monitoring_defs, build_retrain_sensor
from ct_platform.defs.resources import MlflowResource, env_or_none
from ct_platform.defs.serving import (
    build_endpoint_watchdog,
    build_rollout_defs,
    build_serving_defs,
)
from ct_platform.defs.skipped_gates import say_skipped_gates
from ct_platform.defs.training import build_security_checks, build_training_defs
from ct_platform.defs.training.assets import MODEL_EVALUATION, REFIT_MODEL
from ct_platform.defs.training_sensor import PIPELINE_TAGS, build_training_sensor
from ct_platform.settings import Spec, load_spec

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

# A training run leaves an evaluated, reported and (when promoted) exported champion, so
# `dagster job execute -j training_job` in CI produces what the daemon does. A failed blocking
# gate fails `model_evaluation` (or `refit_model`), which skips `champion` and `model_bundle`;
# the reports depend on the candidate only, so a rejected candidate is reported too. Deploying
# stays out: a CI run must not start a server; under the daemon, automation deploys each new
# bundle.
TRAINING_CHAIN = [
    "training_dataset",
    "candidate_model",
    "model_evaluation",
    "refit_model",
    "evaluation_reports",
    "model_card",
    "champion",
    "model_bundle",
]
INGEST_ASSETS = ["raw_batch", "validated_batch"]


def build_jobs() -> list[UnresolvedAssetJobDefinition]:
    # In-process: every step shares one Python process, so sklearn/mlflow/evidently are
    # imported once per run instead of once per step.
    batch_job = dg.define_asset_job(
        "batch_job",
        selection=dg.AssetSelection.assets(*INGEST_ASSETS),
        executor_def=dg.in_process_executor,
        description="Ingest one landed batch: read it, check its data contract, store it as "
        "typed Parquet or quarantine it with the reason. Training follows (training_sensor).",
    )
    training_job = dg.define_asset_job(
        "training_job",
        selection=dg.AssetSelection.assets(*TRAINING_CHAIN),
        executor_def=dg.in_process_executor,
        tags=PIPELINE_TAGS,
        description="Retrain on the newest window of valid batches (ingesting any landed file "
        "not seen yet), gate, report, and promote and export the champion if every blocking "
        "gate passes. Fails naming the gate when a blocking gate fails (reports still built).",
    )
    return [batch_job, training_job]


def build_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Declarative Automation, on by default: deploys each new champion, runs monitoring."""
    return dg.AutomationConditionSensorDefinition(
        "ct_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        description="Evaluates the assets' automation conditions (deployment, monitoring).",
    )


def build_definitions(spec: Spec) -> dg.Definitions:
    batch_job, training_job = build_jobs()
    # A run with nothing to train skips the gated steps: said as such, not as a warning.
    say_skipped_gates(key.to_python_identifier() for key in (MODEL_EVALUATION, REFIT_MODEL))
    return dg.Definitions.merge(
        build_data_defs(spec),
        build_training_defs(spec),
        build_security_checks(spec),
        build_serving_defs(spec),
        build_rollout_defs(spec),
        build_monitoring_defs(spec),
        build_governance_defs(spec),
        dg.Definitions(
            jobs=[batch_job, training_job],
            sensors=[
                build_landing_sensor(spec, batch_job.name),
                build_training_sensor(training_job.name),
                build_retrain_sensor(spec, training_job.name),
                build_endpoint_watchdog(spec),
                build_automation_sensor(),
            ],
            resources={
                "mlflow": MlflowResource(tracking_uri=env_or_none("MLFLOW_TRACKING_URI")),
                # Step outputs as JSON, one file per run: never pickled (defs/io.py).
                "io_manager": JsonIOManager(model=spec.model.name),
            },
        ),
    )


defs = build_definitions(load_spec())
