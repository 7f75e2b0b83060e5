"""The training sensor: batches waiting to be trained on become ONE training run.

Each landed file is ingested and contract-checked in its own `batch_job` run (one partition).
Training is requested here, apart: when several batches are waiting, one run of
`training_job` takes the newest window, instead of one full retrain per file in series.

What a tick decides, from the event log and the run table only (a few queries, nothing heavy):

- A batch is *covered* when a training run that saw it reached a verdict: the run was created
  after the batch was validated (or ingested it itself, catching up) and then succeeded, or
  failed at a blocking gate after evaluating its candidate. A run that crashed, was cancelled
  or never started covers nothing, so its batches are requested again.
- A batch reported again (its `batch_job` ran after a training run's catch-up had already
  stored it) is not waiting: its first event stands for it, so an overlapping manual run does
  not make the sensor train the same window twice.
- While any training run is queued, running, or about to be retried, the tick waits: that run
  or the next one takes every batch validated meanwhile, and training stays one at a time.
  A run Dagster shows as STARTED whose processes are gone (killed with -9) is not running:
  each tick marks every such run failed, of any job (`run_workers.fail_dead_runs`, as run
  monitoring would where the launcher can probe its workers), which frees its queue slot and
  lets the run-retry daemon retry it.
- Otherwise, if validated batches are not covered, one run is requested. Its run key names
  the newest waiting batch's event and the attempt, so a failed attempt is requested again
  (at most `MAX_TRAINING_REQUESTS` times for the same batches, then the tick says so), and it
  carries a high queue priority, so the first model trains before a backlog of ingest runs.

The cursor is the storage id up to which every validated batch is covered.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from ct_platform.defs.data.assets import REVALIDATED, VALIDATED_BATCH
from ct_platform.defs.run_workers import EXECUTING, dead_run_reason, fail_dead_runs

# One training pipeline at a time: the queued run coordinator (dagster.yaml) limits this tag.
PIPELINE_TAG = "ct/pipeline"
PIPELINE_TAGS = {PIPELINE_TAG: "training"}
MODEL_EVALUATION = dg.AssetKey("model_evaluation")
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
# Dagster's own run tags (dagster._core.storage.tags), set by the run-retry daemon.
WILL_RETRY_TAG = "dagster/will_retry"
AUTO_RETRY_RUN_ID_TAG = "dagster/auto_retry_run_id"
RETRY_NUMBER_TAG = "dagster/retry_number"
PRIORITY_TAG = "dagster/priority"
TRIGGER_TAG = "ct/trigger"
NEWEST_BATCH_TAG = "ct/newest_batch"
# Sensor requests for the same waiting batches (run retries come on top of each).
MAX_TRAINING_REQUESTS = 3
RECENT_RUNS = 50
MAX_WAITING_EVENTS = 10_000


@dataclass(frozen=True)
class ValidatedBatch:
    """One passing `validated_batch` materialization."""

    key: str
    storage_id: int
    timestamp: float
    run_id: str


@dataclass(frozen=True)
class TrainingBacklog:
    """What training owes the validated batches, as the event log and run table say."""

    covered_upto: int  # every passing validated_batch event up to this storage id is covered
    waiting: list[ValidatedBatch]  # validated, no training run with a verdict saw them yet
    in_flight: list[dg.DagsterRun]  # training runs queued, running or about to be retried
    # STARTED training runs whose processes are gone (killed), with why: "its process 42 is gone"
    dead: list[tuple[dg.DagsterRun, str]]
    failed_attempts: list[dg.DagsterRun]  # requests since the newest waiting batch, no verdict

    def describe_waiting(self) -> str:
        keys = [batch.key for batch in self.waiting]
        shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        return f"{len(keys)} validated batch(es) waiting: {shown}"


def training_backlog(instance: dg.DagsterInstance, covered_upto: int = 0) -> TrainingBacklog:
    """The backlog, starting from `covered_upto` (a storage id known to be covered)."""
    records = instance.get_run_records(dg.RunsFilter(tags=PIPELINE_TAGS), limit=RECENT_RUNS)
    unfinished = [r.dagster_run for r in records if _in_flight(r.dagster_run)]
    reasons = {run.run_id: dead_run_reason(instance, run) for run in unfinished}
    in_flight = [run for run in unfinished if reasons[run.run_id] is None]
    dead = [(run, reasons[run.run_id]) for run in unfinished if reasons[run.run_id] is not None]
    verdicts = [r for r in records if _reached_verdict(instance, r.dagster_run)]
    verdict_ids = {r.dagster_run.run_id for r in verdicts}
    waiting: list[ValidatedBatch] = []
    for batch in validated_since(instance, covered_upto):
        if any(_covers(record, batch) for record in verdicts):
            if not waiting:
                covered_upto = batch.storage_id
            continue
        waiting.append(batch)
    failed = []
    if waiting:
        newest = waiting[-1]
        failed = [
            r.dagster_run
            for r in records
            if r.dagster_run.status in FINISHED
            and r.dagster_run.run_id not in verdict_ids
            and RETRY_NUMBER_TAG not in r.dagster_run.tags
            and r.create_timestamp.timestamp() > newest.timestamp
        ]
    return TrainingBacklog(covered_upto, waiting, in_flight, dead, failed)


def validated_since(instance: dg.DagsterInstance, storage_id: int) -> list[ValidatedBatch]:
    """Batches that passed their contract after `storage_id`, oldest first."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=VALIDATED_BATCH, after_storage_id=storage_id),
        limit=MAX_WAITING_EVENTS,
        ascending=True,
    )
    batches = []
    for record in result.records:
        materialization = record.asset_materialization
        passed = materialization.metadata.get("passed_contract") if materialization else None
        if _reported_before(instance, record):
            continue
        if passed is not None and passed.value is True and record.partition_key:
            entry = record.event_log_entry
            batches.append(
                ValidatedBatch(
                    record.partition_key, record.storage_id, entry.timestamp, entry.run_id
                )
            )
    return batches


def _reported_before(instance: dg.DagsterInstance, record: dg.EventLogRecord) -> bool:
    """A batch reported again (its queued ingest ran after a training run's catch-up had
    stored it) whose first event exists: that one is what training owes, covered or not.
    Without an earlier event (an ingest killed after storing), this one stands for it."""
    materialization = record.asset_materialization
    again = materialization.metadata.get(REVALIDATED) if materialization else None
    if again is None or again.value is not True or not record.partition_key:
        return False
    earlier = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=VALIDATED_BATCH,
            asset_partitions=[record.partition_key],
            before_storage_id=record.storage_id,
        ),
        limit=1,
    )
    return bool(earlier.records)


def _in_flight(run: dg.DagsterRun) -> bool:
    if run.status not in FINISHED:
        return True
    # Failed, and the run-retry daemon has said it will retry but not created the retry yet.
    return run.tags.get(WILL_RETRY_TAG) == "true" and AUTO_RETRY_RUN_ID_TAG not in run.tags


def _reached_verdict(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    if run.status == dg.DagsterRunStatus.SUCCESS:
        return True
    if run.status != dg.DagsterRunStatus.FAILURE:
        return False
    events = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    return any(e.event_log_entry.dagster_event.asset_key == MODEL_EVALUATION for e in events)


def _covers(record: dg.RunRecord, batch: ValidatedBatch) -> bool:
    # Created after the batch was validated: its training set read it. Or it ingested the
    # batch itself (catch-up of files no sensor had seen) before building its training set.
    return batch.timestamp < record.create_timestamp.timestamp() or (
        batch.run_id == record.dagster_run.run_id
    )


def training_request(backlog: TrainingBacklog) -> dg.RunRequest | str:
    """A run request for the waiting batches, or the reason there is none."""
    if backlog.in_flight:
        runs = ", ".join(f"{run.run_id[:8]} ({run.status.value})" for run in backlog.in_flight)
        waiting = backlog.describe_waiting() if backlog.waiting else "nothing else waiting"
        return f"training run {runs} in progress; {waiting}"
    if not backlog.waiting:
        return "every validated batch is covered by a training run"
    attempts = len(backlog.failed_attempts)
    if attempts >= MAX_TRAINING_REQUESTS:
        runs = ", ".join(run.run_id[:8] for run in backlog.failed_attempts)
        return (
            f"{backlog.describe_waiting()}; training on them failed {attempts} times without a "
            f"verdict (runs {runs}): see those runs; a new batch or a manual run retries"
        )
    newest = backlog.waiting[-1]
    return dg.RunRequest(
        run_key=f"validated-upto-{newest.storage_id}-request-{attempts + 1}",
        tags={PRIORITY_TAG: "1", TRIGGER_TAG: "new_batches", NEWEST_BATCH_TAG: newest.key},
    )


def build_training_sensor(job_name: str) -> dg.SensorDefinition:
    @dg.sensor(
        name="training_sensor",
        job_name=job_name,
        minimum_interval_seconds=20,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Trains once on the newest window when validated batches are waiting and "
        "no training run is in progress: a backlog of batches is one training run.",
    )
    def training_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        # Any job's run killed with -9 holds a queue slot (and training) until marked failed.
        executing = dg.RunsFilter(statuses=list(EXECUTING))
        for line in fail_dead_runs(
            context.instance, context.instance.get_runs(executing, limit=100)
        ):
            context.log.warning(f"marked failed: run {line}")
        backlog = training_backlog(context.instance, int(context.cursor or 0))
        cursor = str(backlog.covered_upto)
        decision = training_request(backlog)
        if isinstance(decision, str):
            return dg.SensorResult(skip_reason=decision, cursor=cursor)
        context.log.info(f"requesting one training run: {backlog.describe_waiting()}")
        return dg.SensorResult(run_requests=[decision], cursor=cursor)

    return training_sensor
