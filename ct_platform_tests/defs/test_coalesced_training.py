"""Every landed batch is ingested on its own; a backlog of batches is one training run.

The sensors run as the daemon runs them (real sensor code, a real instance, a cursor kept
between ticks); their run requests are executed in process. Runs that die are recorded as
the run coordinator records them.
"""

from __future__ import annotations

import os
import shutil
import time

import dagster as dg
import pytest

from ct_platform.definitions import build_definitions
from ct_platform.defs.training_sensor import PIPELINE_TAGS, WILL_RETRY_TAG
from ct_platform.registry.mlflow_registry import ModelRegistry, default_tracking_uri
from ct_platform.settings import Spec
from ct_platform_tests.conftest import REPO_ROOT
from ct_platform_tests.defs.conftest import run_job

pytestmark = pytest.mark.slow


class Loop:
    """The landing and training sensors, ticked with their cursors, and the runs they ask for."""

    def __init__(self, spec: Spec, instance: dg.DagsterInstance) -> None:
        self.spec, self.instance = spec, instance
        self.defs = build_definitions(spec)
        self.cursors: dict[str, str | None] = {}

    def tick(self, sensor_name: str) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance, definitions=self.defs, cursor=self.cursors.get(sensor_name)
        )
        result = self.defs.resolve_sensor_def(sensor_name)(context)
        self.cursors[sensor_name] = result.cursor
        return result

    def ingest_landed(self) -> list[dg.ExecuteInProcessResult]:
        """A landing tick, then each requested `batch_job` run."""
        settled = time.time() - 60  # the files were written a minute ago: complete
        for path in self.spec.landing_dir.iterdir():
            os.utime(path, (settled, settled))
        result = self.tick("landing_sensor")
        for request in result.dynamic_partitions_requests:
            self.instance.add_dynamic_partitions(
                request.partitions_def_name, request.partition_keys
            )
        job = self.defs.resolve_job_def("batch_job")
        return [
            job.execute_in_process(
                instance=self.instance,
                partition_key=request.partition_key,
                tags=request.tags,
                raise_on_error=False,
            )
            for request in result.run_requests
        ]

    def train(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def("training_job").execute_in_process(
            instance=self.instance, tags=request.tags
        )

    def training_request(self) -> dg.RunRequest:
        result = self.tick("training_sensor")
        assert len(result.run_requests) == 1, result.skip_reason
        return result.run_requests[0]

    def training_skip(self) -> str:
        result = self.tick("training_sensor")
        assert not result.run_requests
        return result.skip_reason.skip_message

    def dead_training_run(self) -> dg.DagsterRun:
        """A training run that was queued and then died (failed to launch, worker killed)."""
        run = self.launched_training_run()
        self.instance.report_run_failed(run)
        return run

    def launched_training_run(self) -> dg.DagsterRun:
        job = self.defs.resolve_job_def("training_job")
        return self.instance.create_run_for_job(
            job, tags=PIPELINE_TAGS, status=dg.DagsterRunStatus.NOT_STARTED
        )

    def runs_of(self, job_name: str) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(dg.RunsFilter(job_name=job_name)))


def trained_batches(spec: Spec, version: int) -> list[str]:
    registry = ModelRegistry(default_tracking_uri(), spec.model.name, spec.dataset.name)
    return registry.version(version).tags["ct.batches"].split(",")


def test_a_backlog_of_five_batches_is_one_training_run(spec, instance, land_bank_batches):
    landed = land_bank_batches(5)
    loop = Loop(spec, instance)
    assert loop.training_skip() == "every validated batch is covered by a training run"

    ingests = loop.ingest_landed()

    assert len(ingests) == 5 and all(run.success for run in ingests)
    request = loop.training_request()
    assert request.tags["dagster/priority"] == "1"  # ahead of queued ingest runs
    assert request.tags["ct/newest_batch"] == landed[-1].name
    assert loop.train(request).success
    assert loop.training_skip() == "every validated batch is covered by a training run"
    assert len(loop.runs_of("batch_job")) == 5
    assert len(loop.runs_of("training_job")) == 1
    assert trained_batches(spec, 1) == [path.name for path in landed]


def test_a_batch_validated_during_training_is_trained_by_the_next_run(
    spec, instance, land_bank_batches
):
    loop = Loop(spec, instance)
    land_bank_batches(1)
    loop.ingest_landed()
    loop.training_request()
    in_progress = loop.launched_training_run()  # launched by the daemon, not started yet

    land_bank_batches(1, first=1)
    assert loop.ingest_landed()[0].success
    skipped = loop.training_skip()
    assert skipped == (
        f"training run {in_progress.run_id[:8]} (NOT_STARTED) in progress; "
        "2 validated batch(es) waiting: batch-00001.csv, batch-00002.csv"
    )

    instance.report_run_failed(in_progress)  # it died before reaching a verdict: nothing covered
    assert loop.train(loop.training_request()).success
    assert trained_batches(spec, 1) == ["batch-00001.csv", "batch-00002.csv"]
    assert loop.training_skip() == "every validated batch is covered by a training run"


def test_training_that_keeps_dying_is_requested_a_bounded_number_of_times(
    spec, instance, land_bank_batches
):
    loop = Loop(spec, instance)
    land_bank_batches(1)
    loop.ingest_landed()

    keys = set()
    for _ in range(3):
        keys.add(loop.training_request().run_key)
        loop.dead_training_run()

    assert len(keys) == 3  # each attempt is a new run key, so the daemon launches it
    skipped = loop.training_skip()
    assert "1 validated batch(es) waiting: batch-00001.csv" in skipped
    assert "failed 3 times without a verdict" in skipped
    land_bank_batches(1, first=1)  # a new batch is a new reason to try
    loop.ingest_landed()
    assert loop.training_request().run_key.endswith("-request-1")


def test_shipped_instance_retries_runs_that_die_and_training_waits_for_the_retry(
    spec, tmp_path, land_bank_batches
):
    home = tmp_path / "shipped_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure
        loop = Loop(spec, instance)
        land_bank_batches(1)
        loop.ingest_landed()
        loop.training_request()

        died = loop.dead_training_run()

        assert instance.get_run_by_id(died.run_id).tags[WILL_RETRY_TAG] == "true"
        assert loop.training_skip().startswith(f"training run {died.run_id[:8]} (FAILURE)")


def test_a_batch_caught_up_by_a_manual_run_is_not_trained_again_when_its_ingest_runs(
    spec, instance, land_bank_batches
):
    """A newcomer's demo: a manual `training_job` overlapped the daemon; it caught up on a
    batch whose `batch_job` was still queued. That `batch_job` then reported the batch again,
    and the sensor launched a second run on the same window, which trained for 1.5 min to
    find the fingerprint already evaluated. The second report is not new data."""
    loop = Loop(spec, instance)
    [path] = land_bank_batches(1)
    settled = time.time() - 60
    os.utime(path, (settled, settled))
    landing = loop.tick("landing_sensor")  # the sensor adds the partition, requests batch_job
    [request] = landing.run_requests
    instance.add_dynamic_partitions("batches", [request.partition_key])
    # The manual run (its training steps left out: the catch-up is what matters here).
    manual = run_job(
        spec, instance, "training_job", asset_selection=[dg.AssetKey("training_dataset")]
    )
    assert manual.success
    queued_ingest = loop.defs.resolve_job_def("batch_job").execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=request.tags
    )
    assert queued_ingest.success

    assert loop.training_skip() == "every validated batch is covered by a training run"
