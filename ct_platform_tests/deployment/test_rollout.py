"""Champion in MLflow -> bundle -> live local endpoint, and the check that it is the champion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from ct_platform.deployment import target_for
from ct_platform.deployment.export import default_registry
from ct_platform.deployment.rollout import live_endpoint_status, roll_out
from ct_platform.governance.lifecycle import set_champion
from ct_platform.registry.mlflow_registry import default_tracking_uri
from ct_platform.settings import Spec
from ct_platform_tests.deployment.conftest import register

pytestmark = pytest.mark.slow


@pytest.fixture
def deployed_spec(serving_spec: Spec) -> Iterator[Spec]:
    yield serving_spec
    target_for(serving_spec).stop()


def test_roll_out_serves_the_champion_and_the_check_notices_a_new_one(
    deployed_spec: Spec, train_holdout: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    spec = deployed_spec
    train, holdout = train_holdout
    registry = default_registry(spec)
    assert live_endpoint_status(spec, registry).describe() == "nothing is deployed yet"

    first = register(registry, spec, train, holdout, fingerprint="fp-1", tmp_path=tmp_path)
    set_champion(registry, first.version, spec)
    endpoint = roll_out(spec, registry).endpoint

    assert endpoint.version == str(first.version)
    live = live_endpoint_status(spec, registry)
    assert live.serves_champion, live.describe()
    assert live.figures()["served_version"] == str(first.version)

    second = register(registry, spec, train, holdout, fingerprint="fp-2", tmp_path=tmp_path)
    set_champion(registry, second.version, spec)
    stale = live_endpoint_status(spec, registry)
    assert not stale.serves_champion
    assert stale.describe() == (
        f"{endpoint.url} serves version {first.version}, but the champion is version "
        f"{second.version}: the served bundle is stale"
    )

    # The champion version deleted (its alias goes with it): still not the champion.
    MlflowClient(default_tracking_uri()).delete_model_version(spec.model.name, second.version)
    orphaned = live_endpoint_status(spec, registry)
    assert not orphaned.serves_champion
    assert orphaned.describe() == (
        f"{endpoint.url} serves version {first.version}, but MLflow has no champion (alias "
        "removed or version deleted): the served bundle is stale"
    )
