"""Progressive delivery: one rollout at a time, advanced one analysis at a time.

A rollout brings version N (the `canary` alias) in beside the serving version (the
`champion` alias, the server's stable slot) with one of the spec's strategies:

- `canary`: the candidate answers `steps[i]` % of traffic; after each interval the
  analysis of that period either moves to the next step, or rolls back; a pass at 100 %
  completes the rollout;
- `blue_green`: the candidate is loaded and warmed on shadow copies of live traffic; once
  its analysis passes, all traffic switches at once; the old version stays loaded (the
  server's `previous` slot) and a rollback within `rollback_window_seconds` is one swap;
- `shadow`: the candidate scores copies of live traffic (only stable answers) until
  `shadow.requests` shadow requests or `shadow.duration_seconds`; the analysis of the whole
  run (agreement, score shift, errors, latency) decides promotion or not;
- `ab`: a fixed, sticky split; safety checks every interval, and once both arms hold the
  sample size the test needs, a test on the labels from `/feedback` each interval: stop at
  significance (promote the candidate if it wins) or at `ab.max_duration_seconds`.

Registry policy (so that MLflow, the server and Dagster never disagree about what serves):
`champion` always names the server's stable version. The version being rolled out holds
`canary`; `champion` moves to it only when all traffic is its (completion, a blue-green
switch, or a person's "promote now"), and `canary` is removed at the end either way. A
rollback removes `canary` and leaves `champion`, and stable, untouched.

What a restart serves: the target records the bundle of the server's stable slot (the
local state file, the docker container's start-up symlink). It moves to the new version
only once the server promoted it (completion, a blue-green switch) and back after a
rollback of a switch, never while the version is a candidate: a server restarted in the
middle of a rollout serves the champion alone, and the rollout, finding its candidate gone
(or the server not answering), ends rolled back with that reason and an alert.

Audit log: the start ("canary started"), the end of a rollout that moved traffic
("canary completed", "blue-green switched") are deployments; a rollback is a rollback
("canary rolled back: ..."), each with the rollout as actor.

Nothing here waits: `advance()` does one analysis when an interval has passed and returns.
The state lives in `$CT_HOME/rollouts/current.json` (replaced atomically, changed under a
file lock); every finished rollout is kept as `<id>.json` beside it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx

from ct_platform.deployment.analysis import (
    Analysis,
    ab_test,
    analyse,
    required_sample_size,
    slot_window,
)
from ct_platform.deployment.endpoint import DeploymentError
from ct_platform.deployment.state import exclusive, read_json, write_json_atomic
from ct_platform.deployment.targets import DeploymentTarget, target_for
from ct_platform.registry.versions import CANARY, CHAMPION
from ct_platform.settings import Spec

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ct_platform.deployment.admin import AdminClient
    from ct_platform.registry.mlflow_registry import ModelRegistry

Status = Literal["running", "paused", "completed", "rolled_back", "stopped"]
ACTIVE: tuple[Status, ...] = ("running", "paused")
Action = Literal["pause", "resume", "promote", "abort"]
ACTIONS: tuple[Action, ...] = ("pause", "resume", "promote", "abort")
CURRENT_FILE = "current.json"
# How the audit log and people name each strategy ("canary started").
STRATEGY_LABELS = {
    "canary": "canary",
    "blue_green": "blue-green",
    "shadow": "shadow",
    "ab": "A/B test",
}


class RolloutError(DeploymentError):
    """A rollout command that cannot apply now (the message says why)."""


@dataclass
class Rollout:
    id: str
    strategy: str
    version: str
    previous_version: str | None
    # The bundle as the server's admin API takes it: a folder name under $CT_HOME/bundles.
    bundle: str
    started_at: float
    # The stable version's bundle as its target recorded it (None: not known), which a
    # restart serves again after a blue-green switch is rolled back.
    previous_bundle: str | None = None
    status: Status = "running"
    # canary: "canary"; blue_green: "verify" then "switched"; shadow: "shadow"; ab: "test"
    phase: str = ""
    step: int = 0
    weight: float = 0.0
    period_started_at: float = 0.0
    # Server stats snapshots: at the start of the rollout and of the current period.
    origin: dict[str, Any] = field(default_factory=dict)
    cursor: dict[str, Any] = field(default_factory=dict)
    failed_checks: int = 0
    required_samples: int | None = None
    decision: dict[str, Any] | None = None
    reason: str = ""
    finished_at: float | None = None
    # Who ended it by hand (pause/resume/promote/abort): "ana via ct rollout", ... ("" if
    # it ended on its own: an analysis, a decision, a lost server).
    ended_by: str = ""
    # One entry per analysis or control action: at, step, weight, verdict, reason, figures.
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def label(self) -> str:
        return STRATEGY_LABELS.get(self.strategy, self.strategy)

    def summary(self) -> dict[str, Any]:
        """The state without the raw snapshots (for people, the CLI, the UI)."""
        return {k: v for k, v in asdict(self).items() if k not in ("origin", "cursor")}


class RolloutStore:
    """`current.json` plus one archived record per finished rollout, under one lock."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.current_file = directory / CURRENT_FILE

    def read(self) -> Rollout | None:
        raw = read_json(self.current_file)
        return Rollout(**raw) if raw else None

    def archived(self, rollout_id: str) -> Rollout | None:
        """A finished rollout's record (None if there is none)."""
        raw = read_json(self.directory / f"{rollout_id}.json")
        return Rollout(**raw) if raw else None

    def latest_by_version(self) -> dict[str, Rollout]:
        """Each version's latest rollout (finished ones from their records, then the
        current one): how its delivery ended, for `ct status`."""
        records = [
            Rollout(**raw)
            for path in sorted(self.directory.glob("*.json"))
            if path.name != CURRENT_FILE and (raw := read_json(path))
        ]
        current = self.read()
        latest: dict[str, Rollout] = {}
        for rollout in sorted([*records, *filter(None, [current])], key=lambda r: r.started_at):
            latest[rollout.version] = rollout
        return latest

    def write(self, rollout: Rollout) -> None:
        write_json_atomic(self.current_file, asdict(rollout))
        if not rollout.active:
            write_json_atomic(self.directory / f"{rollout.id}.json", asdict(rollout))

    @contextmanager
    def locked(self) -> Iterator[None]:
        with exclusive(self.directory / "rollout.lock"):
            yield


def active_rollout(spec: Spec) -> Rollout | None:
    """The running or paused rollout, if any: one file read, for sensors and the watchdog."""
    rollout = RolloutStore(spec.paths.rollouts).read()
    return rollout if rollout is not None and rollout.active else None


# The running totals an analysis period records of each slot, as GET /admin/stats shows them.
PERIOD_TOTALS = ("requests", "errors", "refused")


def _period(rollout: Rollout, stats: dict[str, Any], slot: str, now: float) -> dict[str, Any]:
    """The two server snapshots an analysis subtracted: when (`from`, `to`, Unix seconds)
    and each judged slot's running totals in them (`start`, `end`: scored `requests`,
    `errors`, `refused`, as `GET /admin/stats` showed them). The analysis figures are
    `end - start` (`routed` = the three summed), so a user can check them against the
    server's own totals; a slot whose totals went down was reset (server restarted) and
    its figures are then its `end` alone."""

    def totals(snapshot: dict[str, Any]) -> dict[str, dict[str, int]]:
        slots = snapshot.get("slots") or {}
        return {
            name: {key: int((slots.get(name) or {}).get(key, 0)) for key in PERIOD_TOTALS}
            for name in (slot, "stable")
        }

    return {
        "from": rollout.period_started_at,
        "to": now,
        "start": totals(rollout.cursor),
        "end": totals(stats),
    }


def is_due(rollout: Rollout, interval_seconds: float, now: float) -> bool:
    return rollout.status == "running" and now - rollout.period_started_at >= interval_seconds


class RolloutController:
    """Starts, advances and ends rollouts on one server (its admin API) and the registry."""

    def __init__(
        self,
        spec: Spec,
        admin: AdminClient,
        registry: ModelRegistry,
        *,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] = os.environ,
        target: DeploymentTarget | None = None,
        run_id: str | None = None,
        driver: str = "",
    ) -> None:
        """`admin` talks to the server that `target` (default: the spec's) deployed.

        `run_id`: the Dagster run this controller acts in (None: none, e.g. a sensor tick);
        `driver`: what acts when that is not the rollout's own pace, e.g. "sensor
        rollout_sensor tick" or "ct rollout abort by ana". Both go on its audit lines.
        """
        self.run_id = run_id
        self.driver = driver
        self.spec = spec
        self.deployment = spec.deployment
        self.admin = admin
        self.registry = registry
        self.target = target or target_for(spec)
        self.clock = clock
        self.environ = environ
        self.store = RolloutStore(spec.paths.rollouts)
        self.regression = spec.dataset.task == "regression"

    # --- start -------------------------------------------------------------------------

    def begin(self, version: str, bundle: str) -> Rollout:
        """Load `bundle` (version `version`) as candidate and route traffic to it as the
        strategy starts; a rollout still active is rolled back first (superseded)."""
        strategy = self.deployment.strategy
        if strategy == "direct":
            raise RolloutError("deployment.strategy is 'direct': nothing to roll out")
        with self.store.locked():
            current = self.store.read()
            if current is not None and current.active:
                self._roll_back(current, f"superseded by version {version}", alert=False)
            slots = self.admin.slots()
            now = self.clock()
            rollout = Rollout(
                id=f"v{version}-{int(now)}",
                strategy=strategy,
                version=version,
                previous_version=str(slots["stable"]["version"]),
                bundle=bundle,
                started_at=now,
                previous_bundle=self._recorded_bundle(str(slots["stable"]["version"])),
                period_started_at=now,
            )
            self.admin.load(bundle)
            self.registry.set_alias(CANARY, int(version))
            self._open(rollout)
            snapshot = self.admin.stats()
            rollout.origin = rollout.cursor = snapshot
            started = f"{rollout.label} started: version {version} {self._share(rollout)}"
            self._note(rollout, "start", started)
            self.store.write(rollout)
            self._record_deployment(rollout, int(version), started)
            return rollout

    def _recorded_bundle(self, stable_version: str) -> str | None:
        """The bundle the target recorded for the stable version (None if it records another)."""
        status = self.target.status()
        if status is None or status.endpoint.version != stable_version:
            return None
        return status.endpoint.bundle

    @staticmethod
    def _share(rollout: Rollout) -> str:
        beside = f"beside version {rollout.previous_version}"
        if rollout.strategy in ("blue_green", "shadow"):
            return f"scores shadow copies of live traffic {beside}"
        return f"answers {100 * rollout.weight:g} % of traffic {beside}"

    def _open(self, rollout: Rollout) -> None:
        """The first routing of each strategy."""
        if rollout.strategy == "canary":
            rollout.phase = "canary"
            self._route(rollout, self.deployment.canary.steps[0] / 100)
        elif rollout.strategy == "ab":
            rollout.phase = "test"
            self._route(rollout, self.deployment.ab.split)
            if not self.regression:
                rollout.required_samples = required_sample_size(
                    self.deployment.ab, regression=False, outcome_sd=None
                )
        else:  # blue_green verifies, shadow compares, both on shadow copies
            rollout.phase = "verify" if rollout.strategy == "blue_green" else "shadow"
            self._route(rollout, 0.0, shadow=True)

    # --- advance -----------------------------------------------------------------------

    def advance(self, *, force: bool = False) -> Rollout | None:
        """One analysis when the current period is over (or `force`); the rollout after it.

        Returns None when no rollout is active. A server that no longer holds the
        rollout's version (restarted, replaced) ends the rollout: rolled back, with why.
        """
        with self.store.locked():
            rollout = self.store.read()
            if rollout is None or not rollout.active:
                return None
            now = self.clock()
            interval = self.deployment.analysis.interval_seconds
            if not (force and rollout.status == "running") and not is_due(rollout, interval, now):
                return rollout
            self._step(rollout, now)
            self.store.write(rollout)
            return rollout

    def reconcile(self) -> Rollout | None:
        """The rollout as the server stands now, without an analysis: an active rollout
        whose server no longer holds its version (restarted, replaced) ends, rolled back,
        as the next analysis would end it. A server that does not answer changes nothing
        here (it may be restarting); the next analysis decides. None: no rollout yet."""
        with self.store.locked():
            rollout = self.store.read()
            if rollout is None or not rollout.active:
                return rollout
            try:
                routing = self.admin.slots()
            except httpx.ConnectError:
                return rollout
            lost = self._lost_version(rollout, routing)
            if lost:
                self._roll_back(rollout, lost, alert=True)
                self.store.write(rollout)
            return rollout

    def _step(self, rollout: Rollout, now: float) -> None:
        try:
            stats = self.admin.stats()
        except httpx.ConnectError as error:
            self._server_gone(rollout, str(error))
            return
        lost = self._lost_version(rollout, stats["routing"])
        if lost:
            self._roll_back(rollout, lost, alert=True)
            return
        if rollout.phase == "switched":
            self._after_switch(rollout, now)
            return
        slot = "candidate" if rollout.strategy in ("canary", "ab") else "shadow"
        analysis = self._analyse(rollout, stats, slot, period_start=rollout.cursor)
        period = _period(rollout, stats, slot, now)
        self._note(rollout, analysis.verdict, analysis.reason, analysis.figures, period)
        if analysis.verdict == "fail":
            rollout.failed_checks += 1
            if rollout.failed_checks > self.deployment.analysis.failure_limit:
                self._roll_back(rollout, f"analysis failed: {analysis.reason}", alert=True)
                return
        if rollout.strategy == "canary" and analysis.verdict == "pass":
            self._next_canary_step(rollout)
        elif rollout.strategy == "blue_green" and analysis.verdict == "pass":
            self._switch(rollout, now)
        elif rollout.strategy == "shadow":
            self._shadow_budget(rollout, stats, now)
        elif rollout.strategy == "ab" and analysis.verdict != "fail":
            self._ab_decision(rollout, stats, now)
        if rollout.active and analysis.verdict != "wait":
            self._new_period(rollout, stats, now)

    def _analyse(
        self, rollout: Rollout, stats: dict[str, Any], slot: str, *, period_start: dict[str, Any]
    ) -> Analysis:
        return analyse(
            self.deployment.analysis,
            period_start=period_start,
            rollout_start=rollout.origin,
            now=stats,
            candidate_slot=slot,
            regression=self.regression,
            earlier=rollout.history,
            # Agreement decides a shadow comparison; a blue-green switch is judged like a
            # canary step (a better model may well disagree with the old one).
            min_agreement=self.deployment.shadow.min_agreement
            if rollout.strategy == "shadow" and not self.regression
            else None,
        )

    def _next_canary_step(self, rollout: Rollout) -> None:
        steps = self.deployment.canary.steps
        if rollout.step + 1 >= len(steps):
            self._complete(rollout, f"canary passed every step up to {steps[-1]:g} %")
            return
        rollout.step += 1
        self._route(rollout, steps[rollout.step] / 100)

    def _switch(self, rollout: Rollout, now: float) -> None:
        """Blue-green: all traffic to the verified candidate at once; the old one stays."""
        self._promote_on_server(rollout)
        switched = f"{rollout.label} switched: all traffic to version {rollout.version}"
        self._move_champion(rollout, switched)
        rollout.phase, rollout.weight = "switched", 1.0
        rollout.period_started_at = now
        self._note(rollout, "switch", switched)
        self._record_deployment(rollout, int(rollout.version), switched)

    def _promote_on_server(self, rollout: Rollout) -> None:
        """The candidate becomes the server's stable, then what a restart serves."""
        self.admin.route(0.0)
        self.admin.promote()
        self.target.adopt(self.spec.paths.bundles / rollout.bundle)

    def _after_switch(self, rollout: Rollout, now: float) -> None:
        window = self.deployment.blue_green.rollback_window_seconds
        if now - rollout.period_started_at >= window:
            self._finish(rollout, "completed", f"rollback window of {window:g} s is over")

    def _shadow_budget(self, rollout: Rollout, stats: dict[str, Any], now: float) -> None:
        shadow = self.deployment.shadow
        seen = slot_window(rollout.origin, stats, "shadow").requests
        if seen < shadow.requests and now - rollout.started_at < shadow.duration_seconds:
            return
        verdict = self._analyse(rollout, stats, "shadow", period_start=rollout.origin)
        rollout.decision = {"promote": verdict.verdict == "pass", **verdict.figures}
        if verdict.verdict == "pass":
            self._complete(rollout, f"shadow comparison over {seen} requests passed")
        else:
            self._roll_back(rollout, f"shadow comparison over {seen} requests: {verdict.reason}")

    def _ab_decision(self, rollout: Rollout, stats: dict[str, Any], now: float) -> None:
        ab = self.deployment.ab
        stable = slot_window(rollout.origin, stats, "stable")
        candidate = slot_window(rollout.origin, stats, "candidate")
        if rollout.required_samples is None and stable.labelled >= 2:
            rollout.required_samples = required_sample_size(
                ab, regression=True, outcome_sd=stable.outcome_sd, outcome_mean=stable.outcome_mean
            )
        needed = rollout.required_samples
        ratio = ab.split / (1 - ab.split)
        enough = needed is not None and (
            stable.labelled >= needed and candidate.labelled >= needed * ratio
        )
        result = ab_test(stable, candidate, regression=self.regression) if enough else None
        if result is not None:
            rollout.history[-1]["figures"].update(
                {"p_value": result.p_value, "effect": result.effect}
            )
        if result is not None and result.p_value < ab.alpha:
            winner = "candidate" if result.candidate_better(self.regression) else "stable"
            rollout.decision = {"winner": winner, **asdict(result), "required_samples": needed}
            reason = (
                f"A/B test significant (p = {result.p_value:.3g} < {ab.alpha:g}): {winner} "
                f"wins, effect {result.effect:+.4f} ({result.candidate_n} vs {result.stable_n})"
            )
            if winner == "candidate":
                self._complete(rollout, reason)
            else:
                self._roll_back(rollout, reason, status="stopped")
        elif now - rollout.started_at >= ab.max_duration_seconds:
            figures = asdict(result) if result is not None else {}
            rollout.decision = {"winner": None, **figures, "required_samples": needed}
            self._roll_back(
                rollout,
                f"A/B test reached its maximum duration ({ab.max_duration_seconds:g} s) "
                f"without a significant difference: no winner, stable stays",
                status="stopped",
            )

    def _new_period(self, rollout: Rollout, stats: dict[str, Any], now: float) -> None:
        rollout.cursor = stats
        rollout.period_started_at = now

    # --- people's actions ----------------------------------------------------------------

    def control(self, action: Action | str, reason: str = "") -> Rollout:
        """pause, resume, promote (complete now) or abort (roll back now) the rollout."""
        if action not in ACTIONS:
            raise RolloutError(f"unknown action '{action}': use one of {list(ACTIONS)}")
        with self.store.locked():
            rollout = self.store.read()
            if rollout is None or not rollout.active:
                raise RolloutError(f"no active rollout to {action}")
            why = reason or f"{action} requested by {self.driver or 'a person'}"
            self._refuse_repeat(rollout, action)
            if action in ("promote", "abort"):
                rollout.ended_by = self.driver or "a person"
            if action == "pause":
                rollout.status = "paused"
                self._note(rollout, "pause", why)
            elif action == "resume":
                rollout.status = "running"
                self._new_period(rollout, self.admin.stats(), self.clock())
                self._note(rollout, "resume", why)
            elif action == "promote":
                if rollout.phase == "switched":
                    self._finish(rollout, "completed", why)
                else:
                    self._complete(rollout, why)
            else:
                self._roll_back(rollout, why, alert=False)
            self.store.write(rollout)
            return rollout

    @staticmethod
    def _refuse_repeat(rollout: Rollout, action: str) -> None:
        """A pause of a paused rollout (a resume of a running one) changes nothing: say so,
        with since when, rather than record a second action."""
        if (action, rollout.status) not in (("pause", "paused"), ("resume", "running")):
            return
        changes = [e for e in rollout.history if e["verdict"] in ("start", "pause", "resume")]
        since = datetime.fromtimestamp(changes[-1]["at"], UTC).isoformat(timespec="seconds")
        state = "paused" if action == "pause" else "running"
        raise RolloutError(f"rollout {rollout.id} is already {state} since {since}")

    # --- endings ---------------------------------------------------------------------------

    def _complete(self, rollout: Rollout, reason: str) -> None:
        """All traffic to the candidate: the server promotes it, then `champion` follows."""
        if rollout.phase != "switched":
            self._promote_on_server(rollout)
            completed = f"{rollout.label} completed: version {rollout.version} serves all traffic"
            self._move_champion(rollout, f"{completed} ({reason})")
            self._record_deployment(rollout, int(rollout.version), f"{completed} ({reason})")
        rollout.weight = 1.0
        self._finish(rollout, "completed", reason)

    def _move_champion(self, rollout: Rollout, how: str) -> None:
        from ct_platform.governance.lifecycle import move_champion

        _, note = move_champion(
            self.registry,
            int(rollout.version),
            self.spec,
            actor=self._actor(rollout),
            how=how,
            dagster_run_id=self.run_id,
        )
        self.registry.drop_alias_of(CANARY, int(rollout.version))
        if note:  # a version whose training set is gone keeps serving; monitoring says why
            logger.warning(f"v{rollout.version} serves; {note}")

    def _roll_back(
        self, rollout: Rollout, reason: str, *, alert: bool = False, status: Status = "rolled_back"
    ) -> None:
        """Candidate weight to 0 at once (stable untouched), unload it, drop `canary`.

        After a blue-green switch the previous version comes back in one swap instead, and
        `champion` moves back to it.
        """
        if rollout.phase == "switched":
            self._switch_back(rollout)
            if rollout.previous_version is not None:
                self._champion_back(int(rollout.previous_version))
        else:
            self._restore_stable_only(rollout)
        self._end_rolled_back(rollout, reason, alert=alert, status=status)

    def _champion_back(self, version: int) -> None:
        from ct_platform.governance.lifecycle import set_champion

        note = set_champion(self.registry, version, self.spec)
        if note:
            logger.warning(f"v{version} serves again; {note}")

    def _end_rolled_back(
        self, rollout: Rollout, reason: str, *, alert: bool, status: Status = "rolled_back"
    ) -> None:
        # A version approved meanwhile holds `canary` now: its rollout starts next.
        self.registry.drop_alias_of(CANARY, int(rollout.version))
        # Rolled back, it never becomes champion: no longer in the running (approved or not).
        self.registry.drop_challenger(int(rollout.version))
        rollout.weight = 0.0
        self._finish(rollout, status, reason)
        self._record_rollback(rollout, reason)
        if alert:
            self._alert(rollout)

    def _switch_back(self, rollout: Rollout) -> None:
        """After a blue-green switch: the previous version back, in one swap while the server
        still holds it (a restarted one does not: then a deploy, itself a hot swap)."""
        previous = self.admin.slots().get("previous") or {}
        if str(previous.get("version")) == rollout.previous_version:
            self.admin.rollback()
            if rollout.previous_bundle is not None:
                self.target.adopt(Path(rollout.previous_bundle))
        elif rollout.previous_bundle is not None:
            self.target.deploy(Path(rollout.previous_bundle))
        else:
            raise RolloutError(
                f"the server no longer holds version {rollout.previous_version} and its bundle "
                "is not recorded: deploy it (ct rollback) to switch back"
            )

    def _server_gone(self, rollout: Rollout, error: str) -> None:
        """The server does not answer (stopped, restarting): the rollout ends. A restarted
        server serves what its target recorded: the champion, without the candidate."""
        why = f"the server does not answer ({error}): rollout ended"
        if rollout.phase == "switched":  # already the champion, and what a restart serves
            self._finish(rollout, "completed", f"{why}; the rollback window closed early")
            return
        self._end_rolled_back(rollout, f"{why}; {self._what_a_restart_serves()}", alert=True)

    def _what_a_restart_serves(self) -> str:
        """What the target recorded for a restart (not what the rollout assumes it is)."""
        status = self.target.status()
        if status is None:
            return f"the {self.target.name} target records nothing to restart with"
        recorded = status.endpoint
        return (
            f"a restart serves version {recorded.version} alone (the bundle the "
            f"{self.target.name} target recorded: {Path(recorded.bundle).name})"
        )

    def _record_rollback(self, rollout: Rollout, reason: str) -> None:
        """An audit line: the candidate left traffic, the previous champion serves (for a
        rollback before any switch `champion` never moved, so its history is unchanged)."""
        from ct_platform.governance.audit import AuditEvent, append_event

        champion = self.registry.alias_version(CHAMPION)
        append_event(
            AuditEvent(
                kind="rollback",
                model=self.registry.model_name,
                actor=self._actor(rollout),
                reason=f"{rollout.label} rolled back: {reason}",
                dagster_run_id=self.run_id,
                from_version=int(rollout.version),
                to_version=champion.version if champion else None,
            )
        )

    def _actor(self, rollout: Rollout) -> str:
        """ "canary rollout v7-1764489600", and what drove it when known ("... (sensor
        rollout_sensor tick)"); the Dagster run, if any, is the line's `dagster_run_id`."""
        actor = f"{rollout.strategy} rollout {rollout.id}"
        return actor + (f" ({self.driver})" if self.driver else "")

    def _record_deployment(self, rollout: Rollout, version: int, what: str) -> None:
        from ct_platform.governance.lifecycle import record_deployment

        record_deployment(
            self.registry.model_name,
            version,
            f"{self.target.name} {self.admin.url}",
            actor=self._actor(rollout),
            reason=what,
            dagster_run_id=self.run_id,
            # Not the last deployment line's version: that may be a candidate rolled back.
            from_version=int(rollout.previous_version) if rollout.previous_version else None,
        )

    def _restore_stable_only(self, rollout: Rollout) -> None:
        slots = self.admin.slots()
        candidate = slots.get("candidate") or {}
        if str(candidate.get("version")) == rollout.version:
            self.admin.route(0.0)
            self.admin.unload_candidate()

    def _finish(self, rollout: Rollout, status: Status, reason: str) -> None:
        rollout.status, rollout.reason = status, reason
        rollout.finished_at = self.clock()
        self._note(rollout, status, reason)

    def _route(self, rollout: Rollout, weight: float, *, shadow: bool = False) -> None:
        self.admin.route(weight, shadow=shadow)
        rollout.weight = weight

    def _lost_version(self, rollout: Rollout, routing: dict[str, Any]) -> str:
        """Why the server no longer holds the rollout's version where expected ('' if it does)."""
        slot = "stable" if rollout.phase == "switched" else "candidate"
        served = (routing.get(slot) or {}).get("version")
        if str(served) == rollout.version:
            return ""
        stable = (routing.get("stable") or {}).get("version")
        if served is None and not routing.get("previous"):
            what = f"the server answers with version {stable} only (restarted?)"
        elif served is None:
            what = f"the server's {slot} slot is empty (stable: version {stable}; unloaded?)"
        else:
            what = f"the server's {slot} slot holds version {served}, not {rollout.version}"
            what += " (replaced?)"
        return f"{what}{self._changed_since(rollout)}: rollout ended"

    def _changed_since(self, rollout: Rollout) -> str:
        """Who changed the server under the rollout, as the audit log records it (its latest
        deployment or rollback line since the rollout began, not the rollout's own); "" if
        none records it (a restart by hand, a call to the admin API)."""
        from ct_platform.governance.audit import AuditLogError, read_events

        began = datetime.fromtimestamp(rollout.started_at, UTC).isoformat(timespec="seconds")
        own = f"{rollout.strategy} rollout {rollout.id}"
        try:
            events = read_events()
        except AuditLogError as error:  # the rollout still ends; the reason says why not
            return f"; the audit log cannot say who changed it ({error})"
        for event in reversed(events):
            if event.at < began:
                break
            if (
                event.model == self.registry.model_name
                and event.kind in ("deployment", "rollback")
                and not event.actor.startswith(own)
            ):
                return (
                    f"; the audit log records a {event.kind} of version {event.to_version} "
                    f"by {event.actor} at {event.at} since the rollout began: {event.reason}"
                )
        return ""

    def _note(
        self,
        rollout: Rollout,
        verdict: str,
        reason: str,
        figures: dict[str, float] | None = None,
        period: dict[str, Any] | None = None,
    ) -> None:
        entry = {
            "at": self.clock(),
            "step": rollout.step,
            "weight": rollout.weight,
            "verdict": verdict,
            "reason": reason,
            "figures": dict(figures or {}),
        }
        rollout.history.append(entry | ({"period": period} if period else {}))

    def _alert(self, rollout: Rollout) -> None:
        from ct_platform.monitoring.governor import send_alert

        alert = {
            "ts": self.clock(),
            "event": "rollout_rolled_back",
            "rollout": rollout.id,
            "version": rollout.version,
            "strategy": rollout.strategy,
            "step": rollout.step,
            "detail": rollout.reason,
            "message": f"rollout of version {rollout.version} rolled back: {rollout.reason}",
        }
        webhook = self.environ.get(self.spec.monitoring.governor.alert_webhook_env or "")
        send_alert(alert, self.spec.paths.home / "alerts.jsonl", webhook)
