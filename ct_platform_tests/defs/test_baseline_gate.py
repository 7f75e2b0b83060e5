"""The baseline gate on a real Dagster instance and MLflow store: a model no better than a
naive baseline (scikit-learn's dummy fitted on the same training rows) is not promoted.

The example is a newcomer's: call `duration` predicted from the bank data, batches 1-3 of
4,000 rows, `mae` ceiling 250. The model's MAE (~189) meets the ceiling, yet predicting the
training target's median scores ~164 on the same holdout: before the gate it was promoted.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ct_platform.governance.card import gather_facts, render_markdown
from ct_platform.registry.mlflow_registry import ModelRegistry, default_tracking_uri
from ct_platform.settings import Paths, Spec, load_spec
from ct_platform_tests.defs.conftest import run_job

pytestmark = pytest.mark.slow

REGRESSION = {
    "name": "bank_duration",
    "target": "duration",
    "task": "regression",
    "target_labels": None,
    "target_rules": {"min": 0},
    "drop_columns": ["y"],
}
GATES = {
    "metric_floor": {"threshold": 250, "symmetric": False, "blocking": True},
    "champion_regression": {"tolerance": 50, "policy": "non_inferiority", "alpha": 0.05},
    "fairness": {"threshold": 0.1, "metric_gap": 30, "blocking": False},
}
# "mae 189.1141 is not better than the naive baseline (median of the training target (...))
# at 163.7700 on the same 2,400 holdout rows: improvement -25.3441, 95% CI [...], paired_t p"
VERDICT = re.compile(
    r"^mae (?P<mae>[\d.]+) is not better than the naive baseline \(median of the training "
    r"target \([\d.]+\)\) at (?P<baseline>[\d.]+) on the same (?P<rows>[\d,]+) holdout rows: "
    r"improvement (?P<improvement>-[\d.]+), 95% CI \[(?P<low>[-+][\d.]+), (?P<high>[-+][\d.]+)\]"
    r", paired_t p (?P<p>\S+)$"
)


def duration_spec(spec_file: Path, baseline: dict[str, object]) -> Spec:
    """The newcomer's regression spec, on the bank data's own landing folder."""
    raw = yaml.safe_load(spec_file.read_text())
    raw["dataset"] |= REGRESSION
    raw["model"] |= {
        "name": "bank_duration",
        "estimator": "sklearn.ensemble.HistGradientBoostingRegressor",
    }
    raw["model"]["params"] = {"max_iter": 100, "learning_rate": 0.08, "random_state": 0}
    raw["evaluation"]["primary_metric"] = "mae"
    raw["gates"] |= {**GATES, "baseline": baseline}
    raw["gates"].pop("parity", None)  # the classification tolerance; regression's default
    path = spec_file.with_name(f"duration-{len(baseline)}.yaml")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_spec(path)


def test_a_model_worse_than_the_median_is_not_promoted(spec_file, instance, land_bank_batches):
    # A champion first, the gate off (as before the fix): batches 1-2.
    unjudged = duration_spec(spec_file, {"enabled": False})
    land_bank_batches(2)
    assert run_job(unjudged, instance, "training_job").success
    registry = ModelRegistry(default_tracking_uri(), "bank_duration", "bank_duration")
    assert registry.alias_version("champion").version == 2
    # The newcomer's window: batches 1-3, the gate on by default.
    land_bank_batches(1, first=2)
    spec = duration_spec(spec_file, {})
    assert spec.gates.baseline.enabled and spec.gates.baseline.blocking

    result = run_job(spec, instance, "training_job")

    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["metric_floor"].passed  # the ceiling alone let it through
    gate = checks["baseline"]
    assert not gate.passed
    verdict = VERDICT.match(gate.description)
    assert verdict, gate.description
    mae, baseline = float(verdict["mae"]), float(verdict["baseline"])
    assert verdict["rows"] == "2,400"
    assert mae > baseline + 10  # ~189 vs ~164: a real gap, not noise
    assert float(verdict["improvement"]) == pytest.approx(baseline - mae, abs=1e-3)
    assert float(verdict["high"]) < 0 and float(verdict["p"]) < 0.05
    assert gate.metadata["baseline"].value == pytest.approx(baseline, abs=1e-3)
    assert gate.metadata["method"].value == "paired_t"
    # Recorded on the rejected version; the champion stays.
    rejected = registry.version(3)
    assert rejected.tags["ct.gates_passed"] == "false"
    assert rejected.tags["ct.gate.baseline"] == "fail"
    assert rejected.metrics["holdout_baseline_mae"] == pytest.approx(baseline, abs=1e-3)
    assert rejected.metrics["holdout_mae"] == pytest.approx(mae, abs=1e-3)
    assert rejected.metrics["holdout_r2"] < 0
    assert rejected.metrics["holdout_baseline_r2"] < 0.01  # a constant: about 0, never above
    (failure,) = result.get_step_failure_events()
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("candidate version 3 rejected by blocking gate(s) baseline")
    assert registry.alias_version("champion").version == 2
    # Its model card: the baseline beside each metric, r2 flagged, no note contradicting it.
    card = render_markdown(gather_facts(registry, 3, spec, Paths.from_env()))
    table = card[card.index("## Metrics") : card.index("## Per-group")]
    row = rf"\| holdout\\_mae \| {mae:.4g} \| [\d.]+ to [\d.]+ \\\(t\\\) \| {baseline:.4g} \|"
    assert re.search(row, table), table
    assert "**Warning**: holdout\\_r2 is -" in table
    assert "undefined" not in table and "gate." not in table
    gates = card[card.index("## Gates") : card.index("## ONNX parity")]
    assert "| baseline | fail | mae " in gates and "Figures the gates recorded:" in gates
