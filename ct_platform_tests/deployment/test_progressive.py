"""Progressive delivery against real server processes (local target), real HTTP, real MLflow.

The controller is driven one analysis at a time (`advance(force=True)`), so nothing here
depends on how fast a loaded machine is: each test sends traffic, analyses, and asserts on
states and recorded figures.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pandas as pd
import pytest

from ct_platform.cli import main as ct_main
from ct_platform.cli.status import verdict
from ct_platform.defs.resources import MlflowResource
from ct_platform.defs.serving import build_endpoint_watchdog
from ct_platform.defs.serving.assets import DEPLOYED_ENDPOINT
from ct_platform.defs.serving.rollout import ROLLOUT, build_rollout_defs
from ct_platform.defs.serving.sensors import REPAIR_TAG
from ct_platform.deployment import target_for
from ct_platform.deployment.admin import AdminClient
from ct_platform.deployment.controller import Rollout, RolloutController, RolloutStore
from ct_platform.deployment.export import default_registry
from ct_platform.deployment.rollout import admin_client, roll_out
from ct_platform.governance.approval import APPROVAL_TAG, PENDING, decide
from ct_platform.governance.audit import BY_HAND, audit_path, current_user, read_events
from ct_platform.governance.lifecycle import promote_approved, set_champion
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.registry.versions import CANARY, CHALLENGER, CHAMPION
from ct_platform.settings import Spec
from ct_platform.training.bundling import build_bundle
from ct_platform.training.promotion import GATES_PASSED_TAG
from ct_platform_tests.deployment.conftest import (
    TRAIN_ROWS,
    fit_pipeline,
    free_port_pair,
    log_versions,
    with_port,
)
from ct_platform_tests.deployment.delivery_proofs import progressive
from ct_platform_tests.deployment.test_restart import restart

pytestmark = pytest.mark.slow

MODEL = "bank_marketing"
TRAFFIC_ROWS = 400
# Enough requests a step for a verdict at a 20 % share (min_requests 100).
STEP_REQUESTS = 700


@pytest.fixture(scope="session")
def traffic_rows(bank_spec: Spec, bank_frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Raw rows as clients send them, from after the training and holdout rows."""
    rows = bank_frame[bank_spec.dataset.feature_columns].iloc[TRAIN_ROWS + 600 :]
    return json.loads(rows.iloc[:TRAFFIC_ROWS].to_json(orient="records"))


@pytest.fixture(scope="session")
def flipped_bundle(
    bank_spec: Spec,
    train_holdout: tuple[pd.DataFrame, pd.DataFrame],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """Version 3: trained on flipped labels, so its scores are shifted (a bad candidate)."""
    train, holdout = train_holdout
    target = bank_spec.dataset.target
    flipped = train.assign(**{target: 1 - train[target]})
    return build_bundle(
        fit_pipeline(bank_spec, flipped, max_iter=20),
        bank_spec,
        name=bank_spec.model.name,
        version="3",
        fingerprint="test-3-flipped",
        holdout=holdout.iloc[:50],
        directory=tmp_path_factory.mktemp("flipped") / f"{bank_spec.model.name}-v3",
    )


@pytest.fixture(scope="session")
def fitted(bank_spec: Spec, train_holdout: tuple[pd.DataFrame, pd.DataFrame]) -> Any:
    return fit_pipeline(bank_spec, train_holdout[0], max_iter=20)


@dataclass(frozen=True)
class Stack:
    """One real server and one MLflow store under one CT_HOME, shared by this module's
    tests (starting either takes tens of seconds on a loaded box); reset before each test."""

    home: Path
    spec: Spec
    admin: AdminClient
    registry: ModelRegistry
    url: str


@pytest.fixture(scope="module")
def shared_stack(
    bank_spec: Spec,
    built_bundles: dict[str, Path],
    flipped_bundle: Path,
    fitted: Any,
    train_holdout: tuple[pd.DataFrame, pd.DataFrame],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("progressive") / "ct_home"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CT_HOME", str(home))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        spec = with_port(bank_spec, free_port_pair())
        for bundle in (*built_bundles.values(), flipped_bundle):
            shutil.copytree(bundle, spec.paths.bundles / bundle.name)
        registry = default_registry(spec)
        # Versions 1, 2, 3 with the bundles' fingerprints: an export reuses those bundles.
        log_versions(registry, fitted, train_holdout[0], ("test-1", "test-2", "test-3-flipped"))
        target = target_for(spec)
        endpoint = target.deploy(spec.paths.bundles / built_bundles["1"].name)
        try:
            yield Stack(home, spec, admin_client(spec), registry, endpoint.url)
        finally:
            target.stop()


@pytest.fixture
def stack(shared_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The shared stack with version 1 serving alone and as champion, no rollout on record."""
    monkeypatch.setenv("CT_HOME", str(shared_stack.home))
    admin, registry = shared_stack.admin, shared_stack.registry
    state = slots(admin)
    if state["candidate"] is not None:
        admin.route(0.0)
        admin.unload_candidate()
    if state["stable"] != "1":
        admin.load(f"{MODEL}-v1", slot="stable")
    # What a restart serves, as a completed rollout leaves it recorded: version 1 again.
    target_for(shared_stack.spec).adopt(shared_stack.spec.paths.bundles / f"{MODEL}-v1")
    set_champion(registry, 1, shared_stack.spec)
    registry.delete_alias(CANARY)
    shutil.rmtree(shared_stack.spec.paths.rollouts)
    (shared_stack.home / "alerts.jsonl").unlink(missing_ok=True)
    audit_path().unlink(missing_ok=True)
    return shared_stack


def send(url: str, rows: list[dict[str, Any]], n: int, *, prefix: str) -> list[httpx.Response]:
    """`n` single-row requests, each with its own routing key and request id (4 at once)."""

    def post(client: httpx.Client, i: int) -> httpx.Response:
        key = f"{prefix}-{i}"
        return client.post(
            "/invocations",
            json={"dataframe_records": [rows[i % len(rows)]]},
            headers={"x-routing-key": key, "x-request-id": key},
        )

    with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda i: post(client, i), range(n)))


def slots(admin: AdminClient) -> dict[str, Any]:
    state = admin.slots()
    candidate = state["candidate"]
    return {
        "stable": state["stable"]["version"],
        "candidate": candidate["version"] if candidate else None,
        "weight": state["candidate_weight"],
        "shadow": state["shadow"],
    }


def aliases(registry: ModelRegistry) -> dict[str, int | None]:
    found = {alias: registry.alias_version(alias) for alias in (CHAMPION, CANARY)}
    return {alias: info.version if info else None for alias, info in found.items()}


def last_analysis(rollout: Rollout) -> dict[str, Any]:
    return [entry for entry in rollout.history if entry["verdict"] in ("pass", "fail", "wait")][-1]


def test_canary_reaches_100_percent_and_then_moves_the_champion(
    stack: Stack, traffic_rows: list[dict[str, Any]]
) -> None:
    spec, admin, registry = progressive(stack.spec, "canary"), stack.admin, stack.registry
    registry.set_alias(CANARY, 2)  # what the champion asset does under a progressive strategy
    roll_out(spec, registry)  # what deployed_endpoint runs: starts the rollout
    controller = RolloutController(spec, admin, registry)
    rollout = RolloutStore(spec.paths.rollouts).read()
    assert rollout is not None and (rollout.strategy, rollout.version) == ("canary", "2")
    assert slots(admin) == {"stable": "1", "candidate": "2", "weight": 0.2, "shadow": False}

    weights, failed = [], 0
    for step in range(5):
        responses = send(stack.url, traffic_rows, STEP_REQUESTS, prefix=f"s{step}")
        failed += sum(response.status_code != 200 for response in responses)
        answered = {response.headers["x-model-version"] for response in responses}
        assert answered == ({"2"} if step == 4 else {"1", "2"})
        rollout = controller.advance(force=True)
        assert rollout is not None
        weights.append(rollout.weight)
        verdict = last_analysis(rollout)
        assert verdict["verdict"] == "pass", verdict["reason"]
        if step < 4:  # nothing answered since: the server's totals are the period's end
            totals = admin.stats()["slots"]
            assert verdict["period"]["end"] == {
                slot: {key: totals[slot][key] for key in ("requests", "errors", "refused")}
                for slot in ("candidate", "stable")
            }

    # Each period's figures are exactly the difference of the two snapshots it records, and
    # each period starts where the one before ended: reconcilable with GET /admin/stats.
    analyses = [entry for entry in rollout.history if entry["verdict"] == "pass"]
    for before, entry in itertools.pairwise(analyses):
        assert entry["period"]["start"] == before["period"]["end"]
        assert entry["period"]["from"] <= entry["period"]["to"]
    for entry in analyses:
        start, end, figures = entry["period"]["start"], entry["period"]["end"], entry["figures"]
        for slot in ("candidate", "stable"):
            window = {key: end[slot][key] - start[slot][key] for key in end[slot]}
            assert figures[f"{slot}_requests"] == sum(window.values())
            assert figures[f"{slot}_refused"] == window["refused"]

    assert failed == 0
    assert weights == [0.4, 0.6, 0.8, 1.0, 1.0]
    assert rollout.status == "completed"
    assert [round(a["weight"], 1) for a in analyses] == [0.2, 0.4, 0.6, 0.8, 1.0]
    for analysis in analyses:
        figures = analysis["figures"]
        assert figures["candidate_requests"] >= 100
        assert figures["candidate_error_rate"] == 0.0
    for analysis in analyses[:-1]:  # stable answers beside the candidate: judged
        assert 0 <= analysis["figures"]["score_shift"] <= 0.2
    # Each step's stable count is that step's traffic: none at 100 %, where the score shift
    # is not judged (stable's earlier scores are other traffic) and the reason says so.
    at_full = analyses[-1]
    assert at_full["figures"]["stable_requests"] == 0
    assert "score_shift" not in at_full["figures"]
    assert "score shift not judged: stable scored 0 requests in this period" in at_full["reason"]
    # Its latency's reference is stable's in the latest earlier period where stable answered
    # enough (the 80 % step, unless its random share fell short), as the rollout recorded it.
    min_requests = spec.deployment.analysis.min_requests
    reference = next(
        entry
        for entry in reversed(analyses[:-1])
        if entry["figures"]["stable_answered"] >= min_requests
    )
    assert {
        name: at_full["figures"][f"reference_{name}"]
        for name in ("stable_answered", "stable_slow_requests", "stable_p99_ms")
    } == {
        name: reference["figures"][name]
        for name in ("stable_answered", "stable_slow_requests", "stable_p99_ms")
    }
    assert at_full["figures"]["reference_step_percent"] == round(100 * reference["weight"], 6)
    assert at_full["figures"]["reference_ended_at"] == reference["at"]
    # MLflow, the server and the rollout agree: version 2 serves and is the champion.
    assert aliases(registry) == {CHAMPION: 2, CANARY: None}
    assert slots(admin) == {"stable": "2", "candidate": None, "weight": 0.0, "shadow": False}
    assert admin.slots()["previous"]["version"] == "1"
    # The champion's move is one promotion line: version, previous champion, the rollout
    # (advanced here by a bare controller: no driver to name).
    promotions = [e for e in read_events() if e.kind == "promotion"]
    assert [(e.from_version, e.to_version, e.actor) for e in promotions] == [
        (1, 2, f"canary rollout {rollout.id}")
    ]
    started = next(e for e in read_events() if e.kind == "deployment")
    assert started.actor == f"canary rollout {rollout.id} (started by {BY_HAND})"
    assert "canary completed: version 2 serves all traffic" in promotions[0].reason


def test_bad_client_requests_are_refusals_judged_against_stable_not_errors(
    stack: Stack, traffic_rows: list[dict[str, Any]]
) -> None:
    """A burst of requests outside the contract (age 250 > max 100: 422) spread over both
    slots like all traffic: a good candidate passes, with both slots' refusals in figures.
    Counted as the candidate's errors, its ~20 of ~160 were over error_rate_max 0.01."""
    spec, admin, registry = progressive(stack.spec, "canary"), stack.admin, stack.registry
    controller = RolloutController(spec, admin, registry)
    controller.begin("2", f"{MODEL}-v2")
    before = admin.stats()["slots"]
    bad_rows = [{**row, "age": 250} for row in traffic_rows]
    good = send(stack.url, traffic_rows, STEP_REQUESTS, prefix="good")
    bad = send(stack.url, bad_rows, 100, prefix="burst")
    assert all(r.status_code == 200 for r in good)
    assert {r.status_code for r in bad} == {422}
    after = admin.stats()["slots"]

    def period(slot: str, key: str) -> int:
        return after[slot][key] - before.get(slot, {}).get(key, 0)

    refused = {slot: period(slot, "refused") for slot in ("stable", "candidate")}
    assert sum(refused.values()) == 100 and min(refused.values()) > 0
    assert period("candidate", "errors") == period("stable", "errors") == 0

    rollout = controller.advance(force=True)

    assert rollout is not None and rollout.status == "running", rollout.reason
    analysis = last_analysis(rollout)
    assert analysis["verdict"] == "pass", analysis["reason"]
    figures = analysis["figures"]
    assert figures["candidate_error_rate"] == 0.0
    assert (
        figures["candidate_refusal_rate"] == refused["candidate"] / (figures["candidate_requests"])
    )
    assert figures["stable_refusal_rate"] == refused["stable"] / figures["stable_requests"]
    assert figures["candidate_requests"] + figures["stable_requests"] == STEP_REQUESTS + 100
    assert slots(admin)["weight"] == 0.4


@pytest.mark.parametrize(("bad_clients", "bad_rows"), [(1, 100), (3, 50)])
def test_sticky_clients_sending_bad_rows_to_a_good_candidate_do_not_roll_it_back(
    stack: Stack, traffic_rows: list[dict[str, Any]], bad_clients: int, bad_rows: int
) -> None:
    """The newcomer's case: a client keeping one routing key that lands on the candidate
    sends rows outside the contract (age 250: 422) there alone. Judged per request, its 100
    refusals against stable's 0 rolled back a good candidate; the client is one unit. So
    are three such clients at once: without any two, the third's 50 still fail it."""
    spec, admin, registry = progressive(stack.spec, "canary"), stack.admin, stack.registry
    controller = RolloutController(spec, admin, registry)
    controller.begin("2", f"{MODEL}-v2")
    bad_row = {**traffic_rows[0], "age": 250}
    with httpx.Client(base_url=stack.url, timeout=60) as client:
        on_candidate = (
            key
            # Keys of their own: the module's server keeps each key's totals across tests.
            for key in (f"sticky{bad_clients}-{i}" for i in range(400))
            if client.post(
                "/invocations",
                json={"dataframe_records": [traffic_rows[0]]},
                headers={"x-routing-key": key},
            ).headers["x-model-version"]
            == "2"
        )
        keys = list(itertools.islice(on_candidate, bad_clients))
        bad = [
            client.post(
                "/invocations",
                json={"dataframe_records": [bad_row]},
                headers={"x-routing-key": key},
            )
            for key in keys
            for _ in range(bad_rows)
        ]
    assert {(r.status_code, r.headers["x-model-version"]) for r in bad} == {(422, "2")}
    good = send(stack.url, traffic_rows, STEP_REQUESTS, prefix="good")
    assert all(r.status_code == 200 for r in good)
    assert [admin.stats()["clients"]["candidate"][key]["refused"] for key in keys] == [
        bad_rows
    ] * bad_clients

    rollout = controller.advance(force=True)

    assert rollout is not None and rollout.status == "running", rollout.reason
    analysis = last_analysis(rollout)
    assert analysis["verdict"] == "pass", analysis["reason"]
    assert analysis["figures"]["candidate_refused"] == bad_rows * bad_clients
    assert analysis["figures"]["refusal_rate_excess_without_clients"] == 0.0
    assert analysis["figures"]["refusal_rate_excess_excused_clients"] == bad_clients
    counts = f"({bad_rows + 1} requests: {bad_rows} refused, 0 failed, 1 rows scored)"
    named = [f"'{key}' {counts}" for key in keys]
    group = (
        f"key {named[0]}" if bad_clients == 1 else f"keys {', '.join(named[:-1])} and {named[-1]}"
    )
    assert (
        f"without routing {group} it passes (refusal_rate_excess 0, limit 0.01"
        in analysis["reason"]
    )
    assert slots(admin)["weight"] == 0.4


def test_bad_candidate_is_rolled_back_at_the_first_step(
    stack: Stack, flipped_bundle: Path, traffic_rows: list[dict[str, Any]]
) -> None:
    spec, admin, registry = progressive(stack.spec, "canary"), stack.admin, stack.registry
    controller = RolloutController(spec, admin, registry)
    controller.begin("3", flipped_bundle.name)
    assert aliases(registry) == {CHAMPION: 1, CANARY: 3}

    responses = send(stack.url, traffic_rows, STEP_REQUESTS, prefix="bad")
    stable_share = [r for r in responses if r.headers.get("x-model-slot") == "stable"]
    assert stable_share and all(r.status_code == 200 for r in stable_share)
    rollout = controller.advance(force=True)

    assert rollout is not None and rollout.status == "rolled_back"
    assert rollout.step == 0
    assert rollout.reason.startswith("analysis failed: score_shift_psi ")
    figures = last_analysis(rollout)["figures"]
    assert figures["score_shift"] > 0.2 and figures["score_shift_p_value"] < 0.001
    assert (
        f"beyond sampling noise (permutation p = {figures['score_shift_p_value']:.2g} < alpha "
        f"0.001; {figures['candidate_requests']:g} candidate vs "
        f"{figures['stable_requests']:g} stable scores)" in rollout.reason
    )
    # ct status tells the version's delivery as it went, not "passed its gates".
    rollouts = RolloutStore(spec.paths.rollouts).latest_by_version()
    assert verdict(registry.version(3), rollouts) == f"canary rolled back at 20 %: {rollout.reason}"
    assert slots(admin) == {"stable": "1", "candidate": None, "weight": 0.0, "shadow": False}
    assert aliases(registry) == {CHAMPION: 1, CANARY: None}
    alert_lines = (spec.paths.home / "alerts.jsonl").read_text().splitlines()
    alert = json.loads(alert_lines[-1])
    assert alert["event"] == "rollout_rolled_back" and alert["version"] == "3"
    assert "score_shift_psi" in alert["detail"]
    after = send(stack.url, traffic_rows, 50, prefix="after")
    assert {r.headers["x-model-version"] for r in after} == {"1"}


def test_shadow_never_changes_an_answer_and_decides_on_the_comparison(
    stack: Stack, traffic_rows: list[dict[str, Any]]
) -> None:
    spec = progressive(stack.spec, "shadow", shadow={"requests": 300})
    before = send(stack.url, traffic_rows, TRAFFIC_ROWS, prefix="same")

    controller = RolloutController(spec, stack.admin, stack.registry)
    controller.begin("2", f"{MODEL}-v2")
    assert slots(stack.admin)["shadow"] is True
    during = send(stack.url, traffic_rows, TRAFFIC_ROWS, prefix="same")

    assert [r.status_code for r in during] == [200] * TRAFFIC_ROWS
    assert [r.content for r in during] == [r.content for r in before]
    assert {r.headers["x-model-slot"] for r in during} == {"stable"}
    assert {r.headers["x-model-version"] for r in during} == {"1"}

    rollout = controller.advance(force=True)
    assert rollout is not None and rollout.status == "completed", rollout.reason
    figures = last_analysis(rollout)["figures"]
    assert figures["candidate_requests"] >= 300
    assert figures["agreement"] >= 0.9
    assert rollout.decision is not None and rollout.decision["promote"] is True
    assert aliases(stack.registry) == {CHAMPION: 2, CANARY: None}
    assert slots(stack.admin)["stable"] == "2"


def post_feedback(
    url: str, responses: list[httpx.Response], correct_rate: Callable[[str], float]
) -> None:
    """Label each answer: its own label at the slot's rate (exactly, at every count), else
    the other label."""
    counters: dict[str, int] = {}
    feedback = []
    for response in responses:
        slot = response.headers["x-model-slot"]
        counters[slot] = counters.get(slot, 0) + 1
        predicted = response.json()["predictions"][0]
        rate, seen = correct_rate(slot), counters[slot]
        correct = math.floor(seen * rate) > math.floor((seen - 1) * rate)  # n * rate in n
        feedback.append(
            {
                "request_id": response.headers["x-request-id"],
                "label": predicted if correct else 1 - predicted,
            }
        )
    random.Random(0).shuffle(feedback)
    httpx.post(f"{url}/feedback", json=feedback, timeout=30).raise_for_status()


@dataclass
class Clock:
    """The controller's clock, moved by the test: an A/B test's duration is its own time."""

    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def ab_test(stack: Stack) -> tuple[Spec, RolloutController, Clock]:
    """An A/B spec whose test needs 20-100 samples an arm and lasts an hour at most, and a
    controller on a clock the test moves."""
    ab = {"baseline_rate": 0.8, "minimum_effect": 0.15, "max_duration_seconds": 3600}
    spec = progressive(stack.spec, "ab", ab=ab)
    clock = Clock()
    return spec, RolloutController(spec, stack.admin, stack.registry, clock=clock), clock


@pytest.mark.parametrize(
    ("rates", "expected_status", "winner"),
    [({"stable": 0.6, "candidate": 0.95}, "completed", "candidate"), ({}, "stopped", None)],
    ids=["planted-difference", "no-difference"],
)
def test_ab_test_decides_on_labelled_feedback(
    stack: Stack,
    traffic_rows: list[dict[str, Any]],
    rates: dict[str, float],
    expected_status: str,
    winner: str | None,
) -> None:
    spec, controller, clock = ab_test(stack)
    rollout = controller.begin("2", f"{MODEL}-v2")
    assert rollout.required_samples is not None and 20 < rollout.required_samples < 100
    responses = send(stack.url, traffic_rows, TRAFFIC_ROWS, prefix=f"ab-{expected_status}")
    assert {r.headers["x-model-slot"] for r in responses} == {"stable", "candidate"}
    post_feedback(stack.url, responses, lambda slot: rates.get(slot, 0.85))

    clock.now += 60
    rollout = controller.advance(force=True)
    assert rollout is not None
    if winner is None:  # not significant: the test goes on until its maximum duration
        assert rollout.status == "running", rollout.reason
        assert last_analysis(rollout)["figures"]["p_value"] > spec.deployment.ab.alpha
        clock.now += 3600
        rollout = controller.advance(force=True)
    assert rollout is not None and rollout.status == expected_status, rollout.reason
    assert rollout.decision is not None and rollout.decision["winner"] == winner
    assert rollout.decision["candidate_n"] >= rollout.required_samples
    state = slots(stack.admin)
    if winner == "candidate":
        assert rollout.decision["p_value"] < 0.05
        assert aliases(stack.registry) == {CHAMPION: 2, CANARY: None}
        assert state["stable"] == "2"
    else:
        assert "without a significant difference" in rollout.reason
        assert aliases(stack.registry) == {CHAMPION: 1, CANARY: None}
        assert (state["stable"], state["candidate"]) == ("1", None)


def test_an_ab_candidate_scoring_unlike_stable_but_winning_on_labels_is_promoted(
    stack: Stack, flipped_bundle: Path, traffic_rows: list[dict[str, Any]]
) -> None:
    """The score shift is a proxy for the labels: with enough of them on both arms, a
    candidate at least as good on them is not rolled back for scoring differently."""
    _, controller, clock = ab_test(stack)
    controller.begin("3", flipped_bundle.name)  # trained on flipped labels: shifted scores
    responses = send(stack.url, traffic_rows, TRAFFIC_ROWS, prefix="ab-shifted")
    post_feedback(stack.url, responses, lambda slot: {"stable": 0.6, "candidate": 0.95}[slot])

    clock.now += 60
    rollout = controller.advance(force=True)

    assert rollout is not None and rollout.status == "completed", rollout.reason
    analysis = last_analysis(rollout)
    figures = analysis["figures"]
    assert analysis["verdict"] == "pass"
    assert figures["score_shift"] > 0.2 and figures["score_shift_p_value"] < 0.001
    assert figures["label_non_inferiority_p_value"] < 0.001
    assert (
        f"but on {figures['candidate_labelled']:g} vs {figures['stable_labelled']:g} labelled "
        "requests since the rollout began the candidate is at least as good as stable: "
        f"accuracy {figures['candidate_outcome']:.3f} vs {figures['stable_outcome']:.3f}"
    ) in analysis["reason"]
    assert "labels outrank the score shift, passed" in analysis["reason"]
    assert rollout.decision is not None and rollout.decision["winner"] == "candidate"
    assert aliases(stack.registry) == {CHAMPION: 3, CANARY: None}
    assert slots(stack.admin)["stable"] == "3"


def test_blue_green_switches_at_once_rolls_back_in_one_swap_or_completes(
    stack: Stack, traffic_rows: list[dict[str, Any]]
) -> None:
    spec = progressive(stack.spec, "blue_green", blue_green={"rollback_window_seconds": 600})
    clock = Clock()
    controller = RolloutController(spec, stack.admin, stack.registry, clock=clock)
    controller.begin("2", f"{MODEL}-v2")
    warm = send(stack.url, traffic_rows, 200, prefix="warm")
    assert {r.headers["x-model-version"] for r in warm} == {"1"}  # verified beside, unseen

    rollout = controller.advance(force=True)
    assert rollout is not None and rollout.phase == "switched", rollout.history[-1]
    switched = send(stack.url, traffic_rows, 50, prefix="after")
    assert {r.headers["x-model-version"] for r in switched} == {"2"}
    assert stack.admin.slots()["previous"]["version"] == "1"
    assert aliases(stack.registry) == {CHAMPION: 2, CANARY: None}

    rollout = controller.control("abort", "bad business figures")
    assert rollout.status == "rolled_back" and rollout.reason == "bad business figures"
    back = send(stack.url, traffic_rows, 50, prefix="back")
    assert {r.headers["x-model-version"] for r in back} == {"1"}
    assert aliases(stack.registry) == {CHAMPION: 1, CANARY: None}

    # Again, and this time nobody objects: the rollback window ends the rollout.
    controller.begin("2", f"{MODEL}-v2")
    send(stack.url, traffic_rows, 200, prefix="warm-again")
    assert controller.advance(force=True).phase == "switched"  # type: ignore[union-attr]
    clock.now += 300
    assert controller.advance(force=True).status == "running"  # type: ignore[union-attr]
    clock.now += 301
    rollout = controller.advance(force=True)
    assert rollout is not None and rollout.status == "completed"
    assert rollout.reason == "rollback window of 600 s is over"
    assert aliases(stack.registry) == {CHAMPION: 2, CANARY: None}


def test_ct_rollout_commands(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    spec = progressive(stack.spec, "canary")
    RolloutController(spec, stack.admin, stack.registry).begin("2", f"{MODEL}-v2")

    def ct(*args: str) -> tuple[int, str]:
        code = ct_main(["rollout", *args])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    code, out = ct("status")
    started = RolloutStore(spec.paths.rollouts).read()
    assert started is not None
    assert (
        code == 0
        and (
            f"rollout {started.id}: canary of version 2 running: it answers 20 % of traffic "
            "beside version 1 (stable)\n"
        )
        in out
    )
    assert "candidate traffic 20 %" in out
    now = (
        f"now: {stack.url} serves version 1 as stable (80 % of traffic), version 2 as "
        "candidate (20 % of traffic)"
    )
    assert now in out
    assert ct("pause")[0] == 0
    paused = RolloutStore(spec.paths.rollouts).read()
    assert paused is not None and paused.status == "paused"
    since = datetime.fromtimestamp(paused.history[-1]["at"], UTC).isoformat(timespec="seconds")
    # A repeated action changes nothing and says so (exit 1); nothing is recorded.
    code, out = ct("pause")
    assert code == 1 and f"rollout {paused.id} is already paused since {since}" in out
    assert len(RolloutStore(spec.paths.rollouts).read().history) == len(paused.history)  # type: ignore[union-attr]
    assert ct("resume")[0] == 0
    resumed = RolloutStore(spec.paths.rollouts).read()
    assert resumed is not None
    since = datetime.fromtimestamp(resumed.history[-1]["at"], UTC).isoformat(timespec="seconds")
    code, out = ct("resume")
    assert code == 1 and f"is already running since {since}" in out
    code, out = ct("status", "--json")
    assert code == 0 and json.loads(out)["status"] == "running"
    code, out = ct("promote", "--reason", "looks fine")
    assert code == 0 and "status completed" in out and "reason: looks fine" in out
    assert slots(stack.admin)["stable"] == "2"
    # Once completed, status tells how it ended and what serves now, not the version that
    # served when it started (it said "canary of version 2 (serving: 1)").
    code, out = ct("status")
    headline, position, now = out.splitlines()[:3]
    assert code == 0 and headline == (
        f"rollout {started.id}: canary of version 2 completed: version 2 took all traffic and "
        "became champion"
    )
    assert position.startswith("status completed, phase canary, step 0, ended 20")
    assert "candidate traffic" not in out and "serving: 1" not in out
    assert now == (
        f"now: {stack.url} serves version 2 as stable (all traffic), "
        "version 1 as previous (no traffic)"
    )
    assert aliases(stack.registry) == {CHAMPION: 2, CANARY: None}
    code, out = ct("abort")
    assert code == 1 and "no active rollout to abort" in out

    # Aborted by a person: ct status says by whom, and the audit line too.
    aborted = RolloutController(spec, stack.admin, stack.registry).begin("3", f"{MODEL}-v3")
    code, out = ct("abort", "--reason", "wrong data window")
    who = f"{current_user()} via ct rollout"
    assert code == 0 and f"reason: wrong data window (by {who})" in out
    rollouts = RolloutStore(spec.paths.rollouts).latest_by_version()
    expected = f"canary aborted by {who} at 20 %: wrong data window"
    assert verdict(stack.registry.version(3), rollouts) == expected
    assert verdict(stack.registry.version(2), rollouts) == "champion"
    line = read_events()[-1]
    assert (line.kind, line.actor) == ("rollback", f"canary rollout {aborted.id} ({who})")


def test_ct_rollback_during_a_rollout_rolls_it_back_by_name(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """The newcomer's finding: `ct rollback` during a canary redeployed an older champion
    into the server (taking the candidate out without a word), and `ct rollout status` then
    named the wrong champion and guessed the cause. Now it ends the rollout by name: the
    candidate leaves traffic, loses `canary`, the rollout and the audit log say who and why,
    and `champion` stays; status reads the champion from MLflow."""
    spec = progressive(stack.spec, "canary")
    started = RolloutController(spec, stack.admin, stack.registry).begin("2", f"{MODEL}-v2")

    code = ct_main(["rollback", "--reason", "answers look wrong", "--by", "ana"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(
        f"rollout {started.id} (canary of version 2) rolled back by ana via ct rollback: "
        "answers look wrong. Version 2 is out of traffic and no longer holds `canary`; "
        "champion is version 1. There is no earlier champion to roll back to."
    ), out
    assert slots(stack.admin)["candidate"] is None and slots(stack.admin)["stable"] == "1"
    assert aliases(stack.registry) == {CHAMPION: 1, CANARY: None}
    ended = RolloutStore(spec.paths.rollouts).read()
    assert ended is not None
    assert (ended.status, ended.reason, ended.ended_by) == (
        "rolled_back",
        "answers look wrong",
        "ana via ct rollback",
    )
    line = read_events()[-1]
    assert (line.kind, line.actor, line.reason) == (
        "rollback",
        f"canary rollout {started.id} (ana via ct rollback)",
        "canary rolled back: answers look wrong",
    )

    # The champion in `ct rollout status` is MLflow's, whatever the rollout recorded.
    set_champion(stack.registry, 3, stack.spec)
    assert ct_main(["rollout", "status"]) == 0
    headline, *_ = capsys.readouterr().out.splitlines()
    assert headline == (
        f"rollout {started.id}: canary of version 2 rolled back: version 2 was taken out of "
        "traffic; the champion is version 3"
    )


def test_a_rollout_whose_candidate_a_deploy_took_out_names_that_deploy(stack: Stack) -> None:
    """The candidate taken out by a recorded deployment (here a direct `roll_out` of a
    champion moved by hand): the rollout's reason names it from the audit log, not only
    the guess "unloaded?"."""
    spec, admin, registry = progressive(stack.spec, "canary"), stack.admin, stack.registry
    started = RolloutController(spec, admin, registry).begin("2", f"{MODEL}-v2")
    set_champion(registry, 3, spec)
    direct = spec.model_copy(
        update={"deployment": spec.deployment.model_copy(update={"strategy": "direct"})}
    )
    roll_out(direct, registry, actor="bob", why="hotfix")
    deployed = read_events()[-1]
    assert (deployed.kind, deployed.to_version, deployed.actor) == ("deployment", 3, "bob")

    ended = RolloutController(spec, admin, registry).reconcile()
    assert ended is not None and ended.status == "rolled_back"
    assert ended.reason == (
        "the server's candidate slot is empty (stable: version 3; unloaded?); the audit log "
        f"records a deployment of version 3 by bob at {deployed.at} since the rollout began: "
        f"{deployed.reason}: rollout ended"
    ), started.id


def test_rollout_status_now_shows_every_slot_the_server_serves(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """`now:` named only the stable slot, even with the candidate at 100 %."""
    spec = progressive(stack.spec, "canary")
    RolloutController(spec, stack.admin, stack.registry).begin("2", f"{MODEL}-v2")
    stack.admin.route(1.0)  # the canary's last step
    assert ct_main(["rollout", "status"]) == 0
    now = (
        f"now: {stack.url} serves version 1 as stable (0 % of traffic), version 2 as "
        "candidate (100 % of traffic)"
    )
    assert now in capsys.readouterr().out

    spec = progressive(stack.spec, "blue_green")
    RolloutController(spec, stack.admin, stack.registry).begin("3", f"{MODEL}-v3")
    assert ct_main(["rollout", "status"]) == 0
    now = f"now: {stack.url} serves version 1 as stable (all traffic), version 3 as shadow "
    assert now + "(scores copies, answers none)" in capsys.readouterr().out


def test_a_version_approved_during_a_rollout_waits_and_the_watchdog_starts_it_next(
    stack: Stack, instance: dg.DagsterInstance
) -> None:
    """Version 3 takes `canary` (approved) while version 2 rolls out: the next
    `deployed_endpoint` run leaves version 2's rollout alone and says version 3 waits; once
    it ended, the watchdog requests the run that starts version 3's."""
    spec, admin, registry = progressive(stack.spec, "canary"), stack.admin, stack.registry
    registry.set_alias(CANARY, 2)
    roll_out(spec, registry)
    first = RolloutStore(spec.paths.rollouts).read()
    assert first is not None and first.version == "2"
    registry.set_alias(CANARY, 3)  # what approving version 3 does (promote_approved)

    done = roll_out(spec, registry)  # the deployed_endpoint run after the approval
    assert done.reason == (
        f"rollout {first.id} (canary of version 2) is running: version 3's rollout starts "
        "after it ends (completes, is rolled back, or `ct rollout promote|abort`); the "
        "endpoint_watchdog then starts it"
    )
    still = RolloutStore(spec.paths.rollouts).read()
    assert still is not None and (still.id, still.status) == (first.id, "running")
    assert slots(admin)["candidate"] == "2"
    tick = watchdog_tick(spec, instance)
    assert tick.skip_reason.skip_message == (  # type: ignore[union-attr]
        f"rollout {first.id} is running: the rollout_sensor drives it"
    )

    RolloutController(spec, admin, registry).control("abort", "not this one")
    assert aliases(registry) == {CHAMPION: 1, CANARY: 3}
    (request,) = watchdog_tick(spec, instance).run_requests
    assert request.asset_selection == [DEPLOYED_ENDPOINT]
    assert request.tags[REPAIR_TAG] == (
        f"{stack.url} serves the champion, version 1; version 3 holds `canary` and no rollout "
        "is active (approved while another version rolled out): its rollout starts"
    )
    roll_out(spec, registry)  # the run the watchdog requested
    second = RolloutStore(spec.paths.rollouts).read()
    assert second is not None and (second.version, second.status) == ("3", "running")
    assert slots(admin)["candidate"] == "3"


def watchdog_tick(spec: Spec, instance: dg.DagsterInstance) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, resources={"mlflow": MlflowResource()})
    return build_endpoint_watchdog(spec, automation_grace_seconds=0)(context)


def test_status_after_a_restart_tells_the_rollout_ended(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server restarted mid-canary serves the champion alone: `ct rollout status` says
    so at once (not at the next analysis), naming what the server answers with."""
    spec = progressive(stack.spec, "canary")
    RolloutController(spec, stack.admin, stack.registry).begin("2", f"{MODEL}-v2")
    target = target_for(spec)
    # What a restart serves: the version its target recorded (the shared server's stable
    # may have been reloaded by hand since an earlier test promoted another).
    recorded = target.status().endpoint.version  # type: ignore[union-attr]
    restart(target)
    assert slots(stack.admin) == {
        "stable": recorded,
        "candidate": None,
        "weight": 0.0,
        "shadow": False,
    }

    assert ct_main(["rollout", "status"]) == 0
    out = capsys.readouterr().out
    reason = f"the server answers with version {recorded} only (restarted?): rollout ended"
    assert "status rolled_back" in out and f"reason: {reason}" in out
    rollout = RolloutStore(spec.paths.rollouts).read()
    assert rollout is not None and (rollout.status, rollout.reason) == ("rolled_back", reason)
    assert aliases(stack.registry)[CANARY] is None


def test_sensor_advances_and_the_ui_job_aborts(
    stack: Stack, traffic_rows: list[dict[str, Any]], instance: dg.DagsterInstance
) -> None:
    spec = progressive(stack.spec, "canary", analysis={"interval_seconds": 0.001})
    first = RolloutController(spec, stack.admin, stack.registry).begin("2", f"{MODEL}-v2")
    send(stack.url, traffic_rows, STEP_REQUESTS, prefix="sensor")
    defs = dg.Definitions.merge(
        build_rollout_defs(spec), dg.Definitions(resources={"mlflow": MlflowResource()})
    )
    sensor = defs.resolve_sensor_def("rollout_sensor")

    with dg.build_sensor_context(instance=instance, resources={"mlflow": MlflowResource()}) as ctx:
        result = sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    # Nothing was reported yet: the start (at 20 %), then the analysis that moved it to 40 %.
    start, event = result.asset_events
    assert start.metadata["verdict"].value == "start"
    assert start.metadata["weight_percent"].value == 20.0, [
        (e.metadata["verdict"].value, e.metadata["reason"].value) for e in result.asset_events
    ]
    assert event.asset_key == ROLLOUT
    assert event.metadata["weight_percent"].value == 40.0
    assert event.metadata["verdict"].value == "pass"
    assert event.metadata["analysis/candidate_requests"].value >= 100

    # A tick whose result never reached the daemon (its cursor was not stored) loses
    # nothing: the next tick from the old cursor reports the same entries again; from the
    # stored cursor it reports none.
    with dg.build_sensor_context(
        instance=instance, resources={"mlflow": MlflowResource()}, cursor=None
    ) as ctx:
        again = sensor(ctx)
    assert [e.metadata["verdict"].value for e in again.asset_events][:2] == ["start", "pass"]
    with dg.build_sensor_context(
        instance=instance, resources={"mlflow": MlflowResource()}, cursor=again.cursor
    ) as ctx:
        caught_up = sensor(ctx)
    reported_before = json.loads(again.cursor)["reported"]
    history = RolloutStore(spec.paths.rollouts).read().history  # type: ignore[union-attr]
    assert len(caught_up.asset_events) == len(history) - reported_before

    result = defs.resolve_job_def("rollout_control").execute_in_process(
        instance=instance,
        run_config={"ops": {"control_rollout": {"config": {"action": "abort", "reason": "UI"}}}},
    )
    assert result.success
    latest = instance.get_latest_materialization_event(ROLLOUT)
    assert latest is not None
    metadata = latest.asset_materialization.metadata  # type: ignore[union-attr]
    assert metadata["status"].value == "rolled_back" and metadata["reason"].value == "UI"
    line = read_events()[-1]
    assert (line.kind, line.dagster_run_id) == ("rollback", result.run_id)
    # The rollout, and who ran the job: `<user> via dagster job execute via the ...` here.
    assert line.actor == (
        f"canary rollout {first.id} ({current_user()} via dagster job execute via the "
        "rollout_control job)"
    )
    assert slots(stack.admin) == {"stable": "1", "candidate": None, "weight": 0.0, "shadow": False}
    rollout: Rollout | None = RolloutStore(spec.paths.rollouts).read()
    assert rollout is not None and (spec.paths.rollouts / f"{rollout.id}.json").exists()

    # A rollout a sensor tick ends has no run: its audit line names the tick instead.
    second = RolloutController(spec, stack.admin, stack.registry).begin("2", f"{MODEL}-v2")
    stack.admin.route(0.0)
    stack.admin.unload_candidate()
    with dg.build_sensor_context(instance=instance, resources={"mlflow": MlflowResource()}) as ctx:
        sensor(ctx)
    line = read_events()[-1]
    assert line.kind == "rollback" and line.dagster_run_id is None
    assert line.actor == f"canary rollout {second.id} (sensor rollout_sensor tick)"
    # What the server still holds decides the wording: a server that has promoted before
    # keeps its previous stable, so an empty candidate slot there was unloaded, not restarted.
    if stack.admin.slots().get("previous"):
        assert "the server's candidate slot is empty (stable: version 1; unloaded?)" in line.reason
    else:
        assert "the server answers with version 1 only (restarted?)" in line.reason


def test_sensor_reports_the_end_of_a_rollout_replaced_between_two_ticks(
    bank_spec: Spec,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rollout A ended and B started before the next tick reached the daemon: the tick
    reports A's entries after the cursor (from A's archive), then all of B's."""
    monkeypatch.setenv("CT_HOME", str(tmp_path / "ct_home"))
    spec = progressive(bank_spec, "canary")
    store = RolloutStore(spec.paths.rollouts)

    def ended(rollout_id: str, verdicts: list[str]) -> Rollout:
        history = [
            {"at": 0.0, "step": 0, "weight": 0.2, "verdict": v, "reason": v, "figures": {}}
            for v in verdicts
        ]
        return Rollout(
            id=rollout_id,
            strategy="canary",
            version="2",
            previous_version="1",
            bundle=f"{MODEL}-v2",
            started_at=0.0,
            status="rolled_back",
            history=history,
        )

    store.write(ended("a", ["start", "pass", "rolled_back"]))
    store.write(ended("b", ["start", "rolled_back"]))
    defs = dg.Definitions.merge(
        build_rollout_defs(spec), dg.Definitions(resources={"mlflow": MlflowResource()})
    )
    sensor = defs.resolve_sensor_def("rollout_sensor")
    cursor = json.dumps({"rollout": "a", "reported": 1})
    with dg.build_sensor_context(
        instance=instance, resources={"mlflow": MlflowResource()}, cursor=cursor
    ) as ctx:
        result = sensor(ctx)

    reported = [
        (e.metadata["rollout_id"].value, e.metadata["verdict"].value) for e in result.asset_events
    ]
    assert reported == [("a", "pass"), ("a", "rolled_back"), ("b", "start"), ("b", "rolled_back")]
    assert json.loads(result.cursor) == {"rollout": "b", "reported": 2}


def test_a_rollback_leaves_canary_to_a_version_approved_while_it_rolled_out(
    stack: Stack, flipped_bundle: Path, traffic_rows: list[dict[str, Any]]
) -> None:
    """Version 3 rolls out; meanwhile version 2 is approved and takes `canary` (as
    `promote_approved` does). Version 3's rollback must leave version 2 its alias: the
    alias is what starts version 2's rollout next."""
    spec, admin, registry = progressive(stack.spec, "canary"), stack.admin, stack.registry
    controller = RolloutController(spec, admin, registry)
    controller.begin("3", flipped_bundle.name)
    registry.set_alias(CANARY, 2)
    send(stack.url, traffic_rows, STEP_REQUESTS, prefix="overlap")
    rollout = controller.advance(force=True)

    assert rollout is not None and rollout.status == "rolled_back" and rollout.version == "3"
    assert aliases(registry) == {CHAMPION: 1, CANARY: 2}


def test_an_approved_version_rolled_back_leaves_no_alias_and_reads_as_a_rollout_rollback(
    stack: Stack,
    flipped_bundle: Path,
    traffic_rows: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Version 3 approved by a person under a canary strategy: `ct status` says it awaits
    its rollout; rolled back, it holds no alias (`challenger` neither: it never becomes
    champion), and `ct history` tells a rollout's rollback from a champion's."""
    spec, admin, registry = progressive(stack.spec, "canary"), stack.admin, stack.registry
    registry.set_tags(3, {GATES_PASSED_TAG: "true", APPROVAL_TAG: PENDING})
    registry.set_alias(CHALLENGER, 3)  # as training leaves the refit that waits
    decide(registry, 3, "approve", reason="card ok", actor="alice")
    assert promote_approved(registry, 3, spec, actor="alice") == 1
    assert aliases(registry) == {CHAMPION: 1, CANARY: 3}
    assert verdict(registry.version(3), {}) == "approved by alice, awaiting rollout (canary)"

    controller = RolloutController(spec, admin, registry)
    controller.begin("3", flipped_bundle.name)
    send(stack.url, traffic_rows, STEP_REQUESTS, prefix="approved-bad")
    rollout = controller.advance(force=True)

    assert rollout is not None and rollout.status == "rolled_back"
    assert aliases(registry) == {CHAMPION: 1, CANARY: None}
    assert registry.alias_version(CHALLENGER) is None
    capsys.readouterr()
    assert ct_main(["history"]) == 0
    (line,) = [row for row in capsys.readouterr().out.splitlines() if "rolled back" in row]
    assert "rollout rollback  rollout of v3 rolled back; champion v1 stays" in line
    assert "canary rolled back: analysis failed: " in line
