"""The retrain governor: decides whether a drift or decay trigger may start a retrain.

Monitoring fires on every tick while drift lasts; without a governor a drift storm becomes a
retrain storm, and a candidate that cannot beat the champion gets retrained in a loop. The
rules, from `monitoring.governor` in the spec, checked in this order:

1. none while one is in flight (one that never reported back for `STALE_IN_FLIGHT_HOURS`
   is presumed crashed, so a lost run cannot block retraining forever);
2. one retrain per episode: a trigger carries an episode id (e.g. when the drift started),
   and an episode that already had its retrain gets no second one;
3. after a candidate was rejected (or the run failed): no retrain for `backoff_minutes`, and
   an alert is raised once, instead of retrying in a loop;
4. `cooldown_minutes` between retrain starts;
5. at most `max_retrains_per_day` starts in any 24 hours.

State is a small JSON ledger under `Paths.state`, replaced atomically (write + rename) under a
file lock, so a sensor and an asset in different processes see one consistent history.
Alerts are appended as JSON lines to `$CT_HOME/alerts.jsonl` and, when the env var named by
`alert_webhook_env` holds a URL, POSTed there as JSON; a failing webhook is logged, never raised.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ct_platform.settings import GovernorSpec, Paths

log = logging.getLogger(__name__)

Outcome = Literal["promoted", "rejected", "failed"]
STALE_IN_FLIGHT_HOURS = 6.0
# Episodes older than this are forgotten: the ledger stays small, and an episode id is
# never reused that late (ids are derived from when the episode began).
EPISODE_MEMORY_DAYS = 7.0
WEBHOOK_TIMEOUT_SECONDS = 5.0
DAY = 86_400.0


@dataclass(frozen=True)
class Trigger:
    """Why a retrain is wanted. `episode` identifies one continuous drift or decay episode."""

    kind: str
    episode: str
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


@dataclass
class Ledger:
    in_flight: dict | None = None  # {"episode": str, "started_at": float}
    starts: list[float] = field(default_factory=list)
    episodes: dict[str, float] = field(default_factory=dict)  # episode -> retrain start time
    backoff_until: float | None = None
    last_outcome: dict | None = None  # {"outcome", "episode", "finished_at", "detail"}
    open_episodes: dict[str, str] = field(default_factory=dict)  # kind -> ongoing episode id


class RetrainGovernor:
    def __init__(
        self,
        spec: GovernorSpec,
        *,
        state_dir: Path | None = None,
        alert_log: Path | None = None,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        paths = Paths.from_env()
        self.spec = spec
        self.ledger_path = (state_dir or paths.state) / "retrain_governor.json"
        self.alert_log = alert_log or paths.home / "alerts.jsonl"
        self.clock = clock
        self.environ = environ

    def episode(self, kind: str, active: bool) -> str | None:
        """Track a condition (e.g. "drift") tick by tick: the id of its ongoing episode, new
        when the condition appears after being absent, None while it is absent. Ticks that
        keep seeing the same drift therefore share one episode, and so one retrain."""
        with self._locked(write=True) as ledger:
            if not active:
                ledger.open_episodes.pop(kind, None)
                return None
            return ledger.open_episodes.setdefault(kind, f"{kind}-{self.clock():.0f}")

    def decide(self, trigger: Trigger) -> Decision:
        """Whether `trigger` may start a retrain now. Records nothing: call `retrain_started`
        when the run is actually launched."""
        with self._locked() as ledger:
            return self._decide(ledger, trigger, self.clock())

    def retrain_started(self, episode: str) -> None:
        with self._locked(write=True) as ledger:
            now = self.clock()
            ledger.in_flight = {"episode": episode, "started_at": now}
            ledger.starts.append(now)
            ledger.episodes[episode] = now

    def retrain_finished(self, outcome: Outcome, detail: str = "") -> None:
        """Close the in-flight retrain. A rejected candidate or a failed run starts the
        backoff and raises an alert; a promotion clears any backoff."""
        with self._locked(write=True) as ledger:
            now = self.clock()
            episode = ledger.in_flight["episode"] if ledger.in_flight else None
            ledger.in_flight = None
            ledger.last_outcome = {
                "outcome": outcome,
                "episode": episode,
                "finished_at": now,
                "detail": detail,
            }
            if outcome == "promoted":
                ledger.backoff_until = None
                return
            ledger.backoff_until = now + self.spec.backoff_minutes * 60
        self._alert(outcome, episode, detail, now)

    def ledger(self) -> Ledger:
        with self._locked() as ledger:
            return ledger

    # --- rules ---------------------------------------------------------------------------

    def _decide(self, ledger: Ledger, trigger: Trigger, now: float) -> Decision:
        flight = ledger.in_flight
        if flight and now - flight["started_at"] < STALE_IN_FLIGHT_HOURS * 3600:
            return Decision(False, f"a retrain is in flight (episode {flight['episode']})")
        if trigger.episode in ledger.episodes:
            return Decision(False, f"episode {trigger.episode} already had its retrain")
        if ledger.backoff_until is not None and now < ledger.backoff_until:
            minutes = (ledger.backoff_until - now) / 60
            last = (ledger.last_outcome or {}).get("outcome", "rejected")
            return Decision(False, f"backing off after a {last} retrain: {minutes:.0f} min left")
        last_start = max(ledger.starts, default=None)
        cooldown = self.spec.cooldown_minutes * 60
        if last_start is not None and now - last_start < cooldown:
            minutes = (cooldown - (now - last_start)) / 60
            return Decision(False, f"cooldown: {minutes:.0f} min until the next retrain")
        today = [start for start in ledger.starts if now - start < DAY]
        if len(today) >= self.spec.max_retrains_per_day:
            return Decision(False, f"{len(today)} retrains in the last 24 h (the maximum)")
        return Decision(True, f"{trigger.kind} trigger, episode {trigger.episode}")

    # --- alerts --------------------------------------------------------------------------

    def _alert(self, outcome: Outcome, episode: str | None, detail: str, now: float) -> None:
        minutes = self.spec.backoff_minutes
        alert = {
            "ts": now,
            "event": f"retrain_{outcome}",
            "episode": episode,
            "detail": detail,
            "message": f"retrain {outcome}; no automatic retrain for {minutes:g} min",
        }
        send_alert(alert, self.alert_log, self.environ.get(self.spec.alert_webhook_env or "", ""))

    # --- ledger persistence --------------------------------------------------------------

    @contextmanager
    def _locked(self, *, write: bool = False) -> Iterator[Ledger]:
        self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.ledger_path.with_suffix(".lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            ledger = self._read()
            yield ledger
            if write:
                self._write(ledger)

    def _read(self) -> Ledger:
        try:
            return Ledger(**json.loads(self.ledger_path.read_text()))
        except FileNotFoundError:
            return Ledger()

    def _write(self, ledger: Ledger) -> None:
        now = self.clock()
        ledger.starts = [start for start in ledger.starts if now - start < DAY]
        memory = EPISODE_MEMORY_DAYS * DAY
        ledger.episodes = {e: t for e, t in ledger.episodes.items() if now - t < memory}
        temporary = self.ledger_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(ledger), indent=2))
        os.replace(temporary, self.ledger_path)


def send_alert(alert: dict, alert_log: Path, webhook_url: str | None) -> None:
    """The platform's alert: one JSON line in `alert_log` (`$CT_HOME/alerts.jsonl`), a
    warning in the log, and a POST to `webhook_url` when one is set. `alert` holds at least
    "ts", "event" and "message"."""
    alert_log.parent.mkdir(parents=True, exist_ok=True)
    with alert_log.open("a") as handle:
        handle.write(json.dumps(alert) + "\n")
    log.warning("alert: %s", alert["message"])
    if webhook_url:
        _post_webhook(webhook_url, alert)


def _post_webhook(url: str, alert: dict) -> None:
    import httpx  # only when an alert is sent: the retrain sensor loads this module

    try:
        httpx.post(url, json=alert, timeout=WEBHOOK_TIMEOUT_SECONDS).raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("alert webhook %s failed: %s", url, exc)
