"""A restarted server serves the champion: the bundle a rollout last completed, never a
candidate. On both targets (a local process killed and revived as the watchdog does; a
docker container restarted by the engine), with real bundles, MLflow and audit log, one
server per target (a container start costs minutes with the vfs storage driver):

- in the middle of a canary the restart serves stable alone, at 100 %, and the rollout ends
  rolled back with the reason and an alert: it never serves the candidate to everyone;
- after a completed rollout the restart serves the new version (the target adopted it);
- after a blue-green switch the restart serves the new version; an abort then brings the
  old one back (a hot-swap deploy: the restarted server no longer holds it), and so does
  the next restart;
- the audit log says what happened: "canary started", "canary completed", "canary rolled
  back", "blue-green switched", as deployments and rollbacks.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ct_platform.deployment import DeploymentTarget, ensure_running, wait_healthy
from ct_platform.deployment.admin import AdminClient
from ct_platform.deployment.analysis import slot_window
from ct_platform.deployment.container import DockerTarget
from ct_platform.deployment.controller import RolloutController
from ct_platform.deployment.rollout import admin_client
from ct_platform.governance.audit import read_events
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.registry.versions import CANARY, CHAMPION
from ct_platform.settings import Spec
from ct_platform_tests.deployment.delivery_proofs import CANDIDATE, MIN_REQUESTS, delivery_spec

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


def answering_versions(url: str, rows: list[dict[str, Any]], n: int = 30) -> set[str]:
    """The versions that answered `n` single-row requests (cycling over `rows`, so that
    score distributions are real ones), each with its own routing key."""
    versions = set()
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(n):
            response = client.post(
                "/invocations",
                json={"dataframe_records": [rows[i % len(rows)]]},
                headers={"x-routing-key": f"restart-{i}"},
            )
            assert response.status_code == 200, response.text
            versions.add(response.headers["x-model-version"])
    return versions


def audit_reasons(model: str) -> list[tuple[str, str]]:
    return [(event.kind, event.reason) for event in read_events() if event.model == model]


def test_restarts_serve_the_champion_never_a_candidate(
    target_spec: Spec,
    serving_target: DeploymentTarget,
    bundles: dict[str, Path],
    two_versions: ModelRegistry,
    load_rows: list[dict[str, Any]],
) -> None:
    server = Server(serving_target, admin_client(target_spec), two_versions, load_rows)
    restart_mid_canary_rolls_back(server, target_spec, bundles)
    restart_after_completion_serves_the_new_version(server, target_spec, bundles)
    restart_after_blue_green_switch_then_abort(server, target_spec, bundles)


@dataclass(frozen=True)
class Server:
    target: DeploymentTarget
    admin: AdminClient
    registry: ModelRegistry
    rows: list[dict[str, Any]]

    def answering(self, n: int = 30) -> set[str]:
        return answering_versions(self.admin.url, self.rows, n)

    def recorded_version(self) -> str:
        """The version the target would start again after a restart."""
        return self.target.status().endpoint.version  # type: ignore[union-attr]

    def champion(self) -> int:
        return self.registry.alias_version(CHAMPION).version  # type: ignore[union-attr]


def restart_mid_canary_rolls_back(
    server: Server, target_spec: Spec, bundles: dict[str, Path]
) -> None:
    spec = delivery_spec(target_spec, "canary")
    controller = RolloutController(spec, server.admin, server.registry)
    controller.begin(CANDIDATE, bundles[CANDIDATE].name)
    assert server.answering(n=60) == {"1", CANDIDATE}
    assert server.recorded_version() == "1"

    if isinstance(server.target, DockerTarget):
        restart(server.target)  # the engine brings it back before the next analysis
        rollout = controller.advance(force=True)
        expected = "the server answers with version 1 only (restarted?)"
    else:
        # The process is dead at the next analysis: nothing is revived while a rollout is
        # active (the watchdog stands aside), so the rollout itself must end.
        kill_local_server(server.target)
        rollout = controller.advance(force=True)
        expected = "the server does not answer"
        bundle = bundles["1"].name
        recorded = (
            f"a restart serves version 1 alone (the bundle the local target recorded: {bundle})"
        )
        assert ensure_running(server.target) is not None

    assert rollout is not None and rollout.status == "rolled_back", rollout
    assert expected in rollout.reason and rollout.weight == 0.0, rollout.reason
    if not isinstance(server.target, DockerTarget):
        assert rollout.reason.endswith(recorded), rollout.reason
    assert slots_of(server.admin) == ("1", None)
    assert server.answering() == {"1"}
    assert server.champion() == 1 and server.registry.alias_version(CANARY) is None
    alert = json.loads((spec.paths.home / "alerts.jsonl").read_text().splitlines()[-1])
    assert alert["event"] == "rollout_rolled_back" and alert["detail"] == rollout.reason
    reasons = audit_reasons(server.registry.model_name)
    assert reasons[-1] == ("rollback", f"canary rolled back: {rollout.reason}"), reasons
    started = "canary started: version 2 answers 20 % of traffic beside version 1"
    assert reasons[-2][0] == "deployment" and reasons[-2][1].startswith(started), reasons


def restart_after_completion_serves_the_new_version(
    server: Server, target_spec: Spec, bundles: dict[str, Path]
) -> None:
    spec = delivery_spec(target_spec, "canary")
    controller = RolloutController(spec, server.admin, server.registry)
    controller.begin(CANDIDATE, bundles[CANDIDATE].name)
    assert server.recorded_version() == "1"  # a candidate is never what a restart serves

    done = controller.control("promote", "restart test")

    assert done.status == "completed" and server.recorded_version() == CANDIDATE
    restart(server.target)
    assert server.answering() == {CANDIDATE}
    assert server.champion() == 2
    reasons = audit_reasons(server.registry.model_name)
    completed = "canary completed: version 2 serves all traffic (restart test)"
    assert any(kind == "deployment" and r.startswith(completed) for kind, r in reasons)
    # From the version that served (1), not from the candidate rolled back before (2).
    started = [e for e in read_events() if e.reason.startswith("canary started: version 2")]
    assert (started[-1].from_version, started[-1].to_version) == (1, 2), started[-1]
    # Completing the canary moved `champion`: one promotion line saying so.
    promotions = [r for kind, r in reasons if kind == "promotion"]
    assert promotions[-1] == f"every blocking gate passed; {completed}", promotions


def restart_after_blue_green_switch_then_abort(
    server: Server, target_spec: Spec, bundles: dict[str, Path]
) -> None:
    """Version 2 serves; version 1 goes out blue-green (its verification on real shadow
    traffic, with a latency limit no loaded box misses: this is about restarts)."""
    spec = delivery_spec(target_spec, "blue_green", analysis={"p99_latency_ms_max": 5000.0})
    controller = RolloutController(spec, server.admin, server.registry)
    rollout = controller.begin("1", bundles["1"].name)
    while slot_window(rollout.cursor, server.admin.stats(), "shadow").requests < MIN_REQUESTS:
        # Shadow copies of all 300 rows (stable answers): the slots' score histograms
        # compare the two models on the same real rows.
        assert server.answering(n=len(server.rows)) == {CANDIDATE}
    switched = controller.advance(force=True)
    assert switched is not None and switched.phase == "switched", switched
    assert server.recorded_version() == "1" and server.champion() == 1

    restart(server.target)
    assert server.answering() == {"1"}
    aborted = controller.control("abort", "switch back after restart")

    assert aborted.status == "rolled_back" and aborted.reason == "switch back after restart"
    assert server.answering() == {CANDIDATE} and server.champion() == 2
    assert server.recorded_version() == CANDIDATE
    restart(server.target)
    assert server.answering() == {CANDIDATE}
    reasons = audit_reasons(server.registry.model_name)
    switched_line = "blue-green switched: all traffic to version 1"
    assert any(kind == "deployment" and r.startswith(switched_line) for kind, r in reasons)
    assert reasons[-1] == ("rollback", "blue-green rolled back: switch back after restart")


def slots_of(admin: AdminClient) -> tuple[str, str | None]:
    slots = admin.slots()
    candidate = slots["candidate"]
    return str(slots["stable"]["version"]), candidate["version"] if candidate else None
