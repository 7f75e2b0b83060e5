"""The continuous-training loop end to end, on a real Dagster instance and MLflow store."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from mlflow import MlflowClient

from ct_platform.definitions import build_definitions
from ct_platform.registry.mlflow_registry import ModelRegistry, default_tracking_uri
from ct_platform.settings import Spec, load_spec
from ct_platform_tests.conftest import both_storages
from ct_platform_tests.defs.conftest import STRICT_FLOOR, run_job, spec_variant

pytestmark = pytest.mark.slow


def registry_for(spec: Spec) -> ModelRegistry:
    return ModelRegistry(default_tracking_uri(), spec.model.name, spec.dataset.name)


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@both_storages
def test_batch_runs_ingest_then_one_training_run_promotes(spec, instance, land_bank_batches):
    first, second = land_bank_batches(2)
    instance.add_dynamic_partitions("batches", [first.name, second.name])
    for batch in (first, second):
        ingest = run_job(spec, instance, "batch_job", partition_key=batch.name)
        assert ingest.success and check_results(ingest)["data_contract"].passed

    result = run_job(spec, instance, "training_job")

    assert result.success
    checks = check_results(result)
    assert {"metric_floor", "champion_regression", "latency", "model_size"} <= set(checks)
    registry = registry_for(spec)
    champion = registry.alias_version("champion")
    challenger = registry.alias_version("challenger")
    assert champion is not None and champion.version == challenger.version == 1
    assert champion.tags["ct.gates_passed"] == "true"
    assert champion.metrics["holdout_roc_auc"] > spec.gates.metric_floor.threshold
    evaluation = instance.get_latest_materialization_event(dg.AssetKey("model_evaluation"))
    assert isinstance(evaluation.asset_materialization.metadata["candidate/roc_auc"].value, float)


def test_evaluation_reports_follow_the_evaluation(spec, instance, land_bank_batches):
    land_bank_batches(2)
    assert run_job(spec, instance, "training_job").success
    defs = build_definitions(spec)

    reports = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("evaluation_reports")]
    )

    metadata = reports.get_asset_materialization_events()[0].materialization.metadata
    registry = registry_for(spec)
    run_id = registry.version(1).run_id
    for name in ("model_quality", "data_drift"):
        html = Path(metadata[f"report/{name}_file"].value)
        assert html.exists() and html.stat().st_size > 10_000
        # Opened over HTTP, in MLflow's artifact view of the run (not a file:// link).
        view = registry.artifact_view_url(run_id, f"reports/{html.name}")
        assert metadata[f"report/{name}"].value == view
    assert 0 <= metadata["drift/newest_batch_share"].value <= 1
    logged = MlflowClient(default_tracking_uri()).list_artifacts(run_id, "reports")
    assert {Path(a.path).name for a in logged} == {"model_quality.html", "data_drift.html"}


def test_unchanged_data_creates_no_new_version(spec, instance, land_bank_batches):
    land_bank_batches(2)
    assert run_job(spec, instance, "training_job").success
    registry = registry_for(spec)
    assert registry.alias_version("champion").version == 1

    again = run_job(spec, instance, "training_job")

    assert again.success
    assert registry.alias_version("challenger").version == 1
    assert registry.alias_version("champion").version == 1
    materialized = {e.asset_key.path[-1] for e in again.get_asset_materialization_events()}
    assert "candidate_model" not in materialized and "champion" not in materialized


def test_failed_blocking_gate_keeps_the_champion(spec_file, spec, instance, land_bank_batches):
    land_bank_batches(2)
    assert run_job(spec, instance, "training_job").success
    land_bank_batches(1, first=2)
    strict = load_spec(spec_variant(spec_file, "strict", STRICT_FLOOR))

    result = run_job(strict, instance, "training_job")

    assert not result.success
    assert not check_results(result)["metric_floor"].passed
    registry = registry_for(spec)
    assert registry.alias_version("champion").version == 1
    rejected = registry.version(2)
    assert rejected.tags["ct.gates_passed"] == "false"
    # A rejected version does not keep the `challenger` alias (nothing is in the running).
    assert "challenger" not in rejected.aliases
    assert registry.alias_version("challenger") is None
    # Neither a later automation tick nor a hand-started run promotes that candidate.
    defs = build_definitions(strict)
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert evaluation.total_requested == 0
    by_hand = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("champion")], raise_on_error=False
    )
    assert not by_hand.success
    assert registry.alias_version("champion").version == 1


def test_bad_batch_is_quarantined_and_never_trains(spec, instance, land_bank_batches, write_batch):
    land_bank_batches(2)
    assert run_job(spec, instance, "training_job").success
    bad = write_batch(pd.DataFrame({"age": [30, 40], "job": ["x", "y"]}), "batch-bad.csv")
    instance.add_dynamic_partitions("batches", [bad.name])

    result = run_job(spec, instance, "batch_job", partition_key=bad.name)

    assert not result.success
    contract = check_results(result)["data_contract"]
    assert not contract.passed
    assert not bad.exists()
    quarantined = Path(contract.metadata["quarantined_to"].value)
    assert quarantined.exists() and quarantined.with_name(quarantined.name + ".json").exists()
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert "candidate_model" not in materialized
    assert registry_for(spec).alias_version("champion").version == 1
