"""A restarted server serves the champion: the bundle a rollout last completed, never a
candidate. On both targets (a local process killed and revived as the watchdog does; a
docker container restarted by the engine), with real bundles, MLflow and audit log.

- after a completed rollout the restart serves the new version (the target adopted it);
- in the middle of a canary the restart serves stable alone, at 100 %, and the rollout ends
  rolled back with the reason and an alert: it never serves the candidate to everyone;
- the audit log says what happened: "canary started", "canary completed", "canary rolled
  back", as deployments and a rollback.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from ct_platform.deployment import DeploymentTarget, ensure_running, wait_healthy
from ct_platform.deployment.admin import AdminClient
from ct_platform.deployment.container import DockerTarget
from ct_platform.deployment.controller import RolloutController
from ct_platform.deployment.rollout import admin_client
from ct_platform.governance.audit import read_events
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.registry.versions import CANARY, CHAMPION
from ct_platform.settings import Spec
from ct_platform_tests.deployment.delivery_proofs import CANDIDATE, delivery_spec

pytestmark = pytest.mark.slow

# A guard against a server that never comes back (a bug), not a performance expectation.
RESTART_LIMIT_S = 180.0


def restart(target: DeploymentTarget) -> None:
    """The server dies and comes back as it would in production: the engine restarts the
    container (restart policy); a local process is revived by `ensure_running` (what the
    endpoint watchdog runs)."""
    if isinstance(target, DockerTarget):
        state = json.loads(target.state_file.read_text())
        target.client.containers.get(state["container_id"]).restart(timeout=10)
        wait_healthy(target.url, RESTART_LIMIT_S)
        return
    kill_local_server(target)
    revived = ensure_running(target)
    assert revived is not None


def kill_local_server(target: DeploymentTarget) -> None:
    """SIGKILL the local server (a crash); returns once its target sees it gone."""
    os.killpg(json.loads(target.state_file.read_text())["pid"], signal.SIGKILL)  # type: ignore[attr-defined]
    deadline = time.monotonic() + RESTART_LIMIT_S
    while target.status().healthy and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.1)


def answering_versions(url: str, row: dict[str, object], n: int = 30) -> set[str]:
    """The versions that answered `n` single-row requests, each with its own routing key."""
    versions = set()
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(n):
            response = client.post(
                "/invocations",
                json={"dataframe_records": [row]},
                headers={"x-routing-key": f"restart-{i}"},
            )
            assert response.status_code == 200, response.text
            versions.add(response.headers["x-model-version"])
    return versions


def audit_reasons(model: str) -> list[tuple[str, str]]:
    return [(event.kind, event.reason) for event in read_events() if event.model == model]


def test_restart_after_a_completed_rollout_serves_the_new_champion(
    target_spec: Spec,
    serving_target: DeploymentTarget,
    bundles: dict[str, Path],
    two_versions: ModelRegistry,
    sample_row: dict[str, object],
) -> None:
    spec = delivery_spec(target_spec, "canary")
    admin = admin_client(spec)
    controller = RolloutController(spec, admin, two_versions)
    controller.begin(CANDIDATE, bundles[CANDIDATE].name)
    # Before completion the target still records version 1: a restart would serve it.
    assert serving_target.status().endpoint.version == "1"  # type: ignore[union-attr]

    done = controller.control("promote", "restart test")

    assert done.status == "completed"
    assert serving_target.status().endpoint.version == CANDIDATE  # type: ignore[union-attr]
    restart(serving_target)
    assert admin.stable_version() == CANDIDATE
    assert answering_versions(admin.url, sample_row) == {CANDIDATE}
    assert two_versions.alias_version(CHAMPION).version == 2  # type: ignore[union-attr]
    reasons = audit_reasons(two_versions.model_name)
    deployments = [reason for kind, reason in reasons if kind == "deployment"]
    assert deployments[-2].startswith(
        "canary started: version 2 answers 20 % of traffic beside version 1"
    ), deployments
    assert deployments[-1].startswith(
        "canary completed: version 2 serves all traffic (restart test)"
    ), deployments
    assert ("promotion", "every blocking gate passed") in reasons


def test_restart_mid_rollout_serves_stable_alone_and_the_rollout_rolls_back(
    target_spec: Spec,
    serving_target: DeploymentTarget,
    bundles: dict[str, Path],
    two_versions: ModelRegistry,
    sample_row: dict[str, object],
) -> None:
    spec = delivery_spec(target_spec, "canary")
    admin = admin_client(spec)
    controller = RolloutController(spec, admin, two_versions)
    controller.begin(CANDIDATE, bundles[CANDIDATE].name)
    assert answering_versions(admin.url, sample_row, n=60) == {"1", CANDIDATE}

    if isinstance(serving_target, DockerTarget):
        restart(serving_target)  # the engine brings it back before the next analysis
        rollout = controller.advance(force=True)
        expected = "server restarted or replaced"
    else:
        # The process is dead at the next analysis: nothing is revived while a rollout is
        # active (the watchdog stands aside), so the rollout itself must end.
        kill_local_server(serving_target)
        rollout = controller.advance(force=True)
        expected = "the server does not answer"
        assert ensure_running(serving_target) is not None

    assert rollout is not None and rollout.status == "rolled_back", rollout
    assert expected in rollout.reason and rollout.weight == 0.0, rollout.reason
    assert slots_of(admin) == ("1", None)
    assert answering_versions(admin.url, sample_row) == {"1"}
    assert two_versions.alias_version(CHAMPION).version == 1  # type: ignore[union-attr]
    assert two_versions.alias_version(CANARY) is None
    alert = json.loads((spec.paths.home / "alerts.jsonl").read_text().splitlines()[-1])
    assert alert["event"] == "rollout_rolled_back" and alert["detail"] == rollout.reason
    kind, reason = audit_reasons(two_versions.model_name)[-1]
    assert kind == "rollback" and reason == f"canary rolled back: {rollout.reason}"


def slots_of(admin: AdminClient) -> tuple[str, str | None]:
    slots = admin.slots()
    candidate = slots["candidate"]
    return str(slots["stable"]["version"]), candidate["version"] if candidate else None
