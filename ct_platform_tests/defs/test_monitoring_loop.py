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
from ct_platform.defs.monitoring.assets import (
    CONTRACT_CHECK,
    PRODUCTION_DRIFT,
    PRODUCTION_PERFORMANCE,
    SAMPLE_SIZE_CHECK,
)
from ct_platform.monitoring.governor import RetrainGovernor
from ct_platform.serving.prediction_log import ScoredBatch
from ct_platform.settings import Paths, Spec, load_spec
from ct_platform_tests.defs.conftest import (
    BATCH_ROWS,
    LENIENT_FLOOR,
    STRICT_FLOOR,
    run_job,
    spec_variant,
)
from ct_platform_tests.monitoring.serving_logs import scored_batch, write_log

pytestmark = pytest.mark.slow


def log_live_traffic(
    rows: pd.DataFrame,
    spec: Spec,
    version: str,
    *,
    keep: int | None = None,
    age: float | None = None,
) -> None:
    """Log contract-clean `rows` as served traffic; only the first `keep` when given (the
    contract itself refuses batches below the spec's min_rows)."""
    write_log(Paths.from_env().predictions, [live_batch(rows, spec, version, keep=keep)])


def live_batch(
    rows: pd.DataFrame,
    spec: Spec,
    version: str,
    *,
    keep: int | None = None,
    age: float | None = None,
) -> ScoredBatch:
    """`rows` as `log_live_traffic` logs them; every `age` set to `age` when given (a value
    the server serves whatever the spec's range)."""
    features = check_contract(rows, spec.dataset).clean[spec.dataset.feature_columns]
    features = features if keep is None else features.head(keep)
    features = features if age is None else features.assign(age=age)
    return scored_batch(
        features,
        spec.dataset,
        request_id=f"live-{version}-{len(rows)}",
        ts=time.time(),
        positive_proba=np.full(len(features), 0.2),
        model_version=version,
    )


def materialize(spec: Spec, instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    defs = build_definitions(spec)
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[key]
    )
    event = result.get_asset_materialization_events()[0]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_production_drift_flags_the_economic_shift(spec, instance, land_bank_batches, bank_frame):
    """...and names the logged values that break the contract: 50 rows the server scored with
    an age of 250 (the bundle schema has no min/max, so it serves them)."""
    land_bank_batches(2)
    assert run_job(spec, instance, "training_job").success
    # One write: two write_log calls within a second would give both segments one name.
    traffic = live_batch(bank_frame.iloc[-5000:].astype(str), spec, version="1")
    bad = live_batch(bank_frame.iloc[:50].astype(str), spec, version="1", age=250.0)
    write_log(Paths.from_env().predictions, [traffic, bad])

    result = (
        build_definitions(spec)
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(instance=instance, asset_selection=[PRODUCTION_DRIFT])
    )
    event = result.get_asset_materialization_events()[0]
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}

    assert metadata["rows"] == 5000  # the window: the newest 5,000, the 50 bad ones included
    assert metadata["column/euribor3m/drift"] is True
    assert metadata["column/nr.employed/drift"] is True
    assert isinstance(metadata["column/age/score"], float)
    assert Path(metadata["report"]).is_file()  # a local path, not a file:// link
    violation = "1 % of 5,000 values outside [17, 100] (seen 250 to 250)"
    assert metadata["column/age/violations"] == violation
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks[CONTRACT_CHECK].passed is False
    assert checks[CONTRACT_CHECK].description == f"age: {violation}"
    assert checks[SAMPLE_SIZE_CHECK].passed is True


def test_production_drift_is_quiet_on_training_like_traffic(
    spec, instance, land_bank_batches, bank_frame
):
    land_bank_batches(2)
    assert run_job(spec, instance, "training_job").success
    # The champion is the whole-window refit: its reference is both batches (8,000 rows, the
    # economic columns moving in time), so training-like traffic is a sample of that window.
    window = bank_frame.iloc[: 2 * BATCH_ROWS]
    log_live_traffic(window.sample(6000, random_state=0).astype(str), spec, version="2")

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
    # Champion v1 on 4 batches. The oldest months score a ROC AUC near 0.5 (0.49-0.51 with
    # the window's exact rows), so the floor is out of this run's way: the test is the storm.
    lenient = load_spec(spec_variant(spec_file, "lenient", LENIENT_FLOOR))
    assert run_job(lenient, instance, "training_job").success
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


def report_performance(instance: dg.DagsterInstance, **metadata: object) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(PRODUCTION_PERFORMANCE, metadata=metadata)
    )


def test_every_tick_without_a_run_says_why_with_figures(spec, instance) -> None:
    """The tick's skip reason (what the UI shows) names each trigger's measurement with its
    figures, and the governor's decision when it refuses."""
    defs = build_definitions(spec)
    first = tick(defs, instance)
    assert first.run_requests == []
    assert first.skip_reason.skip_message == (
        "no retrain. drift: no verdict (production_drift not measured yet) | "
        "decay: no verdict (production_performance not measured yet)"
    )

    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            PRODUCTION_DRIFT,
            metadata={"dataset_drift": False, "drift_share": 0.1, "drifted_columns": "age"},
        )
    )
    report_performance(
        instance, metric="roc_auc", value=0.71, reference=0.72, decay=0.01, decayed=False
    )
    quiet = tick(defs, instance)
    assert quiet.run_requests == []
    assert quiet.skip_reason.skip_message == (
        "no retrain. drift: none, drift share 10% (threshold 30%, drifted: age) | "
        "decay: none, roc_auc 0.710 vs holdout 0.720 (shortfall +0.010, tolerance 0.05)"
    )

    # A retrain already in flight: the drift trigger is refused, and the reason says so.
    RetrainGovernor(spec.monitoring.governor).retrain_started("drift-earlier")
    report_drift(instance, True)
    refused = tick(defs, instance)
    assert refused.run_requests == []
    message = refused.skip_reason.skip_message
    assert message.startswith(
        "no retrain. drift: drift share 60% (threshold 30%, drifted: none); governor says "
        "no: a retrain is in flight (episode drift-earlier)"
    )
    assert message.endswith(
        "| decay: none, roc_auc 0.710 vs holdout 0.720 (shortfall +0.010, tolerance 0.05)"
    )


def test_no_verdict_is_not_drift_and_keeps_the_episode(spec, instance) -> None:
    """Too little data is neither drift nor "no drift": no retrain, and an ongoing drift
    episode stays open (it would otherwise restart and earn a second retrain)."""
    defs = build_definitions(spec)
    report_drift(instance, True)
    started = tick(defs, instance)
    assert len(started.run_requests) == 1
    episode = started.run_requests[0].run_key

    status = "insufficient data: 3 rows < minimum 200"
    instance.report_runless_asset_event(
        dg.AssetMaterialization(PRODUCTION_DRIFT, metadata={"status": status, "rows": 3})
    )
    quiet = tick(defs, instance)

    assert quiet.run_requests == []
    assert f"drift: no verdict ({status})" in quiet.skip_reason.skip_message
    assert RetrainGovernor(spec.monitoring.governor).ledger().open_episodes == {"drift": episode}


def test_too_little_traffic_gives_no_verdict_and_a_warning_check(
    spec, instance, land_bank_batches, bank_frame
) -> None:
    land_bank_batches(2)
    assert run_job(spec, instance, "training_job").success
    log_live_traffic(bank_frame.iloc[-100:].astype(str), spec, version="1", keep=3)

    defs = build_definitions(spec)
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[PRODUCTION_DRIFT, PRODUCTION_PERFORMANCE]
    )
    metadata = {
        event.asset_key: {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }
    drift, performance = metadata[PRODUCTION_DRIFT], metadata[PRODUCTION_PERFORMANCE]

    assert drift["status"] == "insufficient data: 3 rows < minimum 200" and drift["rows"] == 3
    assert "dataset_drift" not in drift and "report" not in drift
    statuses = {k.split("/")[1]: v for k, v in drift.items() if k.endswith("/status")}
    assert set(statuses) == set(spec.dataset.feature_columns)
    assert statuses["age"] == "not tested: too few values: 3 non-missing of 3 rows < minimum 100"
    assert performance["status"] == "insufficient data: 0 labelled rows < minimum 200"
    assert "decayed" not in performance and performance["n_labelled"] == 0

    checks = {
        (evaluation.asset_key, evaluation.check_name): evaluation
        for evaluation in result.get_asset_check_evaluations()
    }
    # The three logged rows are within the contract: only the sample size fails.
    assert checks[PRODUCTION_DRIFT, "contract"].passed
    sample_size = checks[PRODUCTION_DRIFT, SAMPLE_SIZE_CHECK]
    assert not sample_size.passed
    assert sample_size.severity == dg.AssetCheckSeverity.WARN
    assert sample_size.description == drift["status"]
    (performance_check,) = [c for key, c in checks.items() if key[0] == PRODUCTION_PERFORMANCE]
    assert not performance_check.passed
    assert performance_check.description == performance["status"]

    skip = tick(defs, instance).skip_reason.skip_message
    assert skip == (
        "no retrain. drift: no verdict (insufficient data: 3 rows < minimum 200) | "
        "decay: no verdict (insufficient data: 0 labelled rows < minimum 200)"
    )
