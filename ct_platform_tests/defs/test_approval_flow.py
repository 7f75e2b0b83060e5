"""Manual approval on a real Dagster instance and MLflow store: nothing promotes until a
person approves, whatever automation or reruns do; a rejection sticks; who and why are kept."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest

from ct_platform.cli import main
from ct_platform.cli.status import verdict
from ct_platform.definitions import build_definitions
from ct_platform.deployment.controller import Rollout, RolloutStore
from ct_platform.governance.audit import current_user, read_events
from ct_platform.registry.mlflow_registry import ModelRegistry, default_tracking_uri
from ct_platform.settings import Spec, load_spec
from ct_platform_tests.defs.conftest import run_job, spec_variant

pytestmark = pytest.mark.slow

CHAMPION = dg.AssetKey("champion")
# Gates that any candidate on this data passes: these tests are about what comes after.
LENIENT_GATES = {"metric_floor": {"threshold": 0.0}, "champion_regression": {"tolerance": 1.0}}


@pytest.fixture
def approval_spec(spec_file: Path, monkeypatch: pytest.MonkeyPatch) -> Spec:
    path = spec_variant(
        spec_file, "approval", {"governance": {"approval": "required"}, "gates": LENIENT_GATES}
    )
    monkeypatch.setenv("CT_SPEC", str(path))
    return load_spec(path)


# The training chain up to the champion: no Evidently reports, no bundle (deploying builds
# it), which these tests do not look at and which take most of a run's time.
TRAIN_AND_PROMOTE = [
    "training_dataset",
    "candidate_model",
    "model_evaluation",
    "refit_model",
    "model_card",
    "champion",
]


def train(
    spec: Spec, instance: dg.DagsterInstance, tags: dict[str, str] | None = None
) -> dg.ExecuteInProcessResult:
    """The training chain, started by hand (`tags`: e.g. the person's `dagster/user`)."""
    selection = [dg.AssetKey(name) for name in TRAIN_AND_PROMOTE]
    result = run_job(spec, instance, "training_job", asset_selection=selection, tags=tags)
    assert result.success
    return result


def registry_for(spec: Spec) -> ModelRegistry:
    return ModelRegistry(default_tracking_uri(), spec.model.name, spec.dataset.name)


def champion_version(spec: Spec) -> int | None:
    champion = registry_for(spec).alias_version("champion")
    return champion.version if champion else None


def latest_champion_status(instance: dg.DagsterInstance) -> str:
    records = instance.fetch_observations(CHAMPION, limit=1).records
    return records[0].asset_observation.metadata["status"].value


def automation_and_reruns_change_nothing(spec: Spec, instance: dg.DagsterInstance) -> None:
    """Whatever the automation requests, and the champion step run again by hand."""
    defs = build_definitions(spec)
    job = defs.resolve_implicit_global_asset_job_def()
    requested = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    keys = [
        key
        for key in (CHAMPION, dg.AssetKey("model_card"), dg.AssetKey("audit_history"))
        if requested.get_num_requested(key)
    ]
    if keys:
        job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=False)
    rerun = job.execute_in_process(instance=instance, asset_selection=[CHAMPION])
    assert rerun.success  # waiting is an outcome, not a failure
    assert not rerun.get_asset_materialization_events()


def test_nothing_promotes_until_approved_and_a_rejection_sticks(
    approval_spec, instance, land_bank_batches, capsys
):
    land_bank_batches(2)
    trained = train(approval_spec, instance)
    materialized = {e.asset_key.path[-1] for e in trained.get_asset_materialization_events()}
    assert "model_evaluation" in materialized and "model_card" in materialized
    assert not {"champion", "model_bundle"} & materialized
    # Version 1 is the holdout fit the gates judged; version 2 its whole-window refit, the
    # one that would serve, waits for a person.
    registry = registry_for(approval_spec)
    assert registry.version(1).tags["ct.gates_passed"] == "true"
    assert registry.version(2).tags["ct.refit_of"] == "1"
    assert registry.version(2).tags["ct.approval"] == "pending"
    assert champion_version(approval_spec) is None
    # The refit that waits is the challenger: a candidate that may still become champion.
    assert registry.alias_version("challenger").version == 2
    assert_card_of_version_1(approval_spec, instance)
    assert latest_champion_status(instance).startswith(
        "waiting for approval of version 2 (ct approve 2"
    )
    automation_and_reruns_change_nothing(approval_spec, instance)
    assert champion_version(approval_spec) is None

    capsys.readouterr()
    assert main(["status"]) == 0
    status = capsys.readouterr().out.splitlines()
    assert (
        status[-1] == "waiting for approval of version 2 (ct approve 2 --reason ..., or ct reject)"
    )
    # A batch trained into it says so too (as `trained into v1 (...), v2 (<this>)`).
    assert verdict(registry.version(2)) == "waiting for approval: ct approve 2"
    # Only the version that waits is decided: not its holdout fit (nobody reviewed that).
    assert main(["approve", "1", "--reason", "holdout fit", "--by", "eve"]) == 1
    refused = capsys.readouterr().err
    assert "version 1 is not waiting for approval" in refused and "versions waiting: 2" in refused
    assert refused.count("\n") == 1 and "Traceback" not in refused, refused
    assert main(["approve", "2", "--reason", "card reviewed", "--by", "alice"]) == 0
    # The answer alone: the job's log stays in the Dagster instance, not on the terminal.
    answer = capsys.readouterr()
    assert answer.out.startswith("version 2 approved by alice: champion version none -> 2 (")
    assert answer.out.count("\n") == 1 and "DEBUG" not in answer.err and "INFO" not in answer.err
    approval_run = answer.out.rstrip(")\n").rsplit(" ", 1)[-1]
    stored = {record.dagster_event_type for record in instance.all_logs(approval_run)}
    assert dg.DagsterEventType.RUN_SUCCESS in stored
    assert champion_version(approval_spec) == 2
    assert registry.alias_version("challenger") is None  # champion now, not a challenger
    approved = registry.version(2).tags
    assert (approved["ct.approval"], approved["ct.approval.by"]) == ("approved", "alice")
    assert approved["ct.approval.reason"] == "card reviewed" and approved["ct.approval.at"]
    champion_event = instance.get_latest_materialization_event(CHAMPION)
    assert champion_event.asset_materialization.metadata["approved_by"].value == "alice"

    land_bank_batches(1, first=2)
    train(approval_spec, instance)
    assert registry.version(4).tags["ct.approval"] == "pending"
    assert registry.alias_version("challenger").version == 4
    assert main(["reject", "4", "--reason", "worse for singles", "--by", "bob"]) == 0
    assert champion_version(approval_spec) == 2
    assert registry.alias_version("challenger") is None  # rejected: never champion
    automation_and_reruns_change_nothing(approval_spec, instance)
    assert latest_champion_status(instance).startswith("version 4 was rejected by bob")
    capsys.readouterr()
    assert main(["approve", "4", "--reason", "changed my mind", "--by", "carol"]) == 1
    assert "decisions are final" in capsys.readouterr().err
    assert champion_version(approval_spec) == 2
    assert registry.version(4).tags["ct.approval.by"] == "bob"

    events = [(e.kind, e.to_version, e.actor, e.reason) for e in read_events()]
    # The training run was executed in-process (as `dagster job execute` runs it).
    assert events[0][:3] == ("approval_requested", 2, f"{current_user()} via dagster job execute")
    assert ("approval", 2, "alice", "card reviewed") in events
    assert events.index(("approval", 2, "alice", "card reviewed")) < [e[0] for e in events].index(
        "promotion"
    )
    promotion = next(e for e in read_events() if e.kind == "promotion")
    assert (promotion.from_version, promotion.to_version, promotion.actor) == (None, 2, "alice")
    assert "approved by alice: card reviewed" in promotion.reason
    assert ("rejection", 4, "bob", "worse for singles") in events


def assert_card_of_version_1(spec: Spec, instance: dg.DagsterInstance) -> None:
    """Version 1's card, logged to its own MLflow run by the training run's model_card step."""
    registry = registry_for(spec)
    info = registry.version(1)
    with tempfile.TemporaryDirectory() as folder:
        card = registry.download_artifact(info.run_id, "card/card.md", Path(folder)).read_text()
        page = registry.download_artifact(info.run_id, "card/card.html", Path(folder)).read_text()
    assert "# Model card: bank\\_marketing version 1" in card
    assert f"`{info.fingerprint}`" in card
    assert f"| holdout\\_roc\\_auc | {info.metrics['holdout_roc_auc']:.4g} |" in card
    assert "batch-00001.csv, batch-00002.csv" in card.replace("\\", "")
    assert "| metric\\_floor | pass | roc\\_auc" in card
    assert "| married |" in card  # per-group figures from the version's own run
    assert spec.model.intended_use.split()[0] in card
    assert "## Approval" in card
    assert "<h2>Intended use</h2>" in page
    metadata = instance.get_latest_materialization_event(dg.AssetKey("model_card"))
    assert metadata.asset_materialization.metadata["version"].value == 1


def test_approving_under_a_progressive_strategy_says_the_rollout_not_a_champion_move(
    approval_spec, spec_file, instance, land_bank_batches, capsys, monkeypatch
):
    """Under `deployment.strategy: ab` an approved version gets `canary`: the answer says so,
    names the champion that keeps serving, and the audit lines name it as the from-version."""
    land_bank_batches(2)
    train(approval_spec, instance)
    requested = next(e for e in read_events() if e.kind == "approval_requested")
    assert (requested.from_version, requested.to_version) == (None, 2)
    assert requested.reason.endswith("; no champion yet")
    assert main(["approve", "2", "--reason", "card ok", "--by", "alice"]) == 0
    assert capsys.readouterr().out.startswith(
        "version 2 approved by alice: champion version none -> 2 (Dagster run "
    )

    changes = {"governance": {"approval": "required"}, "gates": LENIENT_GATES}
    ab_path = spec_variant(spec_file, "ab", {**changes, "deployment": {"strategy": "ab"}})
    monkeypatch.setenv("CT_SPEC", str(ab_path))
    ab_spec = load_spec(ab_path)
    land_bank_batches(1, first=2)
    train(ab_spec, instance)
    registry = registry_for(ab_spec)
    assert registry.version(4).tags["ct.approval"] == "pending"
    requested = [e for e in read_events() if e.kind == "approval_requested"][-1]
    assert (requested.from_version, requested.to_version) == (2, 4)
    assert not requested.reason.endswith("no champion yet")

    # Version 3's A/B test is running (as its rollout records it) when 4 is approved.
    running = Rollout("v3-1", "ab", "3", "2", "bank_marketing-v3", time.time(), phase="test")
    RolloutStore(ab_spec.paths.rollouts).write(running)
    assert main(["approve", "4", "--reason", "card ok", "--by", "alice"]) == 0
    answer, waits = capsys.readouterr().out.splitlines()
    run_id = answer.rstrip(")").rsplit(" ", 1)[-1]
    assert answer == (
        "version 4 approved by alice: rollout of version 4 pending (ab): it holds `canary` and "
        "its rollout starts when deployed_endpoint next runs; champion stays version 2 until "
        f"the rollout completes (Dagster run {run_id})"
    )
    assert waits == (
        "ct approve: another rollout is active: rollout v3-1 (A/B test of version 3) is "
        "running: version 4's rollout starts after it ends (completes, is rolled back, or "
        "`ct rollout promote|abort`); the endpoint_watchdog then starts it"
    )
    assert champion_version(ab_spec) == 2
    assert registry.alias_version("canary").version == 4
    approval = [e for e in read_events() if e.kind == "approval"][-1]
    assert (approval.from_version, approval.to_version, approval.actor) == (2, 4, "alice")
    # No promotion line: `champion` did not move (the rollout writes it when it completes).
    assert [e.to_version for e in read_events() if e.kind == "promotion"] == [2]
    metadata = instance.get_latest_materialization_event(CHAMPION).asset_materialization.metadata
    assert (metadata["champion_version"].value, metadata["strategy"].value) == ("2", "ab")
    assert "canary" in metadata["aliases"].value.split(",")
