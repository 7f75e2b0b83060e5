"""A stopped endpoint is brought back on the champion; a version waiting for its canary gets
its canary beside it, never a direct promotion.

A newcomer's `make demo` (canary spec): v12 held `canary`, v6 served as champion. They
stopped the demo, whose clean-up step then forgot the deployment (the local target's
record), and started it again: the next deploy found "nothing deployed" and promoted v12 as
a first deployment ("nothing served to roll canary out beside"), skipping the canary that
had just rolled back v10. Here, on a real Dagster instance (temp DAGSTER_HOME), a real
MLflow store and real server processes, for each way a server goes away: killed (SIGKILL,
a crash), stopped as the demo stops it (SIGKILL by its supervisor, then its clean-up step),
and with its record lost as well: the watchdog's tick requests the repair, the run restarts
the champion, then starts the waiting version's canary beside it, and the audit log says so.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable

import dagster as dg
import pytest
from mlflow import MlflowClient

from ct_platform.definitions import build_definitions
from ct_platform.defs.resources import MlflowResource
from ct_platform.defs.serving import build_endpoint_watchdog
from ct_platform.deployment import DeploymentTarget, target_for
from ct_platform.deployment.controller import RolloutStore
from ct_platform.deployment.rollout import RolloutError, admin_client, roll_out, served_version
from ct_platform.governance.audit import read_events
from ct_platform.registry.versions import CANARY, CHAMPION
from ct_platform_tests.defs.test_rollback import AUTOMATION_RUN_TAGS
from ct_platform_tests.deployment.conftest import FreshStack
from ct_platform_tests.deployment.test_restart import kill_local_server

pytestmark = pytest.mark.slow

DEPLOYED_ENDPOINT = dg.AssetKey("deployed_endpoint")


def killed(target: DeploymentTarget) -> None:
    """A crash: the process is gone, its record stays."""
    kill_local_server(target)


def demo_stopped(target: DeploymentTarget) -> None:
    """`make demo` stopped: the supervisor kills the server, then its clean-up step runs."""
    kill_local_server(target)
    target.halt()


def record_lost(target: DeploymentTarget) -> None:
    """Stopped and forgotten (`stop()`, or `deployments/` deleted by hand)."""
    os.killpg(json.loads(target.state_file.read_text())["pid"], signal.SIGKILL)  # type: ignore[attr-defined]
    target.stop()


@pytest.mark.parametrize("go_away", [killed, demo_stopped, record_lost])
def test_a_stopped_endpoint_comes_back_on_the_champion_and_the_waiting_version_gets_its_canary(
    fresh_stack: FreshStack,
    instance: dg.DagsterInstance,
    go_away: Callable[[DeploymentTarget], None],
) -> None:
    spec, registry = fresh_stack("canary")
    defs = build_definitions(spec)
    endpoint_job = defs.resolve_implicit_global_asset_job_def()
    # Version 1 went in as the first deployment (no champion before it); version 2 passed
    # its gates and holds `canary`: its rollout has not started when the server goes away.
    registry.set_alias(CANARY, 1)
    assert endpoint_job.execute_in_process(
        instance=instance, asset_selection=[DEPLOYED_ENDPOINT], tags=AUTOMATION_RUN_TAGS
    ).success
    target = target_for(spec)
    url = target.status().endpoint.url  # type: ignore[union-attr]
    registry.set_alias(CANARY, 2)
    go_away(target)
    status = target.status()
    assert status is None or not status.healthy

    context = dg.build_sensor_context(instance=instance, resources={"mlflow": MlflowResource()})
    tick = build_endpoint_watchdog(spec, automation_grace_seconds=0)(context)
    (request,) = tick.run_requests
    gone = {
        killed: f"{url} does not answer (server process is gone)",
        demo_stopped: f"{url} does not answer (server process is gone)",
        record_lost: "no deployment is recorded",
    }[go_away]
    assert request.tags["ct/repair"] == gone
    repair = endpoint_job.execute_in_process(
        instance=instance, asset_selection=request.asset_selection, tags=request.tags
    )
    assert repair.success

    # The champion serves again, version 2 is still only the candidate of a canary.
    assert registry.alias_version(CHAMPION).version == 1  # type: ignore[union-attr]
    assert registry.alias_version(CANARY).version == 2  # type: ignore[union-attr]
    assert served_version(url, spec.model.name) == "1"
    slots = admin_client(spec).slots()
    assert (str(slots["stable"]["version"]), str(slots["candidate"]["version"])) == ("1", "2")
    rollout = RolloutStore(spec.paths.rollouts).read()
    assert rollout is not None and rollout.status == "running"
    assert (rollout.version, rollout.previous_version, rollout.step) == ("2", "1", 0)

    events = read_events()
    assert [(e.from_version, e.to_version) for e in events if e.kind == "promotion"] == [(None, 1)]
    restarted, started = events[-2:]
    assert (restarted.kind, restarted.to_version, restarted.dagster_run_id) == (
        "deployment",
        1,
        repair.run_id,
    )
    found = {
        killed: f"the server at {url} did not answer (server process is gone; its local "
        "target recorded version 1): restarted with version 1",
        demo_stopped: f"the server at {url} did not answer (server process is gone; its local "
        "target recorded version 1): restarted with version 1",
        record_lost: "the local target records no deployment: deployed version 1",
    }[go_away]
    assert restarted.reason == f"{found} ({spec.model.name}-v1) (local {url})"
    assert (started.kind, started.from_version, started.to_version) == ("deployment", 1, 2)
    share = spec.deployment.canary.steps[0]
    assert started.reason == (
        f"canary started: version 2 answers {share:g} % of traffic beside version 1 (local {url})"
    )


def test_a_removed_champion_alias_does_not_let_the_waiting_version_skip_its_canary(
    fresh_stack: FreshStack,
) -> None:
    """No version holds `champion`, but the audit log records one: not a first deployment."""
    spec, registry = fresh_stack("canary")
    registry.set_alias(CANARY, 1)
    url = roll_out(spec, registry).endpoint.url
    # By hand, in the MLflow UI (the platform's registry refuses to remove it).
    MlflowClient(registry.tracking_uri).delete_registered_model_alias(spec.model.name, CHAMPION)
    registry.set_alias(CANARY, 2)
    with pytest.raises(RolloutError) as refused:
        roll_out(spec, registry)
    assert str(refused.value) == (
        "no version holds `champion`, but the audit log records version 1 as the last "
        "champion (champion history [1]): version 2 is not rolled out without a champion to "
        "roll it out beside; set `champion` back on version 1 (MLflow) and deploy again"
    )
    assert registry.alias_version(CHAMPION) is None
    assert registry.alias_version(CANARY).version == 2  # type: ignore[union-attr]
    assert served_version(url, spec.model.name) == "1"
    assert [(e.from_version, e.to_version) for e in read_events() if e.kind == "promotion"] == [
        (None, 1)
    ]
