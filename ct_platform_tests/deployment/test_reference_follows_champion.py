"""Production monitoring judges live traffic against the serving champion's own data.

A newcomer's `make demo` (canary strategy): version 5 went in as a first deployment and
served 12,250 requests, yet every `production_drift` said "no champion yet: nothing to
compare with", rows 0: that path moved `champion` without the drift reference. Every path
that moves `champion` now moves the reference with it (`governance.lifecycle.set_champion`),
and the monitoring assets rebuild a missing one from the champion's own training set or say
why they cannot judge. Through a real Dagster instance (temp DAGSTER_HOME), the code
location's assets and jobs, a real MLflow store and a real local server taking HTTP traffic.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import dagster as dg
import httpx
import pytest

from ct_platform.definitions import build_definitions
from ct_platform.defs.monitoring.assets import PRODUCTION_DRIFT, PRODUCTION_PERFORMANCE
from ct_platform.defs.serving.assets import DEPLOYED_ENDPOINT
from ct_platform.deployment import target_for
from ct_platform.governance.lifecycle import rollback
from ct_platform.monitoring.champion_reference import POINTER, load_champion_reference
from ct_platform.monitoring.prediction_log import load_window
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.registry.versions import CANARY, CHAMPION
from ct_platform.settings import Paths, Spec
from ct_platform.training.datasets import load_training_set, save_training_set
from ct_platform_tests.defs.test_rollback import AUTOMATION_RUN_TAGS
from ct_platform_tests.deployment.conftest import FreshStack
from ct_platform_tests.deployment.test_champion_audit import promote_by_hand
from ct_platform_tests.deployment.test_progressive import send

pytestmark = pytest.mark.slow

# Version 1 learned from the first rows only, version 2 from all: their references differ.
VERSION_1_ROWS = 1_000
REQUESTS = 250
# The deployment's smoke request is answered, and so logged, like any other.
LOGGED = REQUESTS + 1


@pytest.fixture
def canary_stack(
    fresh_stack: FreshStack, train_holdout: tuple[Any, Any]
) -> tuple[Spec, ModelRegistry, dg.Definitions]:
    """The demo's canary spec: versions 1 and 2 passed their gates, each with its own
    training set saved where promotion finds it (by fingerprint); nothing deployed yet."""
    spec, registry = fresh_stack("canary", gates_passed=True)
    train, holdout = train_holdout
    paths = Paths.from_env()
    for fingerprint, rows in (("test-1", train.iloc[:VERSION_1_ROWS]), ("test-2", train)):
        save_training_set(
            rows,
            holdout,
            fingerprint=fingerprint,
            batch_keys=[fingerprint],
            newest_batch=paths.home / "landing" / f"{fingerprint}.parquet",
            paths=paths,
        )
    return spec, registry, build_definitions(spec)


def deploy(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """`deployed_endpoint` as automation materializes it after a new bundle."""
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[DEPLOYED_ENDPOINT], tags=AUTOMATION_RUN_TAGS
    )
    assert result.success


def monitor(defs: dg.Definitions, instance: dg.DagsterInstance) -> tuple[dict, dict]:
    """Both monitoring assets as their cron materializes them; their metadata values."""
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[PRODUCTION_DRIFT, PRODUCTION_PERFORMANCE]
    )
    assert result.success
    return tuple(  # type: ignore[return-value]
        {
            name: value.value
            for name, value in instance.get_latest_materialization_event(
                key
            ).asset_materialization.metadata.items()  # type: ignore[union-attr]
        }
        for key in (PRODUCTION_DRIFT, PRODUCTION_PERFORMANCE)
    )


def reference_is_of(version: int, fingerprint: str) -> None:
    paths = Paths.from_env()
    reference = load_champion_reference(paths)
    assert reference is not None
    assert reference.version == version
    assert reference.train_path == load_training_set(fingerprint, paths).train_path


def logged_rows(spec: Spec) -> int:
    """Rows the server's prediction log holds, once its writer has flushed them."""
    deadline = time.monotonic() + 30
    while True:
        rows = len(
            load_window(
                spec.monitoring.window, spec.dataset, directory=Paths.from_env().predictions
            )
        )
        if rows >= LOGGED or time.monotonic() > deadline:
            return rows
        time.sleep(0.25)


def test_a_first_deployment_under_canary_is_monitored_against_its_own_data(
    canary_stack: tuple[Spec, ModelRegistry, dg.Definitions],
    instance: dg.DagsterInstance,
    load_rows: list[dict[str, Any]],
) -> None:
    spec, registry, defs = canary_stack
    # The `champion` asset gives a passed version `canary`; nothing serves, so it goes in.
    registry.set_alias(CANARY, 1)
    deploy(defs, instance)
    assert registry.alias_version(CHAMPION).version == 1  # type: ignore[union-attr]
    reference_is_of(1, "test-1")

    url = target_for(spec).status().endpoint.url  # type: ignore[union-attr]
    responses = send(url, load_rows, REQUESTS, prefix="prod")
    assert [r.status_code for r in responses] == [httpx.codes.OK] * REQUESTS
    assert logged_rows(spec) == LOGGED

    drift, performance = monitor(defs, instance)
    assert drift["champion_version"] == "1"
    assert drift["rows"] == LOGGED
    assert drift["status"] in ("drift", "no drift")
    assert performance["champion_version"] == "1"  # judged on version 1's rows (no labels yet)
    assert performance["n_labelled"] == 0


def test_the_reference_follows_completion_and_rollback_and_is_rebuilt_when_lost(
    canary_stack: tuple[Spec, ModelRegistry, dg.Definitions], instance: dg.DagsterInstance
) -> None:
    spec, registry, defs = canary_stack
    registry.set_alias(CANARY, 1)
    deploy(defs, instance)
    # Version 2 rolls out beside it; a person promotes it from the UI's job.
    registry.set_alias(CANARY, 2)
    deploy(defs, instance)
    reference_is_of(1, "test-1")  # the champion still serves all but the canary's share
    promote_by_hand(defs, instance, user="dana", reason="fine")
    assert registry.alias_version(CHAMPION).version == 2  # type: ignore[union-attr]
    reference_is_of(2, "test-2")

    done = rollback(registry, spec, reason="complaints", actor="dana")
    assert (done.to_version, done.note) == (1, "")
    reference_is_of(1, "test-1")
    drift, _ = monitor(defs, instance)
    assert drift["champion_version"] == "1"

    # The reference store lost (a wiped folder): rebuilt from version 1's own training set.
    paths = Paths.from_env()
    shutil.rmtree(paths.references)
    paths.references.mkdir()
    drift, performance = monitor(defs, instance)
    assert (drift["champion_version"], performance["champion_version"]) == ("1", "1")
    reference_is_of(1, "test-1")

    # Its training set gone too: no verdict, and the assets say why rather than "no champion".
    (paths.references / POINTER).unlink()
    shutil.rmtree(load_training_set("test-1", paths).directory)
    drift, performance = monitor(defs, instance)
    why = "cannot judge: version 1 serves as champion but the drift reference is none (drift "
    why += "reference not moved to version 1: "
    assert drift["status"].startswith(why) and "test-1" in drift["status"]
    assert performance["status"] == drift["status"]
    assert (drift["champion_version"], drift["rows"]) == ("1", 0)
    assert performance["champion_version"] == "1"
