"""`ct status [--json]`: where every landed batch stands, and why.

One line per batch: every file in the landing folder, every partition of the Dagster
instance (`$DAGSTER_HOME`) and every quarantined file. A batch is

- `trained`: it is in the training window of the listed model versions (MLflow `ct.batches`
  tag), each with its verdict (champion, passed its gates, waiting for approval, rejected by
  a gate or by a person, no verdict yet); a version that was rolled out progressively says
  how its latest rollout went instead (running at 40 %, rolled back at 20 % and why,
  aborted by whom and why, completed);
- `validated`: it passed its contract but no version trained on it, with the reason (a
  training run is queued or running, a training run Dagster shows as STARTED was killed
  (its process is gone: `defs.run_workers`), the training sensor has not ticked yet, no sensor
  daemon is running (no heartbeat in 5 min: the command to train instead), training failed
  without a verdict), or, when a training run covered it, why it is in no trained window
  (every row was landed before, newer content under its name supersedes it, or newer
  batches filled the window); a batch repeating rows of earlier batches (over
  `duplicate_rate_max`) says how many and which;
- `quarantined`: it failed its contract or could not be read, with the recorded reason;
- `not ingested`: a partition with no outcome yet (its ingest run is queued, running,
  killed or failed, or no run was made);
- `not a batch yet`: a file in the landing folder with no partition (still being written,
  identical to a batch already ingested, an unsupported name, or not yet seen by a sensor).

Below the table, one line per version waiting for a person's decision (`governance.approval:
required`): "waiting for approval of version N (ct approve N --reason ...)".

The spec, CT_HOME and instance are resolved as every `ct` command does (`cli.where`):
`DAGSTER_HOME` defaults to `$CT_HOME/dagster`; with nothing landed, the line names the
landing folder, the spec and CT_HOME it read.

Exit status: 0 when the status was read, 2 when it could not be (bad spec, no instance).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import dagster as dg

    from ct_platform.data.ingest import ValidBatch
    from ct_platform.defs.training_sensor import TrainingBacklog
    from ct_platform.deployment.controller import Rollout
    from ct_platform.registry.versions import ModelVersionInfo
    from ct_platform.settings import Paths, Spec


@dataclass(frozen=True)
class BatchState:
    batch: str
    state: str  # trained, validated, quarantined, not ingested, not a batch yet
    detail: str
    versions: list[int]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help='print [{"batch", "state", "detail", "versions"}] instead of a table',
    )


def run(args: argparse.Namespace) -> int:
    import dagster as dg

    from ct_platform.cli.where import check_same_platform, dagster_home, load_platform
    from ct_platform.defs.resources import MlflowResource

    try:
        platform = load_platform()  # an invalid spec is refused before anything else
        dagster_home(platform)
        spec = platform.spec
        versions = (
            MlflowResource(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"))
            .registry(spec)
            .versions()
        )
        with dg.DagsterInstance.get() as instance:
            check_same_platform(platform, instance)
            states = batch_states(spec, platform.paths, instance, versions)
    except (OSError, ValueError) as exc:
        print(f"ct status: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([asdict(state) for state in states], indent=2))
    elif not states:
        print(f"nothing has landed yet in {spec.landing_dir} ({platform.where()})")
    else:
        print("\n".join([render(states), *approval_waits(versions)]))
    return 0


def render(states: list[BatchState]) -> str:
    width = max(len(state.batch) for state in states)
    kind = max(len(state.state) for state in states)
    return "\n".join(f"{s.batch:<{width}}  {s.state:<{kind}}  {s.detail}" for s in states)


def approval_waits(versions: list[ModelVersionInfo]) -> list[str]:
    """One line per version waiting for a person's decision, oldest first."""
    from ct_platform.governance.approval import APPROVAL_TAG, PENDING

    return [
        f"waiting for approval of version {info.version} (ct approve {info.version} "
        "--reason ..., or ct reject)"
        for info in versions
        if info.tags.get(APPROVAL_TAG) == PENDING
    ]


def batch_states(
    spec: Spec, paths: Paths, instance: dg.DagsterInstance, versions: list[ModelVersionInfo]
) -> list[BatchState]:
    """The state of every batch the landing folder, the instance or the quarantine knows."""
    from ct_platform.data.ingest import find_valid_batch
    from ct_platform.defs.training_sensor import training_backlog
    from ct_platform.deployment.controller import RolloutStore

    partitions = instance.get_dynamic_partitions("batches")
    quarantined = quarantine_reasons(paths.quarantine)
    backlog = training_backlog(instance)
    heartbeat = instance.get_daemon_heartbeats().get("SENSOR")
    sensor_beat = heartbeat.timestamp if heartbeat is not None else None
    trained_by = trained_versions(versions)
    rollouts = RolloutStore(spec.paths.rollouts).latest_by_version()
    departures = former_champions(spec.model.name)
    states = []
    for key in [*partitions, *sorted(set(quarantined) - set(partitions))]:
        valid = find_valid_batch(paths, key)
        if key in trained_by:
            state = trained_state(key, trained_by[key], rollouts, departures)
            states.append(with_redelivery(state, valid, spec.dataset.duplicate_rate_max))
        elif valid is not None and key not in {batch.key for batch in backlog.waiting}:
            states.append(BatchState(key, "validated", outside_window(valid, partitions, spec), []))
        elif valid is not None:
            state = waiting_state(key, backlog, spec, sensor_beat)
            states.append(with_redelivery(state, valid, spec.dataset.duplicate_rate_max))
        elif key in quarantined:
            states.append(BatchState(key, "quarantined", quarantined[key], []))
        else:
            detail = ingest_detail(instance, key, sensor_beat)
            states.append(BatchState(key, "not ingested", detail, []))
    return states + landing_states(spec, set(partitions) | set(quarantined))


def trained_versions(versions: list[ModelVersionInfo]) -> dict[str, list[ModelVersionInfo]]:
    by_batch: dict[str, list[ModelVersionInfo]] = {}
    for info in versions:
        for key in filter(None, info.tags.get("ct.batches", "").split(",")):
            by_batch.setdefault(key, []).append(info)
    return by_batch


def verdict(
    info: ModelVersionInfo,
    rollouts: Mapping[str, Rollout] | None = None,
    departures: Mapping[int, str] | None = None,
) -> str:
    """Where a version stands; `rollouts`: each version's latest rollout, by version;
    `departures`: why each former champion no longer is (`former_champions`)."""
    from ct_platform.governance.approval import (
        APPROVAL_TAG,
        APPROVED,
        APPROVED_BY_TAG,
        PENDING,
        REJECTED,
    )
    from ct_platform.registry.versions import CANARY, CHAMPION

    if CHAMPION in info.aliases:
        return "champion"
    departure = (departures or {}).get(info.version)
    rollout = (rollouts or {}).get(str(info.version))
    if rollout is not None:
        return rollout_verdict(rollout, departure)
    approval = info.tags.get(APPROVAL_TAG)
    if CANARY in info.aliases:  # promoted under a progressive strategy, no rollout yet
        if approval == APPROVED:
            return f"approved by {info.tags.get(APPROVED_BY_TAG, '?')}, awaiting rollout (canary)"
        return "canary, awaiting rollout"
    if approval == PENDING:
        return f"waiting for approval: ct approve {info.version}"
    if approval == REJECTED:
        return f"rejected by {info.tags.get(APPROVED_BY_TAG, '?')}"
    passed = info.tags.get("ct.gates_passed")
    if passed is None:
        return "no verdict yet"
    if passed == "true" and departure is not None:
        return f"champion until {departure}"
    return "passed its gates" if passed == "true" else "rejected"


def former_champions(model: str) -> dict[int, str]:
    """Why each version that was champion no longer is, from the audit log's latest move of
    `champion` away from it: "replaced by version 6 at <time>", "rolled back to version 4
    by carol at <time>: <reason>"."""
    from ct_platform.governance.audit import read_events
    from ct_platform.governance.history import champions_before, rolls_back_champion

    departures: dict[int, str] = {}
    events = read_events()
    for event, champion in zip(events, champions_before(events), strict=True):
        moved = event.from_version is not None and event.from_version != event.to_version
        if event.model != model or not moved:
            continue
        if event.kind == "promotion":
            departures[event.from_version] = f"replaced by version {event.to_version} at {event.at}"
        elif rolls_back_champion(event, champion):  # not a rollout's candidate taken off
            departures[event.from_version] = (
                f"rolled back to version {event.to_version} by {event.actor} at {event.at}: "
                f"{event.reason}"
            )
    return departures


def rollout_verdict(rollout: Rollout, departure: str | None = None) -> str:
    """How the version's delivery went: "canary running at 40 %", "canary rolled back at
    20 %: <reason>", "canary aborted by ana via ct rollout: <reason>", "canary completed;
    champion until replaced by version 7 at <time>", ..."""
    share = f"{100 * rollout.weight:g} %"
    if rollout.active:
        return f"{rollout.label} {rollout.status} at {share}"
    if rollout.status == "completed":
        return f"{rollout.label} completed; champion until {departure or 'an unrecorded move'}"
    last_share = next(
        (f"{100 * e['weight']:g} %" for e in reversed(rollout.history) if e["weight"] > 0),
        share,
    )
    if rollout.ended_by:
        return f"{rollout.label} aborted by {rollout.ended_by} at {last_share}: {rollout.reason}"
    ended = "stopped" if rollout.status == "stopped" else "rolled back"
    return f"{rollout.label} {ended} at {last_share}: {rollout.reason}"


def trained_state(
    key: str,
    infos: list[ModelVersionInfo],
    rollouts: Mapping[str, Rollout] | None = None,
    departures: Mapping[int, str] | None = None,
) -> BatchState:
    verdicts = (f"v{i.version} ({verdict(i, rollouts, departures)})" for i in infos)
    detail = "trained into " + ", ".join(verdicts)
    return BatchState(key, "trained", detail, [info.version for info in infos])


def with_redelivery(state: BatchState, valid: ValidBatch | None, limit: float) -> BatchState:
    """`state` with a note when its batch repeats more than `limit` (a share, the spec's
    `duplicate_rate_max`) of rows of earlier batches, as its `redelivered_rows` check warns."""
    redelivered = valid.redelivered if valid is not None else None
    if redelivered is None or redelivered.share <= limit:
        return state
    sources = ", ".join(redelivered.earlier)
    note = (
        f"; {redelivered.rows:,} of its {valid.rows:,} rows ({redelivered.share:.1%}) were "
        f"already landed in {sources} (counted once in training windows)"
    )
    return BatchState(state.batch, state.state, state.detail + note, state.versions)


def outside_window(valid: ValidBatch, partitions: Sequence[str], spec: Spec) -> str:
    """Why a batch a training run covered is in no trained window, from its data: every row
    landed before, superseded by newer content under its name, or outside the newest window
    (`training.window`'s rules, in that order). `partitions`: every batch key, landing order."""
    from ct_platform.data.landing import landed_name

    redelivered = valid.redelivered
    if valid.wholly_redelivered and redelivered is not None:
        return (
            f"in no trained window: every one of its {valid.rows:,} rows was landed before "
            f"(in {', '.join(redelivered.earlier)}), and a batch whose every row was landed "
            "before takes no place in the window"
        )
    later = partitions[partitions.index(valid.key) + 1 :] if valid.key in partitions else []
    newer = [key for key in later if landed_name(key) == landed_name(valid.key)]
    if newer:
        return (
            f"in no trained window: {landed_name(valid.key)} was landed again with other "
            f"content ({newer[-1]}), and only a name's newest content trains"
        )
    return (
        "a training run covered it, but it is in no trained window: newer batches filled "
        f"the window (the newest {spec.evaluation.window_batches} valid batches), or that "
        "run trained nothing new"
    )


def waiting_state(
    key: str, backlog: TrainingBacklog, spec: Spec, sensor_heartbeat: float | None = None
) -> BatchState:
    """A validated batch waiting for a training run, and why; `sensor_heartbeat`: the
    instance's sensor daemon's last heartbeat (seconds since the epoch), None when it never
    beat."""
    from ct_platform.defs.training_sensor import MAX_TRAINING_REQUESTS

    if backlog.in_flight:
        runs = ", ".join(f"{r.run_id[:8]} ({r.status.value})" for r in backlog.in_flight)
        detail = f"waiting: training run {runs} in progress; it or the next one takes it"
    elif backlog.dead:
        detail = f"waiting: {killed(backlog.dead, sensor_heartbeat, TRAIN_NOW)}"
    elif len(backlog.failed_attempts) >= MAX_TRAINING_REQUESTS:
        runs = ", ".join(r.run_id[:8] for r in backlog.failed_attempts)
        detail = f"waiting: training failed without a verdict (runs {runs}); a new batch retries"
    elif sensor_daemon_alive(sensor_heartbeat):
        detail = "waiting: the training sensor requests a run at its next tick"
    else:
        detail = f"waiting: {no_daemon(sensor_heartbeat)}"
    return BatchState(key, "validated", detail, [])


# Dagster's daemon beats every 30 s; a busy box may lag a few beats before it is gone.
SENSOR_HEARTBEAT_TOLERANCE_SECONDS = 300.0
TRAIN_NOW = "dagster job execute -m ct_platform.definitions -j training_job"
INGEST_NOW = "dagster job execute -m ct_platform.definitions -j batch_job --tags '{tags}'"


def sensor_daemon_alive(last_heartbeat: float | None) -> bool:
    """Whether the instance's sensor daemon beat within the tolerance (seconds since epoch)."""
    return (
        last_heartbeat is not None
        and time.time() - last_heartbeat <= SENSOR_HEARTBEAT_TOLERANCE_SECONDS
    )


def no_daemon(last_heartbeat: float | None, command: str = TRAIN_NOW) -> str:
    """Why no sensor tick is coming, and what to run instead (`command`)."""
    seen = (
        "no sensor daemon has ever run on this instance"
        if last_heartbeat is None
        else f"no sensor daemon is running (its last heartbeat was "
        f"{(time.time() - last_heartbeat) / 60:.0f} min ago)"
    )
    return f"{seen}: run `{command}`, or start the daemon (`dagster-daemon run`, `make demo`)"


def killed(
    dead: list[tuple[dg.DagsterRun, str]], sensor_heartbeat: float | None, resume: str
) -> str:
    """Runs Dagster shows as STARTED whose processes are gone: "training run 900fbbdf killed
    (STARTED, but its process 4242 is gone); ...", then who marks them failed, or what to run."""
    runs = "; ".join(
        f"{run.job_name} run {run.run_id[:8]} killed ({run.status.value}, but {reason})"
        for run, reason in dead
    )
    if sensor_daemon_alive(sensor_heartbeat):
        return f"{runs}; the sensors mark it failed at their next tick and Dagster retries it"
    return f"{runs}; no daemon to mark it failed: {no_daemon(sensor_heartbeat, resume)}"


def ingest_detail(instance: dg.DagsterInstance, key: str, sensor_heartbeat: float | None) -> str:
    import dagster as dg

    from ct_platform.defs.run_workers import dead_run_reason

    runs = instance.get_runs(
        dg.RunsFilter(job_name="batch_job", tags={"dagster/partition": key}), limit=1
    )
    if not runs:
        return "partition added, but no ingest run was made for it"
    run = runs[0]
    reason = dead_run_reason(instance, run)
    if reason is not None:
        return killed(
            [(run, reason)],
            sensor_heartbeat,
            INGEST_NOW.format(tags=json.dumps({"dagster/partition": key})),
        )
    return f"ingest run {run.run_id[:8]} is {run.status.value}"


def quarantine_reasons(quarantine_dir: Path) -> dict[str, str]:
    """Quarantined file name -> the recorded reason (the latest record when re-delivered)."""
    from ct_platform.data.quarantine import RECORD_SUFFIX

    reasons: dict[str, tuple[str, str]] = {}
    for record_path in quarantine_dir.glob(f"*{RECORD_SUFFIX}"):
        record = json.loads(record_path.read_text())
        at, reason = record.get("quarantined_at", ""), f"{record['kind']}: {record['reason']}"
        if record["file"] not in reasons or at >= reasons[record["file"]][0]:
            reasons[record["file"]] = (at, reason)
    return {name: reason for name, (_, reason) in reasons.items()}


def landing_states(spec: Spec, known: set[str]) -> list[BatchState]:
    """Files of the landing folder that are no batch yet, and why."""
    from ct_platform.data.landing import LandingCursor, scan_landing

    scan = scan_landing(spec.landing_dir, LandingCursor())
    states = [
        BatchState(path.name, "not a batch yet", f"ignored: {reason}", [])
        for path, reason in scan.ignored
    ]
    states += [
        BatchState(path.name, "not a batch yet", reason, [])
        for path, reason in scan.pending
        if path.name not in known
    ]
    first_with_hash = {landed.content_hash: landed.partition_key for landed in scan.new}
    for landed in scan.duplicates:
        if landed.partition_key not in known:
            original = first_with_hash.get(landed.content_hash, "an earlier batch")
            detail = f"identical content to {original}: not ingested again"
            states.append(BatchState(landed.partition_key, "not a batch yet", detail, []))
    states += [
        BatchState(
            landed.partition_key, "not a batch yet", "not seen by the landing sensor yet", []
        )
        for landed in scan.new
        if landed.partition_key not in known
    ]
    return states
