"""Rollouts under `wrk` load (single-row requests, 8 connections) on a real server: a local
process, then one docker container (the same admin calls; skipped loudly without an engine).

- a full canary to 100 % and a blue-green switch each end with 0 failed requests;
- a bad candidate (slow, erroring on some rows, shifted scores; real bundles, see
  `bad_candidates`) is rolled back at the first step with the reason recorded, and stable's
  share of the traffic has 0 failures.

Assertions are on counts and states, never on a latency figure: the figures are the
benchmark's (benchmarks/delivery/run.py). Without `wrk` these tests SKIP, loudly. On docker
every rollout is hot swaps inside the one container: its id never changes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ct_platform.deployment import DeploymentTarget
from ct_platform.deployment.admin import AdminClient
from ct_platform.deployment.analysis import slot_window
from ct_platform.deployment.controller import RolloutController
from ct_platform.deployment.rollout import admin_client
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.registry.versions import CANARY, CHAMPION
from ct_platform.settings import Spec
from ct_platform_tests.deployment.bad_candidates import BAD_CANDIDATES
from ct_platform_tests.deployment.delivery_proofs import (
    CANDIDATE,
    MIN_REQUESTS,
    delivery_spec,
    drive,
)
from ct_platform_tests.deployment.wrk_load import WrkLoad

pytestmark = pytest.mark.slow

# The check each bad candidate must fail, as the analysis names it.
EXPECTED_CHECK = {"slow": "p99_latency_ms", "errors": "error_rate", "shifted": "score_shift"}


@pytest.fixture(scope="session")
def bad_bundles(
    bank_spec: Spec,
    train_holdout: tuple[pd.DataFrame, pd.DataFrame],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    train, holdout = train_holdout
    root = tmp_path_factory.mktemp("bad-candidates")
    return {
        kind: build(
            bank_spec, train, holdout, root / f"{bank_spec.model.name}-bad-{kind}", CANDIDATE
        )
        for kind, build in BAD_CANDIDATES.items()
    }


@pytest.fixture
def serving_v1(serving_target: DeploymentTarget, target_spec: Spec) -> Iterator[AdminClient]:
    """The admin API of a real server (local process or container) serving version 1; at
    the end, the same server still runs: every rollout was hot swaps inside it."""
    server = server_identity(serving_target)
    yield admin_client(target_spec)
    assert server_identity(serving_target) == server


def server_identity(target: DeploymentTarget) -> str:
    """The server process's pid (local) or the container's id (docker)."""
    state = json.loads(target.state_file.read_text())  # type: ignore[attr-defined]
    return str(state.get("container_id") or state["pid"])


def test_rollouts_under_load(
    wrk: str,
    target_spec: Spec,
    serving_v1: AdminClient,
    bundles: dict[str, Path],
    bad_bundles: dict[str, Path],
    two_versions: ModelRegistry,
    load_rows: list[dict[str, Any]],
) -> None:
    """On one server (a container start costs minutes on a busy machine with the vfs
    storage driver): version 2 as a canary to 100 %, version 1 back by a blue-green switch,
    then each bad candidate as a canary, rolled back at the first step."""
    canary_then_blue_green(target_spec, serving_v1, bundles, two_versions, load_rows)
    bad_candidates_rolled_back(target_spec, serving_v1, bad_bundles, two_versions, load_rows)


def canary_then_blue_green(
    target_spec: Spec,
    admin: AdminClient,
    bundles: dict[str, Path],
    registry: ModelRegistry,
    load_rows: list[dict[str, Any]],
) -> None:
    """Both end with 0 failed requests; `champion` follows the server's stable slot."""
    canary = RolloutController(delivery_spec(target_spec, "canary"), admin, registry)
    with WrkLoad(admin.url, load_rows) as load:
        canary.begin(CANDIDATE, bundles[CANDIDATE].name)
        done = drive(canary, admin, min_requests=MIN_REQUESTS)
    result = load.result

    assert done.rollout.status == "completed", done.rollout.reason
    passed = [entry["weight"] for entry in done.rollout.history if entry["verdict"] == "pass"]
    assert passed == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert result.requests > 5 * MIN_REQUESTS
    assert (result.non2xx, result.socket_errors) == (0, 0), load.output
    assert admin.stable_version() == CANDIDATE
    assert registry.alias_version(CHAMPION).version == 2
    assert registry.alias_version(CANARY) is None

    spec = delivery_spec(target_spec, "blue_green", blue_green={"rollback_window_seconds": 0})
    blue_green = RolloutController(spec, admin, registry)
    with WrkLoad(admin.url, load_rows) as load:
        blue_green.begin("1", bundles["1"].name)
        done = drive(blue_green, admin, min_requests=MIN_REQUESTS)
    result = load.result

    assert done.rollout.status == "completed", done.rollout.reason
    verdicts = [entry["verdict"] for entry in done.rollout.history]
    assert verdicts[-3:] == ["pass", "switch", "completed"], verdicts
    assert (result.non2xx, result.socket_errors) == (0, 0), load.output
    slots = admin.slots()
    assert (slots["stable"]["version"], slots["previous"]["version"]) == ("1", "2")
    assert registry.alias_version(CHAMPION).version == 1


def bad_candidates_rolled_back(
    target_spec: Spec,
    admin: AdminClient,
    bad_bundles: dict[str, Path],
    registry: ModelRegistry,
    load_rows: list[dict[str, Any]],
) -> None:
    """Each in turn: rolled back at 20 %, the failed check in the reason, stable's share
    without a failure, an alert raised."""
    spec = delivery_spec(target_spec, "canary")
    controller = RolloutController(spec, admin, registry)
    alerts = spec.paths.home / "alerts.jsonl"
    for kind, built in bad_bundles.items():
        bundle = shutil.copytree(built, spec.paths.bundles / built.name)
        before = admin.stats()
        with WrkLoad(admin.url, load_rows) as load:
            controller.begin(CANDIDATE, bundle.name)
            done = drive(controller, admin, min_requests=MIN_REQUESTS)
        result = load.result
        stats = admin.stats()  # the candidate is unloaded: nothing changes after this

        rollout = done.rollout
        assert rollout.status == "rolled_back", (kind, rollout.reason)
        assert rollout.step == 0 and rollout.weight == 0.0, kind
        assert rollout.reason.startswith("analysis failed:"), (kind, rollout.reason)
        assert EXPECTED_CHECK[kind] in rollout.reason, (kind, rollout.reason)
        # Stable's share: not one failure; every non-2xx wrk saw is a candidate error.
        stable = slot_window(before, stats, "stable")
        candidate = slot_window(before, stats, "candidate")
        assert stable.requests > 0 and stable.errors == 0, kind
        assert result.socket_errors == 0, (kind, load.output)
        assert result.non2xx == candidate.errors, kind
        assert (candidate.errors > 0) == (kind == "errors"), (kind, candidate.errors)
        slots = admin.slots()
        assert (slots["stable"]["version"], slots["candidate"]) == ("1", None), kind
        assert registry.alias_version(CHAMPION).version == 1
        assert registry.alias_version(CANARY) is None
        assert json.loads(alerts.read_text().splitlines()[-1])["detail"] == rollout.reason
