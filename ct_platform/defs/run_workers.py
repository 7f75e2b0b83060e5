"""Is a run that Dagster shows as STARTED still running? Its recorded processes say.

Dagster marks a run failed when its process exits, but a process killed with SIGKILL says
nothing: the run stays STARTED. Run monitoring (the daemon, `dagster.yaml`) catches that only
where the run launcher can probe its workers; the default launcher cannot, so such a run would
stay STARTED until `max_runtime_seconds` (2 h), and with no daemon for ever. Everything that
waits on a "run in progress" (the training sensor, the endpoint watchdog, `ct status`) asks
here first.

Dagster records the pid of every process that executes a run in the run's engine events
(`EngineEventData` metadata `pid`: the run worker, "Started process for run (pid: N)", the
executor's parent process, each step subprocess). A run is dead when every one of those
processes is gone from this machine, or its pid now belongs to a process started after the
event (a reused pid). Pids name processes only within one kernel boot and one pid namespace,
so each step process tags its run with its own (`record_process_namespace`, from the IO
manager's set-up) and only runs tagged with this process's are judged. Runs executed elsewhere
(a container of the Docker run launcher, a Kubernetes Job, `dagster job execute` on a CI
machine sharing the instance's database) or killed before their first step are never judged
here: their launcher's run monitoring does, or they stay as Dagster shows them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import dagster as dg

from ct_platform.processes import process_exists, started_at

# The kernel boot and pid namespace whose pids a run's engine events name.
NAMESPACE_TAG = "ct/pid_namespace"
# Run statuses in which a process is supposed to be executing the run.
EXECUTING = frozenset({dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING})
# A pid's process must have started by its event, give or take clock granularity (seconds).
START_TOLERANCE_SECONDS = 2.0


def dead_run_reason(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Why `run` (STARTED or CANCELING) cannot be running any more, e.g. "its process 4242 is
    gone"; None while one of its processes lives, or when this machine cannot tell (another
    status, no pid recorded yet, pids of another machine or container)."""
    here = process_namespace()
    if run.status not in EXECUTING or here is None or run.tags.get(NAMESPACE_TAG) != here:
        return None
    pids = run_pids(instance, run.run_id)
    if not pids or any(_alive_since(pid, at) for pid, at in pids.items()):
        return None
    named = ", ".join(str(pid) for pid in sorted(pids))
    return f"its process {named} is gone" if len(pids) == 1 else f"its processes {named} are gone"


def process_namespace() -> str | None:
    """This process's kernel boot id and pid namespace ("<boot id>/pid:[4026531836]"): two
    processes see the same pids only when these match. None where /proc cannot say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}"


def record_process_namespace(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Tag `run` with the pid namespace of this process, which executes its steps (once)."""
    here = process_namespace()
    if here is not None and run.tags.get(NAMESPACE_TAG) != here:
        instance.add_run_tags(run.run_id, {NAMESPACE_TAG: here})


def run_pids(instance: dg.DagsterInstance, run_id: str) -> dict[int, float]:
    """Pid -> when it was first named (seconds since the epoch), from the run's engine events."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=1000
    ).records
    pids: dict[int, float] = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None and str(pid.value).isdigit():
            pids.setdefault(int(str(pid.value)), record.event_log_entry.timestamp)
    return pids


def fail_dead_runs(instance: dg.DagsterInstance, runs: Iterable[dg.DagsterRun]) -> list[str]:
    """Mark failed (as run monitoring would) every run of `runs` whose processes are gone, so
    it stops holding its queue slot and the run-retry daemon may retry it. Returns one line
    per run marked: "<run id> (training_job): its process 4242 is gone"."""
    marked = []
    for run in runs:
        reason = dead_run_reason(instance, run)
        if reason is None:
            continue
        instance.report_run_failed(
            run, f"Run killed: {reason} (SIGKILL or a crash left it {run.status.value})."
        )
        marked.append(f"{run.run_id} ({run.job_name}): {reason}")
    return marked


def _alive_since(pid: int, named_at: float) -> bool:
    """Whether process `pid` exists here and started no later than `named_at`."""
    if not process_exists(pid):
        return False
    started = started_at(pid)
    return started is None or started <= named_at + START_TOLERANCE_SECONDS
