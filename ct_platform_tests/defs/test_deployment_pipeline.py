"""A new champion is exported, deployed by Declarative Automation, and served over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest

from ct_platform.definitions import build_definitions
from ct_platform.defs.resources import MlflowResource
from ct_platform.defs.serving import build_endpoint_watchdog
from ct_platform.deployment.rollout import example_row, roll_out
from ct_platform.deployment.targets import target_for
from ct_platform.settings import Spec, load_spec
from ct_platform_tests.defs.conftest import run_job, spec_variant

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served_spec(spec_file: Path) -> Iterator[Spec]:
    spec = load_spec(spec_variant(spec_file, "served", {"serving": {"port": free_port()}}))
    yield spec
    target_for(spec).stop()


class AutomationDaemon:
    """Evaluates the automation conditions tick after tick, with a cursor, as the daemon does,
    and runs what they request."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.defs, self.instance = defs, instance
        self.cursor = None
        self.checks: dict[str, bool] = {}

    def tick(self) -> set[str]:
        evaluation = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.cursor
        )
        self.cursor = evaluation.cursor
        return self._run(evaluation)

    def _run(self, evaluation: dg.EvaluateAutomationConditionsResult) -> set[str]:
        requested = [
            key
            for key in (dg.AssetKey(name) for name in ("model_bundle", "deployed_endpoint"))
            if evaluation.get_num_requested(key)
        ]
        if requested:
            result = self.defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=self.instance, asset_selection=requested, raise_on_error=True
            )
            evaluations = result.get_asset_check_evaluations()
            self.checks.update({e.check_name: e.passed for e in evaluations})
        return {key.path[-1] for key in requested}


def test_champion_is_deployed_and_serves_predictions(served_spec, instance, land_bank_batches):
    daemon = AutomationDaemon(build_definitions(served_spec), instance)
    assert daemon.tick() == set()  # nothing to deploy before the first champion
    land_bank_batches(2)
    trained = run_job(served_spec, instance, "training_job")
    assert trained.success
    # The training run exported the champion and checked parity; automation deploys it.
    parity = {e.check_name: e.passed for e in trained.get_asset_check_evaluations()}
    assert parity["onnx_parity"] is True

    deployed: set[str] = set()
    for _ in range(3):
        deployed |= daemon.tick()
    assert deployed == {"deployed_endpoint"}

    endpoint = instance.get_latest_materialization_event(dg.AssetKey("deployed_endpoint"))
    metadata = endpoint.asset_materialization.metadata
    url = metadata["url"].value
    assert metadata["version"].value == "2"  # the whole-window refit of version 1
    response = httpx.post(
        f"{url}/invocations", json={"dataframe_records": [example_row(served_spec.dataset)]}
    )
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1
    assert daemon.checks == {"serves_champion": True}


def watchdog_tick(
    spec: Spec, instance: dg.DagsterInstance, grace_seconds: float = 0
) -> dg.SensorResult:
    """One tick of the endpoint watchdog; grace 0: it does not wait for automation."""
    context = dg.build_sensor_context(instance=instance, resources={"mlflow": MlflowResource()})
    return build_endpoint_watchdog(spec, automation_grace_seconds=grace_seconds)(context)


def skip_message(result: dg.SensorResult) -> str:
    assert not result.run_requests
    return result.skip_reason.skip_message


def run_requested(
    spec: Spec, instance: dg.DagsterInstance, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    defs = build_definitions(spec)
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=request.asset_selection, tags=request.tags
    )


def test_a_dead_endpoint_is_found_and_brought_back(served_spec, instance, land_bank_batches):
    land_bank_batches(2)
    assert run_job(served_spec, instance, "training_job").success
    endpoint = roll_out(served_spec).endpoint
    assert "serves the champion, version 2" in skip_message(watchdog_tick(served_spec, instance))

    state = json.loads((served_spec.paths.deployments / "local.json").read_text())
    os.kill(state["pid"], signal.SIGKILL)
    request = watchdog_tick(served_spec, instance).run_requests[0]
    assert request.tags["ct/repair"] == f"{endpoint.url} does not answer (server process is gone)"

    assert run_requested(served_spec, instance, request).success
    response = httpx.post(
        f"{endpoint.url}/invocations",
        json={"dataframe_records": [example_row(served_spec.dataset)]},
    )
    assert response.status_code == 200


# Any candidate is promoted: the test needs a second champion, not a better one (a window of
# early batches alone can score under the shipped floor).
LAX_GATES = {
    "gates": {"champion_regression": {"tolerance": 1.0}, "metric_floor": {"threshold": 0.0}}
}


@pytest.mark.timeout(1800)  # two training runs: on the loaded shared box, >15 min
def test_a_champion_that_is_not_served_is_deployed(
    served_spec, spec_file, instance, land_bank_batches
):
    assert "no champion yet" in skip_message(watchdog_tick(served_spec, instance))
    land_bank_batches(2)
    assert run_job(served_spec, instance, "training_job").success

    # Automation deploys a fresh export; the watchdog waits for it, then steps in.
    waiting = skip_message(watchdog_tick(served_spec, instance, grace_seconds=3600))
    assert waiting.startswith("no deployment is recorded; version 2 was exported")
    deploy = watchdog_tick(served_spec, instance).run_requests[0]
    assert deploy.tags["ct/repair"] == "no deployment is recorded"
    job = build_definitions(served_spec).resolve_implicit_global_asset_job_def()
    launched = instance.create_run_for_job(
        job,
        asset_selection=frozenset(deploy.asset_selection),
        status=dg.DagsterRunStatus.NOT_STARTED,
    )
    assert skip_message(watchdog_tick(served_spec, instance)) == (
        f"deployment run {launched.run_id[:8]} is NOT_STARTED"
    )
    instance.report_run_canceled(launched)
    assert run_requested(served_spec, instance, deploy).success
    assert "serves the champion, version 2" in skip_message(watchdog_tick(served_spec, instance))

    # A newer champion whose deployment never ran (failed to launch, or promoted by CI).
    land_bank_batches(1, first=2)
    lax = load_spec(spec_variant(spec_file, "lax", LAX_GATES))
    assert run_job(lax, instance, "training_job").success
    redeploy = watchdog_tick(served_spec, instance).run_requests[0]
    # Versions 3 and 4: the new holdout fit and its refit, the new champion.
    assert "serves version 2, but the champion is version 4" in redeploy.tags["ct/repair"]

    assert run_requested(served_spec, instance, redeploy).success
    assert "serves the champion, version 4" in skip_message(watchdog_tick(served_spec, instance))
