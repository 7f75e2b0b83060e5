"""The continuous-training loop end to end, on a real Dagster instance and MLflow store."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from mlflow import MlflowClient
from statsmodels.stats.proportion import proportion_confint

from ct_platform.definitions import build_definitions
from ct_platform.monitoring.champion_reference import load_champion_reference
from ct_platform.registry.mlflow_registry import ModelRegistry, default_tracking_uri
from ct_platform.serving.manifest import verify_manifest
from ct_platform.settings import Paths, Spec, load_spec
from ct_platform.training.datasets import load_training_set
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
    assert {"metric_floor", "champion_regression"} <= set(checks)
    # The artifact gates judge the refit, the thing that will serve.
    assert {"model_size", "resources", "onnx_parity"} <= set(checks)
    assert checks["resources"].asset_key == dg.AssetKey("refit_model")
    assert checks["resources"].metadata["peak_rss_mb"].value > 0
    registry = registry_for(spec)
    holdout_fit, champion = registry.version(1), registry.alias_version("champion")
    # What serves is the whole-window refit of the evaluated holdout fit.
    assert champion is not None and champion.version == 2
    # Promoted: the refit is no longer a challenger (the alias left it when it became champion).
    assert registry.alias_version("challenger") is None
    assert holdout_fit.tags["ct.fit"] == "holdout_split"
    assert champion.tags["ct.fit"] == "whole_window"
    assert champion.tags["ct.refit_of"] == "1"
    assert champion.fingerprint == holdout_fit.fingerprint
    assert champion.tags["ct.batches"] == holdout_fit.tags["ct.batches"]
    assert champion.tags["dagster.run_id"] == result.run_id
    assert (holdout_fit.tags["ct.semver"], champion.tags["ct.semver"]) == ("1.0.0", "1.0.1")
    assert champion.tags["ct.gates_passed"] == "true"
    for gate in ("metric_floor", "champion_regression", "resources", "model_size", "onnx_parity"):
        assert champion.tags[f"ct.gate.{gate}"] == "pass"
        assert champion.tags[f"ct.gate.{gate}.reason"]
    assert (
        champion.tags["ct.gate.metric_floor.reason"]
        == (holdout_fit.tags["ct.gate.metric_floor.reason"])
    )
    # Holdout figures are the holdout fit's (the refit has no holdout), copied with a tag.
    assert champion.metrics["holdout_roc_auc"] == holdout_fit.metrics["holdout_roc_auc"]
    assert champion.metrics["holdout_roc_auc"] > spec.gates.metric_floor.threshold
    assert champion.tags["ct.holdout_metrics_of"] == "1"
    # The bundle the artifact gates judged is the one exported (with its card), built once.
    bundle = spec.paths.bundles / f"{spec.model.name}-v2"
    verify_manifest(bundle)
    assert (bundle / "card.md").exists()
    assert sorted(p.name for p in spec.paths.bundles.iterdir() if p.name.startswith(".")) == []
    evaluation = instance.get_latest_materialization_event(dg.AssetKey("model_evaluation"))
    assert isinstance(evaluation.asset_materialization.metadata["candidate/roc_auc"].value, float)
    # The drift reference is the refit's whole window: train and holdout rows.
    reference = load_champion_reference(Paths.from_env())
    assert reference.version == 2
    window = pd.read_parquet(reference.train_path)
    training_set = load_training_set(champion.fingerprint, Paths.from_env())
    assert len(window) == training_set.train_rows + training_set.holdout_rows
    # Each holdout interval is recorded with its method, on both runs and on the card; the
    # accuracy's is Wilson's for the rows the holdout fit predicted right.
    methods = {"accuracy": "wilson", "balanced_accuracy": "bootstrap", "f1": "bootstrap"}
    methods["roc_auc"] = "delong"
    client = MlflowClient(default_tracking_uri())
    for run_id in (holdout_fit.run_id, champion.run_id):
        tags = client.get_run(run_id).data.tags
        assert {
            k[len("ct.interval.holdout_") :]: v for k, v in tags.items() if "interval" in k
        } == (methods)
    rows = training_set.holdout_rows
    right = round(champion.metrics["holdout_accuracy"] * rows)
    low, high = proportion_confint(right, rows, alpha=0.05, method="wilson")
    assert champion.metrics["holdout_accuracy_ci_low"] == pytest.approx(low)
    assert champion.metrics["holdout_accuracy_ci_high"] == pytest.approx(high)
    assert f"{low:.4g} to {high:.4g} \\(wilson\\)" in (bundle / "card.md").read_text()
    # The refit's run holds the whole window as its input and the holdout for export parity.
    assert {
        a.path for a in MlflowClient(default_tracking_uri()).list_artifacts(champion.run_id)
    } >= {"holdout.parquet"}


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
    assert registry.alias_version("champion").version == 2

    again = run_job(spec, instance, "training_job")

    assert again.success
    assert registry.alias_version("challenger") is None
    assert registry.alias_version("champion").version == 2
    materialized = {e.asset_key.path[-1] for e in again.get_asset_materialization_events()}
    assert not {"candidate_model", "refit_model", "champion"} & materialized


def test_failed_blocking_gate_keeps_the_champion(spec_file, spec, instance, land_bank_batches):
    land_bank_batches(2)
    assert run_job(spec, instance, "training_job").success
    land_bank_batches(1, first=2)
    strict = load_spec(spec_variant(spec_file, "strict", STRICT_FLOOR))

    result = run_job(strict, instance, "training_job")

    assert not result.success
    floor = check_results(result)["metric_floor"]
    assert not floor.passed
    registry = registry_for(spec)
    assert registry.alias_version("champion").version == 2
    rejected = registry.version(3)
    assert rejected.tags["ct.gates_passed"] == "false"
    # Version 3's window shares batches with the champion's (version 2, a whole-window
    # refit): it was compared with version 2's holdout fit, version 1. The message names the
    # serving champion and what it was compared with, as does the evaluation's metadata.
    (failure,) = result.get_step_failure_events()
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("candidate version 3 rejected by blocking gate(s) metric_floor")
    assert "the champion stays (version 2; compared with its holdout fit, version 1):" in message
    evaluation = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("model_evaluation")
    )
    assert (evaluation["champion_version"].value, evaluation["compared_version"].value) == (
        "2",
        "1",
    )
    assert rejected.tags["ct.gate.metric_floor"] == "fail"
    assert rejected.tags["ct.gate.metric_floor.reason"] == floor.description
    # New data: a minor version; no refit of a rejected candidate.
    assert rejected.tags["ct.semver"] == "1.1.0"
    assert registry.find_refit(rejected) is None
    regression = check_results(result)["champion_regression"]
    stand_in = "the champion's holdout fit (version 1, standing in for the serving champion, "
    assert f" vs {stand_in}version 2) " in regression.description
    for figure in ("improvement", "ci_low", "ci_high", "p_value", "mde"):
        assert isinstance(regression.metadata[figure].value, float)
    assert regression.metadata["method"].value == "delong"
    assert "gate.champion_regression.p_value" in rejected.metrics
    # A rejected version does not keep the `challenger` alias (nothing is in the running).
    assert "challenger" not in rejected.aliases
    assert registry.alias_version("challenger") is None
    # Neither a later automation tick nor a hand-started run promotes that candidate.
    defs = build_definitions(strict)
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert evaluation.total_requested == 0
    # The champion step's input is the newest refit, the champion's own (the rejected
    # candidate was never refit): a hand-started run promotes nothing new.
    defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("champion")], raise_on_error=False
    )
    assert registry.alias_version("champion").version == 2
    assert registry.version(3).tags["ct.gates_passed"] == "false"


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
    assert registry_for(spec).alias_version("champion").version == 2
