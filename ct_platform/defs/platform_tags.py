"""Which platform ran a run: every run is tagged with its CT_HOME and its spec's model name.

A Dagster instance and a CT_HOME (its quarantine, audit log, MLflow store) belong together:
`ct status` lists the instance's batches with the CT_HOME's verdicts. With a stale variable
(`DAGSTER_HOME` of one platform, `CT_HOME` of another) a command would silently merge two
platforms; these tags let it tell (`cli.where.check_same_platform`). Tagged from each step
process's set-up (the IO manager's), where CT_HOME is the one the step writes to.
"""

from __future__ import annotations

import dagster as dg

from ct_platform.settings import Paths

HOME_TAG = "ct/home"
MODEL_TAG = "ct/model"


def platform_tags(model: str, paths: Paths) -> dict[str, str]:
    """{"ct/home": "/abs/ct_home", "ct/model": "<spec model name>"}."""
    return {HOME_TAG: str(paths.home), MODEL_TAG: model}


def record_platform(instance: dg.DagsterInstance, run: dg.DagsterRun, model: str) -> None:
    """Tag `run` with the CT_HOME of this process and the spec's `model` name (once), and
    record that model as the CT_HOME's (`Paths.claim`) for the commands that read no run."""
    paths = Paths.from_env()
    paths.claim(model)
    tags = platform_tags(model, paths)
    if any(run.tags.get(key) != value for key, value in tags.items()):
        instance.add_run_tags(run.run_id, tags)


def instance_platforms(instance: dg.DagsterInstance) -> dict[str, set[str]]:
    """Every CT_HOME and model name the instance's runs were tagged with:
    {"ct/home": {...}, "ct/model": {...}}; empty sets when no run was tagged yet."""
    found = dict(instance.get_run_tags(tag_keys=[HOME_TAG, MODEL_TAG]))
    return {key: set(found.get(key, ())) for key in (HOME_TAG, MODEL_TAG)}
