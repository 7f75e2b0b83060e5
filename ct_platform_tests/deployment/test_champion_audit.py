"""Every move of `champion`, by any path, is one promotion line in the audit log.

On the demo's path (a canary spec): the first champion goes in directly, as nothing serves
yet to roll it out beside, and the next one through a canary that a person promotes from the
`rollout_control` job. Both through a real Dagster instance (temp DAGSTER_HOME), the real
code location's assets and jobs, a real MLflow store and a real local server. The newcomer's
demo showed `v3 (champion)` in `ct status` with no promotion line for it in `ct history`:
the first deployment moved the alias without one (and `ct rollback` reads the champion
history from those lines).
"""

from __future__ import annotations

import dagster as dg
import pytest

from ct_platform.definitions import build_definitions
from ct_platform.deployment import target_for
from ct_platform.deployment.controller import RolloutStore
from ct_platform.deployment.rollout import served_version
from ct_platform.governance.audit import champion_history, read_events
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.registry.versions import CANARY, CHAMPION
from ct_platform.settings import Spec
from ct_platform_tests.defs.test_rollback import AUTOMATION_RUN_TAGS
from ct_platform_tests.deployment.conftest import FreshStack

pytestmark = pytest.mark.slow

DEPLOYED_ENDPOINT = dg.AssetKey("deployed_endpoint")
# What `run_actor` names a run the automation condition sensor requested for the endpoint.
AUTOMATION = "automation condition of deployed_endpoint (default_automation_condition_sensor)"


@pytest.fixture
def canary_stack(fresh_stack: FreshStack) -> tuple[Spec, ModelRegistry]:
    """A canary spec, versions 1 and 2 registered; nothing deployed and no champion yet."""
    return fresh_stack("canary")


def promote_by_hand(
    defs: dg.Definitions, instance: dg.DagsterInstance, *, user: str, reason: str
) -> dg.ExecuteInProcessResult:
    """`user` promotes the active rollout from the UI's `rollout_control` job."""
    control = defs.resolve_job_def("rollout_control").execute_in_process(
        instance=instance,
        run_config={
            "ops": {"control_rollout": {"config": {"action": "promote", "reason": reason}}}
        },
        tags={"dagster/user": user},
    )
    assert control.success
    return control


def test_every_move_of_the_champion_is_one_promotion_line_naming_what_moved_it(
    canary_stack: tuple[Spec, ModelRegistry], instance: dg.DagsterInstance
) -> None:
    spec, registry = canary_stack
    defs = build_definitions(spec)
    endpoint_job = defs.resolve_implicit_global_asset_job_def()

    def deploy() -> dg.ExecuteInProcessResult:
        """`deployed_endpoint` as automation materializes it after a new bundle."""
        return endpoint_job.execute_in_process(
            instance=instance, asset_selection=[DEPLOYED_ENDPOINT], tags=AUTOMATION_RUN_TAGS
        )

    # Version 1 passed its gates: under a canary strategy the `champion` asset gives it
    # `canary`. Nothing serves yet, so it goes in directly and becomes champion.
    registry.set_alias(CANARY, 1)
    first = deploy()
    assert registry.alias_version(CHAMPION).version == 1  # type: ignore[union-attr]
    url = target_for(spec).status().endpoint.url  # type: ignore[union-attr]
    assert served_version(url, spec.model.name) == "1"
    promotions = [e for e in read_events() if e.kind == "promotion"]
    assert [(e.from_version, e.to_version, e.actor, e.dagster_run_id) for e in promotions] == [
        (None, 1, AUTOMATION, first.run_id)
    ]
    assert promotions[0].reason == (
        "every blocking gate passed; first deployment: no version was champion yet, so there "
        "was none to roll canary out beside and it went in directly"
    )

    # Version 2 rolls out beside it; a person promotes it from the UI's job.
    registry.set_alias(CANARY, 2)
    second = deploy()
    rollout = RolloutStore(spec.paths.rollouts).read()
    assert rollout is not None and rollout.active and rollout.version == "2"
    started = read_events()[-1]
    assert (started.kind, started.dagster_run_id) == ("deployment", second.run_id)
    assert started.actor == f"canary rollout {rollout.id} (started by {AUTOMATION})"
    control = promote_by_hand(defs, instance, user="dana", reason="fine")
    assert registry.alias_version(CHAMPION).version == 2  # type: ignore[union-attr]
    assert served_version(url, spec.model.name) == "2"

    promotions = [e for e in read_events() if e.kind == "promotion"]
    by_rollout = (
        f"canary rollout {rollout.id} (dana via dagster job execute via the rollout_control job)"
    )
    assert [(e.from_version, e.to_version, e.actor, e.dagster_run_id) for e in promotions] == [
        (None, 1, AUTOMATION, first.run_id),
        (1, 2, by_rollout, control.run_id),
    ]
    assert "canary completed: version 2 serves all traffic (fine" in promotions[1].reason
    # The log is the champion history `ct rollback` goes back along.
    assert champion_history(read_events(), spec.model.name) == [1, 2]
