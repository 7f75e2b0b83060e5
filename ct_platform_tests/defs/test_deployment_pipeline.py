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
    assert run_job(served_spec, instance, "training_job").success

    deployed: set[str] = set()
    for _ in range(3):
        deployed |= daemon.tick()
    assert deployed == {"model_bundle", "deployed_endpoint"}

    endpoint = instance.get_latest_materialization_event(dg.AssetKey("deployed_endpoint"))
    metadata = endpoint.asset_materialization.metadata
    url = metadata["url"].value
    assert metadata["version"].value == "1"
    response = httpx.post(
        f"{url}/invocations", json={"dataframe_records": [example_row(served_spec.dataset)]}
    )
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1
    assert daemon.checks == {"onnx_parity": True, "serves_champion": True}


def watchdog_tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, definitions=defs)
    return defs.get_sensor_def("endpoint_watchdog")(context)


def test_a_dead_endpoint_is_found_and_brought_back(served_spec, instance, land_bank_batches):
    land_bank_batches(2)
    assert run_job(served_spec, instance, "training_job").success
    defs = build_definitions(served_spec)
    assert watchdog_tick(defs, instance).skip_reason.skip_message == "nothing deployed yet"
    endpoint = roll_out(served_spec)
    assert "is up" in watchdog_tick(defs, instance).skip_reason.skip_message

    state = json.loads((served_spec.paths.deployments / "local.json").read_text())
    os.kill(state["pid"], signal.SIGKILL)
    request = watchdog_tick(defs, instance).run_requests[0]
    revival = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=request.asset_selection, tags=request.tags
    )

    assert revival.success
    response = httpx.post(
        f"{endpoint.url}/invocations",
        json={"dataframe_records": [example_row(served_spec.dataset)]},
    )
    assert response.status_code == 200
