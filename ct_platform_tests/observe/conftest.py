"""One real training history shared by the observe tests (the slow part, about a minute).

Two in-process runs of `training_job` on an on-disk Dagster instance and the default MLflow
store under their own CT_HOME: the first promotes version 2 (`champion`: the whole-window
refit of holdout fit version 1, bundle exported), the second (a metric floor no model
reaches) rejects version 3 at its blocking gate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from ct_platform.settings import Spec, load_spec
from ct_platform_tests.conftest import BANK_SPEC
from ct_platform_tests.defs.conftest import BATCH_ROWS, STRICT_FLOOR, run_job, spec_variant

FAILED_GATE = "metric_floor"


@dataclass(frozen=True)
class TrainedPlatform:
    spec_file: Path
    spec: Spec
    ct_home: Path
    dagster_home: Path
    # Set once the rejecting run has run: its id and the failed gate's own description.
    rejected_run_id: str = ""
    failed_gate_reason: str = ""
    # How many of `model_evaluation`'s checks passed in the rejecting run.
    evaluation_checks_passed: int = 0

    @property
    def env(self) -> dict[str, str]:
        return {
            "CT_HOME": str(self.ct_home),
            "DAGSTER_HOME": str(self.dagster_home),
            "CT_SPEC": str(self.spec_file),
        }

    def use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process at the platform's stores (the autouse CT_HOME is per test)."""
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def trained_platform(tmp_path_factory, bank_frame: pd.DataFrame) -> TrainedPlatform:
    root = tmp_path_factory.mktemp("trained_platform")
    raw = yaml.safe_load(BANK_SPEC.read_text())
    raw["dataset"]["landing_dir"] = "incoming"
    # Two bank batches make a chance-level model, which the baseline gate rejects; these tests
    # watch a promoted champion (the gate is judged in `defs/test_baseline_gate.py`).
    raw["gates"]["baseline"] = {"enabled": False}
    landing = root / "incoming"
    landing.mkdir()
    spec_file = root / "ct_platform.yaml"
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    platform = TrainedPlatform(spec_file, load_spec(spec_file), root / "ct_home", root / "dagster")
    platform.dagster_home.mkdir()

    def land(index: int) -> None:
        rows = bank_frame.iloc[index * BATCH_ROWS : (index + 1) * BATCH_ROWS]
        rows.to_csv(landing / f"batch-{index + 1:05d}.csv", sep=";", index=False)

    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        dg.DagsterInstance.from_config(str(platform.dagster_home)) as instance,
    ):
        platform.use(monkeypatch)
        land(0), land(1)
        assert run_job(platform.spec, instance, "training_job").success
        land(2)
        strict = load_spec(spec_variant(spec_file, "strict", STRICT_FLOOR))
        rejected = run_job(strict, instance, "training_job")
    assert not rejected.success
    (gate,) = [e for e in rejected.get_asset_check_evaluations() if e.check_name == FAILED_GATE]
    assert not gate.passed and gate.description
    # With the strict floor other checks may fail too (e.g. a warning): count what ran.
    passed = sum(
        e.passed
        for e in rejected.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey("model_evaluation")
    )
    return replace(
        platform,
        rejected_run_id=rejected.run_id,
        failed_gate_reason=gate.description,
        evaluation_checks_passed=passed,
    )
