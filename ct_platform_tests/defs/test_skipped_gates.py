"""A run with nothing to train says its gates were skipped; it does not warn them missing.

The newcomer's finding: a training run that skipped on purpose (its data fingerprint trained
by another run) printed "Blocking asset check 'model_evaluation:…' emitted no result"
warnings, which read like a failure. Dagster's planner logs them for every gate of a skipped
step. Here the planner runs for real (a real instance, in-process execution) on assets shaped
like the training chain, with the notice installed the way the code location installs it.
"""

from __future__ import annotations

import logging

import dagster as dg
import pytest

from ct_platform.definitions import build_definitions
from ct_platform.defs.skipped_gates import PLANNER_LOGGER
from ct_platform.settings import load_spec
from ct_platform_tests.conftest import BANK_SPEC


@dg.asset(output_required=False)
def candidate_model() -> dg.Output[int]:
    """Nothing to train: no output, as the real asset when its fingerprint is claimed."""
    yield from ()


@dg.asset(check_specs=[dg.AssetCheckSpec("metric_floor", asset="model_evaluation", blocking=True)])
def model_evaluation(candidate_model: int):
    yield dg.Output(candidate_model)
    yield dg.AssetCheckResult(check_name="metric_floor", passed=True)


@dg.asset(check_specs=[dg.AssetCheckSpec("onnx_parity", asset="refit_model", blocking=True)])
def refit_model(model_evaluation: int):
    yield dg.Output(model_evaluation)
    yield dg.AssetCheckResult(check_name="onnx_parity", passed=True)


@dg.asset
def champion(refit_model: int) -> int:
    return refit_model


@dg.asset(output_required=False)
def other_upstream() -> dg.Output[int]:
    yield from ()


@dg.asset(check_specs=[dg.AssetCheckSpec("rule", asset="other_gated", blocking=True)])
def other_gated(other_upstream: int):
    yield dg.Output(other_upstream)
    yield dg.AssetCheckResult(check_name="rule", passed=True)


@dg.asset
def other_downstream(other_gated: int) -> int:
    return other_gated


def test_skipped_gates_are_said_skipped_not_warned_missing(
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CT_HOME", str(tmp_path))
    build_definitions(load_spec(BANK_SPEC))  # installs the notice, as the code location does
    caplog.set_level(logging.INFO, logger=PLANNER_LOGGER)

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [
                candidate_model,
                model_evaluation,
                refit_model,
                champion,
                other_upstream,
                other_gated,
                other_downstream,
            ],
            instance=instance,
        )

    assert result.success
    skipped = {event.step_key for event in result.all_events if event.is_step_skipped}
    assert skipped == {
        "model_evaluation",
        "refit_model",
        "champion",
        "other_gated",
        "other_downstream",
    }
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == PLANNER_LOGGER]
    assert said == [
        (
            "INFO",
            "gate 'model_evaluation:metric_floor' not evaluated: step 'model_evaluation' was "
            "skipped (no new model in this run), so step 'refit_model' is skipped too; Dagster "
            "records the check as skipped",
        ),
        (
            "INFO",
            "gate 'refit_model:onnx_parity' not evaluated: step 'refit_model' was skipped (no "
            "new model in this run), so step 'champion' is skipped too; Dagster records the "
            "check as skipped",
        ),
        # Another step's missing result is Dagster's to judge: its warning is left as it is.
        (
            "WARNING",
            "Blocking asset check 'other_gated:rule' emitted no result in step 'other_gated'; "
            "downstream step 'other_downstream' will proceed without gating on it.",
        ),
    ]
