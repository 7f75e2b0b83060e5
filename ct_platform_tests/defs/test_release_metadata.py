"""What the `champion` asset says it did, read back from MLflow, under each kind of strategy.

A newcomer found the training chain's `champion` materialization under a canary strategy
naming only the canary's version (as `version`) and no champion: the UI read as if the
canary were champion. Real Dagster instance (temp DAGSTER_HOME), real MLflow store, real
training runs.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ct_platform.settings import load_spec
from ct_platform_tests.defs.conftest import spec_variant
from ct_platform_tests.defs.test_approval_flow import LENIENT_GATES, registry_for, train

pytestmark = pytest.mark.slow

CHAMPION = dg.AssetKey("champion")


def champion_metadata(instance: dg.DagsterInstance) -> dict[str, object]:
    event = instance.get_latest_materialization_event(CHAMPION)
    assert event is not None and event.asset_materialization is not None
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def test_under_a_canary_the_champion_asset_names_the_serving_champion_and_the_canary(
    spec_file: Path, instance: dg.DagsterInstance, land_bank_batches, monkeypatch
) -> None:
    direct_path = spec_variant(spec_file, "direct", {"gates": LENIENT_GATES})
    monkeypatch.setenv("CT_SPEC", str(direct_path))
    land_bank_batches(2)
    train(load_spec(direct_path), instance)
    # Version 1 is the holdout fit, version 2 its whole-window refit: champion at once.
    first = champion_metadata(instance)
    assert {key: first[key] for key in ("version", "champion_version", "strategy")} == {
        "version": 2,
        "champion_version": "2",
        "strategy": "direct",
    }
    assert first["previous_version"] == "none"
    assert "canary_version" not in first and "promotion" not in first

    changes = {"gates": LENIENT_GATES, "deployment": {"strategy": "canary"}}
    canary_path = spec_variant(spec_file, "canary", changes)
    monkeypatch.setenv("CT_SPEC", str(canary_path))
    canary_spec = load_spec(canary_path)
    land_bank_batches(1, first=2)
    train(canary_spec, instance)

    registry = registry_for(canary_spec)
    assert registry.alias_version("champion").version == 2  # type: ignore[union-attr]
    assert registry.alias_version("canary").version == 4  # type: ignore[union-attr]
    second = champion_metadata(instance)
    # It said version 4 and previous_version 2, as if version 4 were champion.
    assert {
        key: second[key] for key in ("version", "champion_version", "canary_version", "strategy")
    } == {"version": 4, "champion_version": "2", "canary_version": "4", "strategy": "canary"}
    assert "canary" in str(second["aliases"]).split(",")
    assert second["promotion"] == (
        "waits for the canary rollout of version 4: `champion` stays version 2 until the "
        "rollout completes"
    )
    assert "previous_version" not in second  # the champion did not move: nothing replaced
