"""Rollouts under `wrk` load (single-row requests, 8 connections) on a real server process.

- a full canary to 100 % and a blue-green switch each end with 0 failed requests;
- a bad candidate (slow, erroring on some rows, shifted scores; real bundles, see
  `bad_candidates`) is rolled back at the first step with the reason recorded, and stable's
  share of the traffic has 0 failures.

Assertions are on counts and states, never on a latency figure: the figures are the
benchmark's (benchmarks/delivery/run.py). Without `wrk` these tests SKIP, loudly.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ct_platform.deployment import target_for
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
def serving_v1(serving_spec: Spec, bundles: dict[str, Path]) -> Iterator[AdminClient]:
    """A real server process (local target) with version 1 in its stable slot."""
    target = target_for(serving_spec)
    target.deploy(bundles["1"])
    yield admin_client(serving_spec)
    target.stop()


def test_canary_to_full_traffic_under_load_fails_no_request(
    wrk: str,
    serving_spec: Spec,
    serving_v1: AdminClient,
    bundles: dict[str, Path],
    two_versions: ModelRegistry,
    load_rows: list[dict[str, Any]],
) -> None:
    spec = delivery_spec(serving_spec, "canary")
    controller = RolloutController(spec, serving_v1, two_versions)

    with WrkLoad(target_for(spec).status().endpoint.url, load_rows) as load:
        controller.begin(CANDIDATE, bundles[CANDIDATE].name)
        done = drive(controller, serving_v1, min_requests=MIN_REQUESTS)
    result = load.result

    rollout = done.rollout
    assert rollout.status == "completed", rollout.reason
    weights = [entry["weight"] for entry in rollout.history if entry["verdict"] == "pass"]
    assert weights == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert result.requests > 5 * MIN_REQUESTS
    assert (result.non2xx, result.socket_errors) == (0, 0), load.output
    assert serving_v1.stable_version() == "2"
    assert two_versions.alias_version(CHAMPION).version == 2
    assert two_versions.alias_version(CANARY) is None


def test_blue_green_switch_under_load_fails_no_request(
    wrk: str,
    serving_spec: Spec,
    serving_v1: AdminClient,
    bundles: dict[str, Path],
    two_versions: ModelRegistry,
    load_rows: list[dict[str, Any]],
) -> None:
    spec = delivery_spec(serving_spec, "blue_green", blue_green={"rollback_window_seconds": 0})
    controller = RolloutController(spec, serving_v1, two_versions)

    with WrkLoad(target_for(spec).status().endpoint.url, load_rows) as load:
        controller.begin(CANDIDATE, bundles[CANDIDATE].name)
        done = drive(controller, serving_v1, min_requests=MIN_REQUESTS)
    result = load.result

    rollout = done.rollout
    assert rollout.status == "completed", rollout.reason
    assert [entry["verdict"] for entry in rollout.history][-3:] == ["pass", "switch", "completed"]
    assert (result.non2xx, result.socket_errors) == (0, 0), load.output
    slots = serving_v1.slots()
    assert (slots["stable"]["version"], slots["previous"]["version"]) == ("2", "1")


@pytest.mark.parametrize("kind", list(BAD_CANDIDATES))
def test_bad_candidate_rolled_back_at_first_step(
    kind: str,
    wrk: str,
    serving_spec: Spec,
    serving_v1: AdminClient,
    bad_bundles: dict[str, Path],
    two_versions: ModelRegistry,
    load_rows: list[dict[str, Any]],
) -> None:
    spec = delivery_spec(serving_spec, "canary")
    controller = RolloutController(spec, serving_v1, two_versions)
    bundle = spec.paths.bundles / bad_bundles[kind].name
    shutil.copytree(bad_bundles[kind], bundle)

    with WrkLoad(target_for(spec).status().endpoint.url, load_rows) as load:
        started = controller.begin(CANDIDATE, bundle.name)
        done = drive(controller, serving_v1, min_requests=MIN_REQUESTS)
        stats = serving_v1.stats()
    result = load.result

    rollout = done.rollout
    assert rollout.status == "rolled_back"
    assert rollout.step == 0 and rollout.weight == 0.0
    assert EXPECTED_CHECK[kind] in rollout.reason, rollout.reason
    assert rollout.reason.startswith("analysis failed:")
    # Stable's share: not one failure. Every non-2xx wrk saw is a candidate error.
    stable = slot_window(started.origin, stats, "stable")
    candidate = slot_window(started.origin, stats, "candidate")
    assert stable.requests > 0 and stable.errors == 0
    assert result.socket_errors == 0, load.output
    assert result.non2xx == candidate.errors
    if kind == "errors":
        assert candidate.errors > 0
    slots = serving_v1.slots()
    assert (slots["stable"]["version"], slots["candidate"]) == ("1", None)
    assert two_versions.alias_version(CHAMPION).version == 1
    assert two_versions.alias_version(CANARY) is None
    alerts = (spec.paths.home / "alerts.jsonl").read_text().splitlines()
    assert json.loads(alerts[-1])["event"] == "rollout_rolled_back"
