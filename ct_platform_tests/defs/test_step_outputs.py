"""Step outputs are JSON, one file per run; every artifact reads its own version's data."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from mlflow import MlflowClient

from ct_platform.definitions import build_definitions
from ct_platform.defs.io import StepOutputError, decode, encode
from ct_platform.registry.mlflow_registry import ModelRegistry, default_tracking_uri
from ct_platform.registry.versions import ModelVersionInfo
from ct_platform.settings import Spec
from ct_platform_tests.defs.conftest import run_job

PICKLE_PROTOCOLS = {bytes([0x80, protocol]) for protocol in range(2, 6)}


def registry_for(spec: Spec) -> ModelRegistry:
    return ModelRegistry(default_tracking_uri(), spec.model.name, spec.dataset.name)


def materialize(spec: Spec, instance: dg.DagsterInstance, *assets: str, **kwargs):
    defs = build_definitions(spec)
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(a) for a in assets], **kwargs
    )


class Planted:
    """Unpickling this writes a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_typed_refs_round_trip_as_json_and_nothing_else_loads(tmp_path: Path) -> None:
    info = ModelVersionInfo(
        "m", 3, "run", "f" * 64, {"roc_auc": float("nan")}, datetime.now(UTC), ["champion"], {}
    )
    raw = encode(info)

    back = decode(raw, "test")
    assert back.version == 3 and back.created_at == info.created_at
    assert back.metrics["roc_auc"] != back.metrics["roc_auc"]  # NaN survives
    marker = tmp_path / "marker"
    with pytest.raises(StepOutputError, match="is a pickle"):
        decode(pickle.dumps(Planted(marker)), "planted")
    assert not marker.exists()
    with pytest.raises(StepOutputError, match="not registered"):
        decode(b'{"format": 1, "type": "Popen", "value": {}}', "foreign")
    with pytest.raises(StepOutputError, match="not registered"):
        encode(pd.DataFrame())


@pytest.mark.slow
def test_no_step_output_is_a_pickle_and_a_planted_one_is_refused(
    spec, instance, land_bank_batches, ct_home, tmp_path
):
    land_bank_batches(2)
    assert run_job(spec, instance, "training_job").success
    assert materialize(spec, instance, "evaluation_reports").success

    storage = Path(instance.storage_directory())
    scanned = [p for root in (storage, ct_home) for p in root.rglob("*") if p.is_file()]
    pickles = [p for p in scanned if p.read_bytes()[:2] in PICKLE_PROTOCOLS]
    assert pickles == []
    stored = sorted(p.relative_to(storage).parts[1] for p in storage.glob("ct-json/*/*.json"))
    assert stored == ["candidate_model", "model_evaluation", "refit_model", "training_dataset"]

    # A pickle planted where the reports' input (the latest candidate) is stored is refused,
    # never loaded.
    candidate = instance.get_latest_materialization_event(dg.AssetKey("candidate_model"))
    target = storage / "ct-json" / "candidate_model" / f"{candidate.run_id}.json"
    marker = tmp_path / "unpickled.txt"
    target.write_bytes(pickle.dumps(Planted(marker)))

    result = materialize(spec, instance, "evaluation_reports", raise_on_error=False)

    assert not result.success
    assert not marker.exists()
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "is a pickle" in failure.to_string() and str(target) in failure.to_string()


def holdout_rows(spec: Spec, version: int) -> int:
    run_id = registry_for(spec).version(version).run_id
    local = MlflowClient(default_tracking_uri()).download_artifacts(
        run_id, "holdout.parquet", str(spec.paths.home / f"check-v{version}")
    )
    return len(pd.read_parquet(local))


def assert_report_is_of(spec: Spec, result, version: int) -> None:
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    own = registry_for(spec).version(version)
    assert metadata["version"].value == version
    assert metadata["fingerprint"].value == own.fingerprint
    assert metadata["holdout_rows"].value == holdout_rows(spec, version)
    assert metadata["evidently/roc_auc"].value == pytest.approx(
        own.metrics["holdout_roc_auc"], abs=1e-6
    )


@pytest.mark.slow
def test_each_versions_reports_read_its_own_training_set(spec, instance, land_bank_batches):
    land_bank_batches(2)
    assert run_job(spec, instance, "training_job").success
    # The next run's training set is built (new data, a second fingerprint) before version
    # 1's reports run: the issue's back-to-back queue, in the order that broke it.
    land_bank_batches(2, first=2)
    assert materialize(spec, instance, "training_dataset").success

    first_reports = materialize(spec, instance, "evaluation_reports")

    assert_report_is_of(spec, first_reports, 1)
    # Evaluated either way (a rejection fails the run but records the verdict and outcome).
    run_job(spec, instance, "training_job")
    second_reports = materialize(spec, instance, "evaluation_reports")
    # Version 2 is version 1's whole-window refit; the second candidate is version 3.
    assert_report_is_of(spec, second_reports, 3)
    assert holdout_rows(spec, 1) != holdout_rows(spec, 3)
