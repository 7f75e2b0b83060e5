"""The retrain governor under a drift storm, a failing candidate, daily limits, in-flight runs."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ct_platform.monitoring.governor import RetrainGovernor, Trigger
from ct_platform.settings import GovernorSpec

START = 1_800_000_000.0
MINUTE = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += minutes * MINUTE


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A real local HTTP server that records the JSON bodies POSTed to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", received
    server.shutdown()
    server.server_close()


def governor(clock: Clock, url: str = "", **spec: object) -> RetrainGovernor:
    spec = {"cooldown_minutes": 30, "max_retrains_per_day": 6, "backoff_minutes": 120, **spec}
    return RetrainGovernor(
        GovernorSpec(**spec, alert_webhook_env="CT_TEST_WEBHOOK"),
        clock=clock,
        environ={"CT_TEST_WEBHOOK": url},
    )


def drift(episode: int | str) -> Trigger:
    return Trigger(kind="drift", episode=f"drift-{episode}")


def run_storm(
    gov: RetrainGovernor, clock: Clock, name: str, events: int, every_minutes: float
) -> list[float]:
    """Every event is a trigger from a fresh episode (the worst case); an allowed one starts a
    retrain that is promoted 5 minutes later. Returns the start times."""
    starts, finish_at = [], None
    for event in range(events):
        if finish_at is not None and clock.now >= finish_at:
            gov.retrain_finished("promoted")
            finish_at = None
        if gov.decide(drift(f"{name}-{event}")).allowed:
            gov.retrain_started(f"drift-{name}-{event}")
            starts.append(clock.now)
            finish_at = clock.now + 5 * MINUTE
        clock.advance(every_minutes)
    return starts


def test_drift_storm_causes_one_retrain_per_cooldown(clock: Clock) -> None:
    gov = governor(clock)
    assert len(run_storm(gov, clock, "storm", events=50, every_minutes=10 / 50)) == 1

    # The storm goes on for 4 more hours: retrains stay at least a cooldown apart.
    starts = run_storm(gov, clock, "longer", events=4 * 60, every_minutes=1)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert starts and all(gap >= 30 * MINUTE for gap in gaps)


def test_rejected_candidate_backs_off_and_alerts(clock: Clock, webhook, ct_home: Path) -> None:
    url, received = webhook
    gov = governor(clock, url)
    assert gov.decide(drift(1)).allowed
    gov.retrain_started("drift-1")
    clock.advance(10)
    gov.retrain_finished("rejected", detail="candidate roc_auc 0.71 < champion 0.78")

    # No loop: new drift episodes keep coming, none retrains during the 120-minute backoff,
    # although the 30-minute cooldown is long over.
    for episode in range(2, 12):
        clock.advance(10)
        decision = gov.decide(drift(episode))
        assert not decision.allowed and "backing off after a rejected retrain" in decision.reason
    clock.advance(25)  # 125 minutes after the rejection
    assert gov.decide(drift(99)).allowed

    alerts = [json.loads(line) for line in (ct_home / "alerts.jsonl").read_text().splitlines()]
    assert len(alerts) == 1 and alerts[0]["event"] == "retrain_rejected"
    assert alerts[0]["episode"] == "drift-1" and "0.71" in alerts[0]["detail"]
    assert received == alerts  # the webhook got the same alert, once


def test_failing_webhook_is_logged_not_raised(clock: Clock, ct_home: Path, caplog) -> None:
    gov = governor(clock, "http://127.0.0.1:9/unreachable")
    gov.retrain_started("drift-1")
    gov.retrain_finished("failed", detail="training job crashed")

    assert "retrain_failed" in (ct_home / "alerts.jsonl").read_text()
    assert "alert webhook" in caplog.text
    assert not gov.decide(drift(2)).allowed  # a failed run backs off like a rejected one


def test_max_retrains_per_day(clock: Clock) -> None:
    gov = governor(clock, cooldown_minutes=0, max_retrains_per_day=6)
    for episode in range(6):
        assert gov.decide(drift(episode)).allowed
        gov.retrain_started(f"drift-{episode}")
        gov.retrain_finished("promoted")
        clock.advance(60)
    decision = gov.decide(drift(6))
    assert not decision.allowed and "6 retrains in the last 24 h" in decision.reason
    clock.advance(19 * 60)  # the first start is now 24 h old
    assert gov.decide(drift(6)).allowed


def test_none_while_one_is_in_flight(clock: Clock) -> None:
    gov = governor(clock, cooldown_minutes=0)
    gov.retrain_started("drift-1")
    clock.advance(120)
    # A new process (another sensor tick) sees the same ledger.
    decision = governor(clock, cooldown_minutes=0).decide(drift(2))
    assert not decision.allowed and "in flight" in decision.reason
    clock.advance(6 * 60)  # never reported back: presumed crashed
    assert gov.decide(drift(2)).allowed


def test_one_retrain_per_episode(clock: Clock) -> None:
    gov = governor(clock)
    gov.retrain_started("drift-1")
    gov.retrain_finished("promoted")
    clock.advance(24 * 60)
    decision = gov.decide(drift(1))
    assert not decision.allowed and "already had its retrain" in decision.reason
    assert gov.decide(drift(2)).allowed


def test_ticks_seeing_the_same_drift_share_one_episode(clock: Clock) -> None:
    gov = governor(clock, cooldown_minutes=0)
    allowed = 0
    for _ in range(50):  # 50 sensor ticks in 10 minutes, all seeing drift
        episode = gov.episode("drift", active=True)
        if gov.decide(Trigger("drift", episode)).allowed:
            gov.retrain_started(episode)
            gov.retrain_finished("promoted")
            allowed += 1
        clock.advance(10 / 50)
    assert allowed == 1
    assert gov.episode("drift", active=False) is None
    clock.advance(1)
    assert gov.episode("drift", active=True) != episode  # drift came back: a new episode
