"""`ct status`: every landed batch with its state and reason, read from a real instance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import dagster as dg
import pandas as pd
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._daemon.types import DaemonHeartbeat

from ct_platform.cli import main
from ct_platform_tests.defs.conftest import BATCH_ROWS
from ct_platform_tests.defs.test_coalesced_training import Loop
from ct_platform_tests.defs.test_training_pipeline import check_results

pytestmark = pytest.mark.slow


def status(capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    assert main(["status", "--json"]) == 0
    return {row["batch"]: row for row in json.loads(capsys.readouterr().out)}


def test_status_names_every_batch_state(spec, instance, land_bank_batches, write_batch, capsys):
    loop = Loop(spec, instance)
    land_bank_batches(2)
    write_batch(pd.DataFrame({"age": [30, 40], "job": ["x", "y"]}), "batch-bad.csv")
    loop.ingest_landed()
    assert loop.train(loop.tick("training_sensor").run_requests[0]).success
    land_bank_batches(1, first=2)
    loop.ingest_landed()  # validated after the training run: waiting for the next one
    in_progress = loop.launched_training_run()
    land_bank_batches(1, first=3)  # landed, but no landing tick yet
    (spec.landing_dir / "notes.txt").write_text("not data")
    still_writing = spec.landing_dir / "batch-00099.csv"
    still_writing.write_text("age;job\n30;admin.")  # no final newline, just modified
    duplicate = spec.landing_dir / "batch-copy.csv"
    duplicate.write_bytes((spec.landing_dir / "batch-00001.csv").read_bytes())
    settled = time.time() - 30  # complete, and newer than the ingested files (a minute old)
    for path in (duplicate, spec.landing_dir / "batch-00004.csv"):
        os.utime(path, (settled, settled))

    rows = status(capsys)

    assert rows["batch-00001.csv"]["state"] == "trained"
    # v1 was judged on the holdout, v2 (its whole-window refit) serves.
    assert rows["batch-00001.csv"]["detail"] == "trained into v1 (passed its gates), v2 (champion)"
    assert rows["batch-00002.csv"]["versions"] == [1, 2]
    bad = rows["batch-bad.csv"]
    assert bad["state"] == "quarantined" and "absent from the file header" in bad["detail"]
    waiting = rows["batch-00003.csv"]
    assert waiting["state"] == "validated"
    assert waiting["detail"] == (
        f"waiting: training run {in_progress.run_id[:8]} (NOT_STARTED) in progress; "
        "it or the next one takes it"
    )
    assert rows["notes.txt"]["state"] == "not a batch yet"
    assert rows["notes.txt"]["detail"].startswith("ignored: unsupported file type")
    assert rows["batch-00099.csv"]["detail"].startswith("still being written")
    assert rows["batch-00004.csv"]["detail"] == "not seen by the landing sensor yet"
    assert rows["batch-copy.csv"]["detail"] == (
        "identical content to batch-00001.csv: not ingested again"
    )
    assert len(rows) == 8


def test_a_recut_file_is_flagged_and_no_sensor_tick_is_promised_without_a_daemon(
    spec, instance, bank_frame, land_bank_batches, write_batch, capsys
):
    """A newcomer's CI box: `ct status` said `the training sensor requests a run at its next
    tick` with no daemon running. And a re-cut file repeating rows of batch 2 went unflagged."""
    loop = Loop(spec, instance)
    land_bank_batches(2)
    originals = loop.ingest_landed()
    write_batch(bank_frame.iloc[6000:8000], "late-delivery.csv")
    [late] = loop.ingest_landed()

    assert all(check_results(run)["redelivered_rows"].passed for run in originals)
    check = check_results(late)["redelivered_rows"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["rows"].value == 2000 and check.metadata["share"].value == 1.0
    # Each repeated row is named once, in the earliest batch holding it: 47 of these rows
    # are natural twins of rows of batch 1.
    assert check.metadata["earlier/batch-00001.csv"].value == 47
    assert check.metadata["earlier/batch-00002.csv"].value == 1953
    assert check.description == (
        "late-delivery.csv: 2,000 rows (100.0%) were already landed in earlier batches: "
        "batch-00001.csv (47 rows), batch-00002.csv (1,953 rows); training windows count "
        "them once (over 5%)"
    )

    rows = status(capsys)

    assert rows["batch-00001.csv"]["detail"] == (
        "waiting: no sensor daemon has ever run on this instance: run `dagster job execute "
        "-m ct_platform.definitions -j training_job`, or start the daemon "
        "(`dagster-daemon run`, `make demo`)"
    )
    assert rows["late-delivery.csv"]["detail"].endswith(
        "; 2,000 of its 2,000 rows (100.0%) were already landed in batch-00001.csv, "
        "batch-00002.csv (counted once in training windows)"
    )

    instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), "SENSOR", None, None))
    rows = status(capsys)

    assert rows["batch-00001.csv"]["detail"] == (
        "waiting: the training sensor requests a run at its next tick"
    )


# What Dagster's run worker does first (`dagster api execute_run`): record its pid in an engine
# event; then its step's IO manager tags the run with its pid namespace (`JsonIOManager`);
# then it works (here: sleeps) until it is killed.
RUN_WORKER = """
import os, sys, time
import dagster as dg
from dagster._core.events import EngineEventData
from ct_platform.defs.run_workers import record_process_namespace
instance = dg.DagsterInstance.get()
run = instance.get_run_by_id(sys.argv[1])
pid = os.getpid()
message = f"Started process for run (pid: {pid})."
instance.report_engine_event(message, run, EngineEventData.in_process(pid))
record_process_namespace(instance, run)
print("started", flush=True)
time.sleep(600)
"""


def started_run_worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> subprocess.Popen:
    """A real process executing `run` (STARTED), as Dagster records one."""
    worker = subprocess.Popen(
        [sys.executable, "-c", RUN_WORKER, run.run_id], stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None and worker.stdout.readline() == "started\n"
    start = DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name=run.job_name)
    instance.report_dagster_event(start, run_id=run.run_id)
    return worker


def test_a_run_killed_with_sigkill_is_named_killed_not_in_progress(
    spec, instance, land_bank_batches, capsys
):
    """A newcomer killed `training_job` with kill -9: `ct status` said `training run 900fbbdf
    (STARTED) in progress; it or the next one takes it` for a dead process, with no daemon
    to ever mark it failed. And the training sensor waited on it for ever."""
    loop = Loop(spec, instance)
    land_bank_batches(2)
    loop.ingest_landed()
    run = loop.launched_training_run()
    worker = started_run_worker(instance, run)
    try:
        alive = status(capsys)["batch-00001.csv"]["detail"]
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    in_progress = f"training run {run.run_id[:8]} (STARTED) in progress"
    assert alive == f"waiting: {in_progress}; it or the next one takes it"

    rows = status(capsys)

    assert rows["batch-00002.csv"]["detail"] == (
        f"waiting: training_job run {run.run_id[:8]} killed (STARTED, but its process "
        f"{worker.pid} is gone); no daemon to mark it failed: no sensor daemon has ever run on "
        "this instance: run `dagster job execute -m ct_platform.definitions -j training_job`, "
        "or start the daemon (`dagster-daemon run`, `make demo`)"
    )
    instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), "SENSOR", None, None))
    assert status(capsys)["batch-00002.csv"]["detail"].endswith(
        "; the sensors mark it failed at their next tick and Dagster retries it"
    )

    # The training sensor does so: the dead run no longer holds training back.
    [request] = loop.tick("training_sensor").run_requests
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert request.run_key.endswith("-request-2")  # the killed run was attempt 1


def test_a_killed_deployment_run_does_not_hold_the_endpoint_watchdog_back(instance):
    """The watchdog skipped its repair while a deployment run was "in progress": a run
    killed with -9 was that for ever."""
    from ct_platform.defs.serving.assets import DEPLOYED_ENDPOINT
    from ct_platform.defs.serving.sensors import deployment_in_flight

    run = instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            run_id=str(uuid.uuid4()),
            status=dg.DagsterRunStatus.NOT_STARTED,
            asset_selection=frozenset({DEPLOYED_ENDPOINT}),
        )
    )
    worker = started_run_worker(instance, run)
    try:
        assert deployment_in_flight(instance).run_id == run.run_id
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    assert deployment_in_flight(instance) is None


def test_a_killed_ingest_run_is_named_and_marked_failed(spec, instance, capsys):
    """The same kind for an ingest run: `ingest run 1a2b3c4d is STARTED` for a dead process,
    holding one of the queue's run slots until someone marked it failed."""
    loop = Loop(spec, instance)
    instance.add_dynamic_partitions("batches", ["batch-00001.csv"])
    run = instance.create_run_for_job(
        loop.defs.resolve_job_def("batch_job"),
        tags={"dagster/partition": "batch-00001.csv"},
        status=dg.DagsterRunStatus.NOT_STARTED,
    )
    worker = started_run_worker(instance, run)
    worker.send_signal(signal.SIGKILL)
    worker.wait()

    detail = status(capsys)["batch-00001.csv"]["detail"]

    assert detail.startswith(
        f"batch_job run {run.run_id[:8]} killed (STARTED, but its process {worker.pid} is "
        "gone); no daemon to mark it failed: no sensor daemon has ever run on this instance: "
        "run `dagster job execute -m ct_platform.definitions -j batch_job --tags "
        '\'{"dagster/partition": "batch-00001.csv"}\'`'
    )
    loop.tick("training_sensor")
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE


def test_a_real_step_tags_its_run_with_the_pid_namespace_it_runs_in(instance):
    """The IO manager's set-up in every step process says where the run's pids live."""
    from ct_platform.defs.io import JsonIOManager
    from ct_platform.defs.run_workers import NAMESPACE_TAG, process_namespace

    @dg.asset
    def one() -> dg.MaterializeResult:
        return dg.MaterializeResult()

    result = dg.materialize([one], resources={"io_manager": JsonIOManager()}, instance=instance)

    assert result.success
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags[NAMESPACE_TAG] == process_namespace() != None  # noqa: E711


def test_a_run_whose_pids_are_another_namespace_s_is_never_judged_dead(instance):
    """A Kubernetes Job's or another machine's pid 4242 says nothing about this machine's: the
    run stays as Dagster shows it (its launcher's run monitoring judges it), never failed."""
    from ct_platform.defs.run_workers import NAMESPACE_TAG, dead_run_reason, fail_dead_runs

    run = instance.add_run(
        dg.DagsterRun(
            job_name="training_job",
            run_id=str(uuid.uuid4()),
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags={NAMESPACE_TAG: "another-boot/pid:[4026532999]"},
        )
    )
    worker = started_run_worker(instance, run)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    run = instance.get_run_by_id(run.run_id)
    # The worker tagged the run with this machine's namespace; a pod or CI host would not.
    instance.add_run_tags(run.run_id, {NAMESPACE_TAG: "another-boot/pid:[4026532999]"})
    run = instance.get_run_by_id(run.run_id)

    assert run.status == dg.DagsterRunStatus.STARTED
    assert dead_run_reason(instance, run) is None
    assert fail_dead_runs(instance, [run]) == []
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED


def test_a_batch_in_no_window_says_why_from_its_data(
    spec, instance, bank_frame, land_bank_batches, write_batch, capsys
):
    """A newcomer's batch whose 300 rows were all landed before showed "newer batches filled
    the window ..., or that run trained nothing new": the README's rule is the reason."""
    loop = Loop(spec, instance)
    land_bank_batches(2)
    loop.ingest_landed()
    # rows of batch 2, a few of them natural twins of rows of batch 1
    write_batch(bank_frame.iloc[4100:4400], "late-delivery.csv")
    loop.ingest_landed()
    # batch-00001.csv landed again, corrected: `batch-00001.csv@<hash>` supersedes it
    write_batch(bank_frame.iloc[:BATCH_ROWS].assign(age=lambda f: f["age"] + 1), "batch-00001.csv")
    [corrected] = loop.ingest_landed()
    assert loop.train(loop.training_request()).success

    rows = status(capsys)

    assert rows["late-delivery.csv"]["state"] == "validated"
    assert rows["late-delivery.csv"]["detail"] == (
        "in no trained window: every one of its 300 rows was landed before (in "
        "batch-00001.csv, batch-00002.csv), and a batch whose every row was landed before "
        "takes no place in the window"
    )
    new_key = corrected.dagster_run.tags["dagster/partition"]
    assert new_key.startswith("batch-00001.csv@") and rows[new_key]["state"] == "trained"
    assert rows["batch-00001.csv"]["detail"] == (
        f"in no trained window: batch-00001.csv was landed again with other content "
        f"({new_key}), and only a name's newest content trains"
    )
