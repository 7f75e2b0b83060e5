"""Audit lines and refusals say what was compared and found, never a guessed reason.

Newcomers found lines whose reason was a fixed default: `v6 -> v6 ... the champion's bundle
changed` written after a canary of v6 had completed (it had already moved v6's bundle into
the server's stable slot), `v4 -> v4 ... bundle changed` when the watchdog restarted a dead
server, and a second `ct rollback` refused with "the audit log lists no version other than
4 that passed its gates" when the log also held version 6, rolled back from. Everything here
is real: a Dagster instance in a temp DAGSTER_HOME running the code location's
`deployed_endpoint` and `endpoint_watchdog`, an MLflow store, a local server process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import dagster as dg
import pandas as pd
import pytest

from ct_platform.cli import main as ct_main
from ct_platform.cli.status import former_champions, verdict
from ct_platform.definitions import build_definitions
from ct_platform.defs.resources import MlflowResource
from ct_platform.defs.serving import build_endpoint_watchdog
from ct_platform.defs.serving.assets import MODEL_BUNDLE
from ct_platform.deployment import target_for
from ct_platform.deployment.controller import RolloutStore
from ct_platform.deployment.endpoint import Health, probe
from ct_platform.deployment.rollout import admin_client, controller_for, roll_out, served_version
from ct_platform.deployment.state import read_json
from ct_platform.governance.audit import AuditEvent, read_events
from ct_platform.governance.lifecycle import set_champion
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.registry.versions import CANARY, CHAMPION
from ct_platform.settings import Spec
from ct_platform.training.bundling import build_bundle
from ct_platform.training.promotion import GATES_PASSED_TAG, promote
from ct_platform_tests.conftest import BANK_SPEC
from ct_platform_tests.defs.test_rollback import AUTOMATION_RUN_TAGS
from ct_platform_tests.deployment.conftest import (
    FreshStack,
    assert_still_held,
    fit_pipeline,
    log_versions,
    slowloris,
)
from ct_platform_tests.deployment.test_champion_audit import AUTOMATION

pytestmark = pytest.mark.slow

DEPLOYED_ENDPOINT = dg.AssetKey("deployed_endpoint")
MODEL = "bank_marketing"
# The tag Dagster puts on a run a sensor requested: the watchdog's runs carry it.
WATCHDOG_RUN_TAGS = {"dagster/sensor_name": "endpoint_watchdog"}


@pytest.fixture
def stack(request: pytest.FixtureRequest, fresh_stack: FreshStack) -> tuple[Spec, ModelRegistry]:
    """Strategy `request.param` (default direct); versions 1 and 2 passed their gates."""
    return fresh_stack(getattr(request, "param", "direct"), gates_passed=True)


def materialize_endpoint(
    spec: Spec, instance: dg.DagsterInstance, tags: dict[str, str]
) -> dict[str, object]:
    """One `deployed_endpoint` run (as automation or the watchdog requests it); its
    materialization's metadata as plain values."""
    job = build_definitions(spec).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=instance, asset_selection=[DEPLOYED_ENDPOINT], tags=tags
    )
    materialization = result.get_asset_materialization_events()[0].materialization
    return {key: value.value for key, value in materialization.metadata.items()}


def watchdog_tick(spec: Spec, instance: dg.DagsterInstance) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, resources={"mlflow": MlflowResource()})
    return build_endpoint_watchdog(spec, automation_grace_seconds=0)(context)


def server_pid(spec: Spec) -> int:
    state = read_json(spec.paths.deployments / "local.json")
    assert state is not None
    return int(state["pid"])


def lines(events: list[AuditEvent]) -> list[tuple[str, int | None, int | None, str]]:
    return [(e.kind, e.from_version, e.to_version, e.reason) for e in events]


@pytest.mark.parametrize("stack", ["canary"], indirect=True)
def test_a_rerun_after_a_completed_canary_deploys_nothing_and_writes_no_line(
    stack: tuple[Spec, ModelRegistry], instance: dg.DagsterInstance
) -> None:
    spec, registry = stack
    registry.set_alias(CANARY, 1)  # nothing serves yet: version 1 goes in directly
    first = materialize_endpoint(spec, instance, AUTOMATION_RUN_TAGS)
    url = str(first["url"])
    deployed = [e for e in read_events() if e.kind == "deployment"]
    assert lines(deployed) == [
        (
            "deployment",
            None,
            1,
            f"nothing was deployed on the local target: deployed version 1 ({MODEL}-v1) "
            f"(local {url})",
        )
    ]

    # Version 2's canary completes: the server promotes it and its target records v2's bundle.
    registry.set_alias(CANARY, 2)
    materialize_endpoint(spec, instance, AUTOMATION_RUN_TAGS)
    completed = controller_for(spec, registry).control("promote", "fine")
    assert completed.status == "completed"
    assert registry.alias_version(CHAMPION).version == 2  # type: ignore[union-attr]
    before = read_events()
    pid = server_pid(spec)

    # Automation (or anything else) materializes the endpoint again: nothing needs doing.
    again = materialize_endpoint(spec, instance, AUTOMATION_RUN_TAGS)
    assert again["changed"] is False
    assert again["reason"] == (
        f"{url} already serves version 2 from {MODEL}-v2 (the champion is version 2): "
        "nothing to deploy"
    )
    assert read_events() == before  # it said "v2 -> v2 ... the champion's bundle changed"
    assert server_pid(spec) == pid and served_version(url, MODEL) == "2"
    # No swap either: the slot behind stable is still version 1, as the completion left it.
    assert admin_client(spec).slots()["previous"]["version"] == "1"
    skip = watchdog_tick(spec, instance).skip_reason
    assert skip is not None and skip.skip_message == f"{url} serves the champion, version 2"
    promoted = [e for e in before if e.kind == "promotion"][-1]
    assert verdict(registry.version(1), {}, former_champions(MODEL)) == (
        f"champion until replaced by version 2 at {promoted.at}"
    )


def test_the_watchdog_restarting_a_dead_server_says_what_it_found(
    stack: tuple[Spec, ModelRegistry], instance: dg.DagsterInstance
) -> None:
    spec, registry = stack
    set_champion(registry, 1, spec)
    url = str(materialize_endpoint(spec, instance, AUTOMATION_RUN_TAGS)["url"])
    os.kill(server_pid(spec), signal.SIGKILL)

    request = watchdog_tick(spec, instance).run_requests[0]
    assert request.tags["ct/repair"] == f"{url} does not answer (server process is gone)"
    revived = materialize_endpoint(spec, instance, {**request.tags, **WATCHDOG_RUN_TAGS})
    assert revived["changed"] is True
    line = read_events()[-1]
    assert (line.kind, line.from_version, line.to_version, line.actor) == (
        "deployment",
        1,
        1,
        "sensor:endpoint_watchdog",
    )
    # It said "v1 -> v1 ... the champion's bundle changed".
    assert line.reason == (
        f"the server at {url} did not answer (server process is gone; its local target "
        f"recorded version 1): restarted with version 1 ({MODEL}-v1) (local {url})"
    )
    assert served_version(url, MODEL) == "1"


def test_a_second_rollback_says_what_the_champion_history_holds(
    stack: tuple[Spec, ModelRegistry],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec, registry = stack
    # `ct rollback` loads the bank spec; on this test's port.
    monkeypatch.setenv("CT_SPEC", str(BANK_SPEC))
    monkeypatch.setenv("CT_SERVING_PORT", str(spec.serving.port))
    for version in (1, 2):  # promoted, then deployed as `deployed_endpoint` does
        promote(registry, version, spec, actor="automation")
        assert roll_out(spec, registry).changed
    assert ct_main(["rollback", "--reason", "v2 misroutes calls", "--by", "carol"]) == 0
    capsys.readouterr()
    url = target_for(spec).status().endpoint.url  # type: ignore[union-attr]
    rolled = read_events()[-2:]
    assert lines(rolled) == [
        ("rollback", 2, 1, "v2 misroutes calls"),
        (
            "deployment",
            2,
            1,
            f"rollback from version 2; {url} served version 2; the champion is version 1: "
            f"deployed version 1 ({MODEL}-v1) (local {url})",
        ),
    ]

    # Nothing served before version 1, and version 2 was rolled back from: refused, saying so
    # (it said "the audit log lists no version other than 1 that passed its gates").
    assert ct_main(["rollback", "--reason", "again"]) == 1
    assert capsys.readouterr().err == (
        f"ct rollback: no previous champion of '{MODEL}' to roll back to: the audit log's "
        "champion history is [1] (oldest first): version 1 is the first champion it "
        "records; already rolled back from, so never gone back to: version 2 (rolled "
        f"back by carol at {rolled[0].at}: v2 misroutes calls). The champion stays "
        f"version 1 (spec {BANK_SPEC}, CT_HOME {spec.paths.home})\n"
    )
    assert registry.alias_version(CHAMPION).version == 1  # type: ignore[union-attr]
    assert read_events()[-2:] == rolled
    # `ct status` says why version 2 no longer serves (it said "passed its gates").
    assert verdict(registry.version(2), {}, former_champions(MODEL)) == (
        f"champion until rolled back to version 1 by carol at {rolled[0].at}: v2 misroutes calls"
    )


@pytest.mark.parametrize("stack", ["canary"], indirect=True)
def test_the_endpoint_run_after_a_completed_canary_says_what_started_it(
    stack: tuple[Spec, ModelRegistry],
    instance: dg.DagsterInstance,
    train_holdout: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """A newcomer's demo ran `deployed_endpoint` 74 s after version 6's canary completed,
    and nobody could tell why. Its Dagster instance told: the automation condition
    (evaluation 230, `any_deps_updated`): a training run had given version 8 `canary` and
    exported its bundle 5 s before the completion, which then dropped `canary` from
    version 8 as well (fixed since), so the run found nothing to do. Replayed here on a real
    instance: the completion keeps version 3's `canary`, one automation tick requests the
    run, the run starts version 3's rollout and says what started it and which bundle."""
    spec, registry = stack
    train, holdout = train_holdout
    third = fit_pipeline(spec, train, max_iter=60)  # one more good model
    build_bundle(
        third,
        spec,
        name=MODEL,
        version="3",
        fingerprint="test-3",
        holdout=holdout,
        directory=spec.paths.bundles / f"{MODEL}-v3",
    )
    log_versions(registry, third, train, ("test-3",))
    registry.set_tags(3, {GATES_PASSED_TAG: "true"})
    defs = build_definitions(spec)
    job = defs.resolve_implicit_global_asset_job_def()
    ticks = [dg.evaluate_automation_conditions(defs=defs, instance=instance)]

    def tick() -> int:
        """One evaluation of the automation conditions: runs requested for the endpoint."""
        ticks.append(
            dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=ticks[-1].cursor)
        )
        return ticks[-1].get_num_requested(DEPLOYED_ENDPOINT)

    def export(version: int) -> dg.ExecuteInProcessResult:
        """What a training run does after `champion` gives `version` the `canary` alias."""
        registry.set_alias(CANARY, version)
        return job.execute_in_process(instance=instance, asset_selection=[MODEL_BUNDLE])

    export(1)
    assert tick() == 1
    materialize_endpoint(spec, instance, AUTOMATION_RUN_TAGS)  # goes in directly: champion
    assert tick() == 0  # the daemon ticks every 15 s: one sees the run done
    export(2)
    assert tick() == 1
    materialize_endpoint(spec, instance, AUTOMATION_RUN_TAGS)  # version 2's canary starts
    assert tick() == 0
    exported = export(3)  # a training run while version 2 rolls out
    completed = controller_for(spec, registry).control("promote", "fine")

    assert completed.status == "completed" and completed.version == "2"
    assert registry.alias_version(CHAMPION).version == 2  # type: ignore[union-attr]
    assert registry.alias_version(CANARY).version == 3  # type: ignore[union-attr]
    assert tick() == 1  # model_bundle was updated (version 3's export): the endpoint follows
    ran = materialize_endpoint(spec, instance, AUTOMATION_RUN_TAGS)
    assert ran["requested_by"] == AUTOMATION
    assert str(ran["latest_bundle"]).startswith(
        f"version 3, exported by Dagster run {exported.run_id[:8]} (__ASSET_JOB) at "
    )
    rollout = RolloutStore(spec.paths.rollouts).read()
    assert rollout is not None and rollout.version == "3" and rollout.status == "running"
    assert ran["changed"] is True and ran["rollout"] == "canary of v3"
    started = read_events()[-1]
    assert (started.kind, started.from_version, started.to_version) == ("deployment", 2, 3)
    assert started.actor == f"canary rollout {rollout.id} (started by {AUTOMATION})"


def test_the_watchdog_leaves_a_server_busy_at_its_cap_alone_and_restarts_a_hung_one(
    stack: tuple[Spec, ModelRegistry], instance: dg.DagsterInstance
) -> None:
    """Busy (alive at its connection cap, real connections held) is left alone, and the
    tick says so; hung (alive, `/ping` silent `serving.hung_after_s`) is restarted."""
    spec, registry = stack
    serving = spec.serving.model_copy(update={"max_connections": 2, "hung_after_s": 1.0})
    spec = spec.model_copy(update={"serving": serving})
    set_champion(registry, 1, spec)
    url = str(materialize_endpoint(spec, instance, AUTOMATION_RUN_TAGS)["url"])
    pid = server_pid(spec)
    before = read_events()

    held = slowloris(url, 2)
    try:
        deadline = time.monotonic() + 120
        while probe(url, timeout=30) is not Health.BUSY:  # the server reads them at its pace
            assert time.monotonic() < deadline, "the server never held the 2 requests"
            time.sleep(0.05)
        tick = watchdog_tick(spec, instance)
        assert not tick.run_requests
        assert tick.skip_reason is not None and tick.skip_reason.skip_message == (
            f"{url} is alive but busy (pid {pid}, busy: holds its maximum of 2 connections "
            "(serving.max_connections) (alive, overloaded; not restarted)): left alone"
        )
        assert_still_held(held)  # by the same server
    finally:
        for sock in held:
            sock.close()
    assert server_pid(spec) == pid and read_events() == before

    os.kill(pid, signal.SIGSTOP)  # alive, /ping silent
    try:
        request = watchdog_tick(spec, instance).run_requests[0]
        assert request.tags["ct/repair"] == f"{url} does not answer (pid {pid}, not ready)"
        revived = materialize_endpoint(spec, instance, {**request.tags, **WATCHDOG_RUN_TAGS})
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert revived["changed"] is True and server_pid(spec) != pid
    line = read_events()[-1]
    assert (line.kind, line.actor, line.to_version) == ("deployment", "sensor:endpoint_watchdog", 1)
    assert line.reason == (
        f"the server at {url} did not answer (pid {pid}, not ready; its local target recorded "
        f"version 1): restarted with version 1 ({MODEL}-v1) (local {url})"
    )
    assert served_version(url, MODEL) == "1"
