"""Crash recovery and concurrency of training, on a real Dagster instance and MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import dagster as dg
import pytest
from mlflow import MlflowClient

from ct_platform.definitions import build_definitions
from ct_platform.registry.mlflow_registry import ModelRegistry, default_tracking_uri
from ct_platform.registry.versions import DAGSTER_RUN_TAG
from ct_platform.settings import Spec
from ct_platform.training.claims import current_worker
from ct_platform.training.recovery import REEVALUATED_TAG, WORKER_TAG
from ct_platform.training.refit import promotion_pending
from ct_platform_tests.defs.conftest import run_job
from ct_platform_tests.defs.test_job_cli import TRAINING_JOB_COMMAND

pytestmark = pytest.mark.slow


def registry_for(spec: Spec) -> ModelRegistry:
    return ModelRegistry(default_tracking_uri(), spec.model.name, spec.dataset.name)


def dead_worker() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{current_worker().split(':')[0]}:{child.pid}:0"


def started_dagster_run(instance: dg.DagsterInstance) -> str:
    """A run Dagster still shows as STARTED (as a run killed with -9 stays)."""
    run = instance.add_run(
        dg.DagsterRun(
            job_name="training_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED
        )
    )
    return run.run_id


def test_version_without_verdict_is_reevaluated_and_dead_runs_fail(
    spec, instance, land_bank_batches
):
    land_bank_batches(2)
    # A run that registered its candidate and died before the gates: no verdict on version 1.
    partial = run_job(
        spec,
        instance,
        "training_job",
        asset_selection=[dg.AssetKey("training_dataset"), dg.AssetKey("candidate_model")],
    )
    registry = registry_for(spec)
    assert partial.success and "ct.gates_passed" not in registry.version(1).tags
    client = MlflowClient(default_tracking_uri())
    experiment = registry.experiment_id
    left_by_gone_run = client.create_run(experiment, tags={DAGSTER_RUN_TAG: "no-such-run"})
    left_by_killed_worker = client.create_run(
        experiment,
        tags={DAGSTER_RUN_TAG: started_dagster_run(instance), WORKER_TAG: dead_worker()},
    )
    still_working = client.create_run(
        experiment,
        tags={DAGSTER_RUN_TAG: started_dagster_run(instance), WORKER_TAG: current_worker()},
    )

    result = run_job(spec, instance, "training_job")

    assert result.success
    reevaluated = registry.version(1)
    assert reevaluated.tags["ct.gates_passed"] == "true"
    assert reevaluated.tags[REEVALUATED_TAG] == result.run_id
    # The refit (version 2) serves; the fingerprint still finds the holdout fit, never it.
    assert registry.alias_version("champion").version == 2
    assert registry.find_version_by_fingerprint(reevaluated.fingerprint).version == 1
    candidate = next(
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[-1] == "candidate_model"
    )
    assert candidate.materialization.metadata["resumed"].value is True
    for orphan in (left_by_gone_run, left_by_killed_worker):
        run = client.get_run(orphan.info.run_id)
        assert run.info.status == "FAILED"
        assert run.data.tags["ct.failed_reason"].startswith("orphaned:")
    assert client.get_run(still_working.info.run_id).info.status == "RUNNING"

    # Now the verdict is recorded: the same data trains and evaluates nothing again.
    again = run_job(spec, instance, "training_job")
    materialized = {e.asset_key.path[-1] for e in again.get_asset_materialization_events()}
    assert again.success and "candidate_model" not in materialized


# Two CLI runs at once on a shared 2-core box: minutes of wall time each.
@pytest.mark.timeout(3600)
def test_two_runs_on_the_same_new_data_register_one_version(
    spec, spec_file, instance, land_bank_batches
):
    land_bank_batches(2)
    # Ingest first, so both runs below see the same batches and build the same fingerprint.
    ingest = (
        build_definitions(spec)
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(instance=instance, asset_selection=[dg.AssetKey("training_dataset")])
    )
    assert ingest.success
    env = {**os.environ, "CT_SPEC": str(spec_file)}
    command = TRAINING_JOB_COMMAND

    runs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=1500)[0] for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    registry = registry_for(spec)
    fingerprint = registry.version(1).fingerprint
    versions = MlflowClient(default_tracking_uri()).search_model_versions(
        f"name = '{spec.model.name}'"
    )
    # One holdout fit and one whole-window refit: the claim is held until the promotion.
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert registry.version(1).tags["ct.gates_passed"] == "true"
    assert registry.version(2).tags["ct.refit_of"] == "1"
    assert registry.alias_version("champion").version == 2
    promotions = instance.fetch_materializations(dg.AssetKey("champion"), limit=10).records
    assert len(promotions) == 1
    # The other run said why it trained nothing.
    assert any(
        f"data fingerprint {fingerprint[:12]} is being trained by" in output
        or f"data fingerprint {fingerprint[:12]} was already trained" in output
        for output in outputs
    )


# Three training runs: on the loaded shared box, over 15 min.
@pytest.mark.timeout(3600)
def test_a_promotion_killed_after_the_verdict_is_resumed_not_lost(
    spec, spec_file, instance, land_bank_batches
):
    land_bank_batches(2)
    registry = registry_for(spec)
    through = ["training_dataset", "candidate_model", "model_evaluation"]
    # Killed between the verdict and the refit: version 1 passed, nothing was refit.
    verdict_only = run_job(
        spec, instance, "training_job", asset_selection=[dg.AssetKey(a) for a in through]
    )
    assert verdict_only.success and registry.version(1).tags["ct.gates_passed"] == "true"
    assert registry.alias_version("champion") is None

    # Killed between the refit's registration and its promotion.
    refit_only = run_job(
        spec,
        instance,
        "training_job",
        asset_selection=[dg.AssetKey(a) for a in [*through, "refit_model"]],
    )
    assert refit_only.success
    refit = registry.version(2)
    assert refit.tags["ct.refit_of"] == "1" and refit.tags["ct.gates_passed"] == "true"
    assert registry.alias_version("champion") is None
    assert registry.find_version_by_fingerprint(refit.fingerprint).version == 1

    # The next run on the same data promotes that refit: judged again, not fitted again.
    resumed = run_job(
        spec,
        instance,
        "training_job",
        asset_selection=[dg.AssetKey(a) for a in [*through, "refit_model", "champion"]],
    )

    assert resumed.success
    assert sorted(v.version for v in registry.versions()) == [1, 2]
    assert registry.alias_version("champion").version == 2
    assert registry.version(2).tags["ct.promoted_by"] == resumed.run_id
    refit_event = next(
        e
        for e in resumed.get_asset_materialization_events()
        if e.asset_key.path[-1] == "refit_model"
    )
    assert refit_event.materialization.metadata["reused"].value is True
    # Promoted once: nothing is pending any more on this data.
    assert not promotion_pending(registry, registry.version(1))
