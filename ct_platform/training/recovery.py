"""What a killed run leaves behind, and how the next run deals with it.

- A model version registered by a run that died before its gates ran has no verdict tag. Its
  fingerprint is not "trained": the next run on the same data re-evaluates that version (the
  model is complete once registered) instead of training a duplicate, and tags it
  `ct.reevaluated_by` so the UI and MLflow show what happened.
- An MLflow run left RUNNING by a dead Dagster run (or dead process) is ended as FAILED with
  a `ct.failed_reason` tag, so nobody mistakes its partial artifacts for a live run's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ct_platform.training.claims import IN_PROGRESS, worker_alive
from ct_platform.training.promotion import GATES_PASSED_TAG

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry
    from ct_platform.registry.versions import ModelVersionInfo

# Tags on the MLflow run (and version) a candidate was trained in.
WORKER_TAG = "ct.worker"
REEVALUATED_TAG = "ct.reevaluated_by"


def has_verdict(version: ModelVersionInfo) -> bool:
    """Whether the gates' verdict was recorded on `version` (else its run died before it)."""
    return GATES_PASSED_TAG in version.tags


def fail_orphaned_runs(
    registry: ModelRegistry, dagster_run_status: Callable[[str], str]
) -> list[str]:
    """End as FAILED every RUNNING MLflow run whose Dagster run or process is gone.

    `dagster_run_status(run_id)` is the Dagster run's status name ("unknown" if there is no
    such run). Runs with no Dagster run tag were not started by the platform: left alone.
    Returns the MLflow run ids that were marked.
    """
    from ct_platform.registry.versions import DAGSTER_RUN_TAG

    marked = []
    for run_id, tags in registry.running_runs():
        dagster_run = tags.get(DAGSTER_RUN_TAG)
        if dagster_run is None:
            continue
        reason = _orphan_reason(dagster_run, dagster_run_status(dagster_run), tags.get(WORKER_TAG))
        if reason is not None:
            registry.mark_run_failed(run_id, reason)
            marked.append(run_id)
    return marked


def _orphan_reason(dagster_run: str, status: str, worker: str | None) -> str | None:
    """Why the run is orphaned, or None while its process or Dagster run may still work."""
    if worker is not None and not worker_alive(worker):
        return (
            f"orphaned: its process {worker} is gone (killed) while Dagster run "
            f"{dagster_run} shows {status}"
        )
    if status in IN_PROGRESS:
        return None
    if status == "unknown" and worker is not None:
        return None  # a live process of another Dagster instance sharing this MLflow store
    return f"orphaned: its Dagster run {dagster_run} is {status}, the run never ended"
