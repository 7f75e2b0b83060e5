"""The audit log: one JSON line per promotion, approval, rejection, deployment and rollback.

MLflow aliases keep no history (moving `champion` forgets where it was); this log does. It
lives at `<CT_HOME>/audit/audit.jsonl` and is append-only: a line is never rewritten. Each
event is written as one `write` of one whole line under an exclusive `flock`, to a file
opened with O_APPEND, then fsynced, so concurrent writers (Dagster steps, the CLI) never
interleave and a reader never sees half a line. Standard library only.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from ct_platform.settings import Paths

AUDIT_FILE = "audit.jsonl"
EventKind = Literal[
    "promotion",
    "approval_requested",
    "approval",
    "rejection",
    # A version a blocking gate rejected (its holdout fit, or its whole-window refit).
    "gate_rejection",
    "deployment",
    "rollback",
]
EVENT_KINDS: tuple[str, ...] = EventKind.__args__
# Who acts when no person does: the Dagster run id says which run.
AUTOMATION = "automation"
# A person's action outside any Dagster run (`ct promote`-style commands that do not name
# the person). A Dagster run is named by what started it, never "by hand".
BY_HAND = "by hand"
# The run tags Dagster 1.13 sets on what it launches itself (`dagster._core.storage.tags`):
# the automation condition sensor sets `from_automation_condition` and `auto_materialize`
# beside `sensor_name`; any other sensor `sensor_name`; a schedule `schedule_name`; a backfill
# `backfill`; the UI (Launchpad, "Materialize") `from_ui` (its `UI_EXECUTION_TAGS`). A
# person's name: `dagster/user` (Dagster+, or set with `--tags`), or `user`.
AUTOMATION_RUN_TAGS = ("dagster/from_automation_condition", "dagster/auto_materialize")
SENSOR_TAG = "dagster/sensor_name"
# Which evaluation of the automation conditions requested the run (the UI's Automation tab),
# and which sensor tick launched it.
EVALUATION_TAG = "dagster/asset_evaluation_id"
TICK_TAG = "dagster/tick"
SCHEDULE_TAG = "dagster/schedule_name"
BACKFILL_TAG = "dagster/backfill"
FROM_UI_TAG = "dagster/from_ui"
USER_TAGS = ("dagster/user", "user")
# The job Dagster builds for a bare asset selection (`dagster asset materialize`).
IMPLICIT_ASSET_JOB = "__ASSET_JOB"


class DagsterRunLike(Protocol):
    """What `run_actor` reads of a `dagster.DagsterRun` (governance never imports dagster)."""

    @property
    def tags(self) -> Mapping[str, str]: ...
    @property
    def job_name(self) -> str: ...
    @property
    def remote_job_origin(self) -> object | None: ...
    @property
    def asset_selection(self) -> AbstractSet[AssetKeyLike] | None: ...


class AssetKeyLike(Protocol):
    """What `run_actor` reads of a `dagster.AssetKey`."""

    @property
    def path(self) -> Sequence[str]: ...


class AuditLogError(ValueError):
    """A line of the audit log is not an event (the message names the line)."""


@dataclass(frozen=True)
class AuditEvent:
    """One governed action. Versions are model registry versions (None: there was none)."""

    kind: EventKind
    model: str
    actor: str
    reason: str
    from_version: int | None = None
    to_version: int | None = None
    dagster_run_id: str | None = None
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"audit event kind {self.kind!r} is not one of {EVENT_KINDS}")

    def to_line(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode()


def audit_path(paths: Paths | None = None) -> Path:
    return (paths or Paths.from_env()).home / "audit" / AUDIT_FILE


def current_user() -> str:
    """The person at the keyboard: $USER, else the account name."""
    return os.environ.get("USER") or getpass.getuser()


def run_actor(run: DagsterRunLike) -> str:
    """Who or what started a Dagster run, from its tags and how it was launched.

    `automation condition of <assets> (evaluation <id>, <sensor>)` (what an automation
    condition requested: the assets, the evaluation that decided it, the automation sensor),
    `sensor:<name>` (`sensor:<name> tick <id>` when the run names its tick),
    `schedule:<name>`, `backfill <id>`; a run from the Dagster UI `Dagster UI`; a run
    executed in the process that created it (no remote origin: `dagster job execute`,
    `dagster asset materialize`, or the Python API they call, `execute_job` /
    `materialize`) `<OS user> via dagster job execute` (`via dagster asset materialize` for
    a bare asset selection), the OS user being whoever runs that process; any other launch
    through the instance (`dagster job launch`, the GraphQL API) `dagster job launch`. A
    person named by the run (`dagster/user`, `user`) is put first: `dana via Dagster UI`.
    """
    tags = run.tags
    if any(tags.get(tag) == "true" for tag in AUTOMATION_RUN_TAGS):
        return _automation_actor(run)
    if tags.get(SENSOR_TAG):
        tick = f" tick {tags[TICK_TAG]}" if tags.get(TICK_TAG) else ""
        return f"sensor:{tags[SENSOR_TAG]}{tick}"
    if tags.get(SCHEDULE_TAG):
        return f"schedule:{tags[SCHEDULE_TAG]}"
    user = next((tags[tag] for tag in USER_TAGS if tags.get(tag)), None)
    if tags.get(BACKFILL_TAG):
        launcher = f"backfill {tags[BACKFILL_TAG]}"
    elif tags.get(FROM_UI_TAG) == "true":
        launcher = "Dagster UI"
    elif run.remote_job_origin is None:
        user = user or current_user()
        command = "asset materialize" if run.job_name == IMPLICIT_ASSET_JOB else "job execute"
        launcher = f"dagster {command}"
    else:
        launcher = "dagster job launch"
    return f"{user} via {launcher}" if user else launcher


def _automation_actor(run: DagsterRunLike) -> str:
    """`automation condition of deployed_endpoint (evaluation 12, <automation sensor>)`."""
    tags = run.tags
    keys = sorted("/".join(key.path) for key in run.asset_selection or ())
    what = ", ".join(keys) if keys else f"job {run.job_name}"
    if tags.get(EVALUATION_TAG):
        decided = [f"evaluation {tags[EVALUATION_TAG]}"]
    else:
        decided = [f"tick {tags[TICK_TAG]}"] if tags.get(TICK_TAG) else []
    if tags.get(SENSOR_TAG):
        decided.append(tags[SENSOR_TAG])
    return f"{AUTOMATION} condition of {what}" + (f" ({', '.join(decided)})" if decided else "")


def append_event(event: AuditEvent, path: Path | None = None) -> AuditEvent:
    """Append `event` as one line, atomically with respect to every other writer."""
    path = path or audit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = event.to_line()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor closes
        written = os.write(fd, line)
        if written != len(line):  # a full disk: say so rather than leave a torn line
            raise OSError(f"audit log {path}: wrote {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)
    return event


def read_events(path: Path | None = None) -> list[AuditEvent]:
    """Every event, oldest first; [] when nothing was recorded yet."""
    path = path or audit_path()
    try:
        with path.open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return []
    return [_parse(number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def _parse(number: int, line: bytes) -> AuditEvent:
    try:
        return AuditEvent(**json.loads(line))
    except (ValueError, TypeError) as error:
        raise AuditLogError(f"audit log line {number} is not an audit event: {error}") from None


@dataclass(frozen=True)
class ChampionHistory:
    """The champions of one model as the log tells them.

    `served`: in the order they served, rolled-back ones removed (the way `ct rollback`
    goes back); `left`: each version a rollback took off that list, with its rollback line.
    """

    served: list[int]
    left: list[tuple[int, AuditEvent]]


def replay_champions(events: list[AuditEvent], model: str) -> ChampionHistory:
    """A promotion pushes its version; a rollback from B to A drops B (and anything pushed
    after A) so the next rollback goes further back, never forward again."""
    stack: list[int] = []
    left: list[tuple[int, AuditEvent]] = []
    for event in events:
        if event.model != model or event.to_version is None:
            continue
        if event.kind == "promotion":
            stack.append(event.to_version)
        elif event.kind == "rollback":
            while stack and stack[-1] != event.to_version:
                left.append((stack.pop(), event))
            if not stack:
                stack.append(event.to_version)
    return ChampionHistory(stack, left)


def champion_history(events: list[AuditEvent], model: str) -> list[int]:
    """The champions of `model` in the order they served, rolled-back ones removed."""
    return replay_champions(events, model).served
