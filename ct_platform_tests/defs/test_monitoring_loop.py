"""Production monitoring closes the loop: drift is measured in an asset, the retrain sensor
reacts through the governor, and a rejected retrain backs off instead of looping."""

from __future__ import annotations

import json
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ct_platform.data.contract import check_contract
from ct_platform.definitions import build_definitions
from ct_platform.defs.monitoring.assets import PRODUCTION_DRIFT
from ct_platform.settings import Paths, Spec, load_spec
from ct_platform_tests.defs.conftest import STRICT_FLOOR, run_job, spec_variant
from ct_platform_tests.monitoring.serving_logs import scored_batch, write_log

pytestmark = pytest.mark.slow


def log_live_traffic(rows: pd.DataFrame, spec: Spec, version: str) -> None:
    features = check_contract(rows, spec.dataset).clean[spec.dataset.feature_columns]
    batch = scored_batch(
        features,
        spec.dataset,
        request_id=f"live-{version}-{len(rows)}",
        ts=time.time(),
        positive_proba=np.full(len(features), 0.2),
        model_version=version,
    )
    write_log(Paths.from_env().predictions, [batch])


def materialize(spec: Spec, instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    defs = build_definitions(spec)
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[key]
    )
    event = result.get_asset_materialization_events()[0]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_production_drift_flags_the_economic_shift(spec, instance, land_bank_batches, bank_frame):
    land_bank_batches(2)
    assert run_job(spec, instance, "training_job").success
    log_live_traffic(bank_frame.iloc[-5000:].astype(str), spec, version="1")

    metadata = materialize(spec, instance, PRODUCTION_DRIFT)

    assert metadata["rows"] == 5000
    assert metadata["column/euribor3m/drift"] is True
    assert metadata["column/nr.employed/drift"] is True
    assert isinstance(metadata["column/age/score"], float)
    assert Path(metadata["report"]).is_file()  # a local path, not a file:// link


def test_production_drift_is_quiet_on_training_like_traffic(
    spec, instance, land_bank_batches, bank_frame
):
    land_bank_batches(2)
    assert run_job(spec, instance, "training_job").success
    log_live_traffic(bank_frame.iloc[:6000].astype(str), spec, version="1")

    metadata = materialize(spec, instance, PRODUCTION_DRIFT)

    assert metadata["dataset_drift"] is False
    assert metadata["drift_share"] < spec.monitoring.drift_share_threshold


def report_drift(instance: dg.DagsterInstance, drifting: bool) -> None:
    metadata = {"dataset_drift": drifting, "drift_share": 0.6 if drifting else 0.0}
    instance.report_runless_asset_event(
        dg.AssetMaterialization(PRODUCTION_DRIFT, metadata=metadata)
    )


def tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, definitions=defs)
    return defs.get_sensor_def("retrain_sensor")(context)


def test_drift_storm_retrains_once_and_a_rejected_candidate_backs_off(
    spec_file, spec, instance, land_bank_batches, ct_home
):
    land_bank_batches(4)
    assert run_job(spec, instance, "training_job").success  # champion v1 on 4 batches
    strict = load_spec(spec_variant(spec_file, "strict", STRICT_FLOOR))
    defs = build_definitions(strict)

    report_drift(instance, True)
    first = tick(defs, instance)
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert request.tags["ct/window_batches"] == "3" and request.run_key.startswith("drift-")
    # The retrain runs (as the daemon would launch it) and its candidate fails a gate.
    retrain = run_job(strict, instance, "training_job", tags=request.tags)
    assert not retrain.success

    requests = []
    for event in range(49):  # the storm: drift flaps on and off, tick after tick
        report_drift(instance, event % 2 == 0)
        requests += tick(defs, instance).run_requests
    last = tick(defs, instance)

    assert requests == [] and last.run_requests == []
    assert "back" in last.skip_reason.skip_message.lower()
    alerts = [json.loads(line) for line in (ct_home / "alerts.jsonl").read_text().splitlines()]
    assert [alert["event"] for alert in alerts] == ["retrain_rejected"]
