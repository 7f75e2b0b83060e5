"""ModelRegistry against a real SQLite MLflow store: versions, tags, aliases, round trips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import Model
from sklearn.pipeline import Pipeline

from ct_platform.registry.mlflow_registry import ModelRegistry, default_tracking_uri
from ct_platform.registry.versions import CHALLENGER, CHAMPION, ModelVersionInfo
from ct_platform.settings import Spec
from ct_platform_tests.registry.conftest import artifact_files, log


def test_default_tracking_uri_is_sqlite_under_ct_home(
    ct_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert default_tracking_uri() == f"sqlite:///{ct_home / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert default_tracking_uri() == "http://mlflow.internal:5000"


def test_default_store_keeps_every_artifact_under_ct_home(
    ct_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fitted: Pipeline,
    train_frame: pd.DataFrame,
) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    registry = ModelRegistry(default_tracking_uri(), "bank_marketing", "bank")
    log(registry, fitted, train_frame, fingerprint="f" * 64)
    # Logging borrows MLflow's global URI; it must not leave MLFLOW_TRACKING_URI behind.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    client = MlflowClient(default_tracking_uri())
    artifacts = ct_home / "mlflow" / "artifacts"
    for experiment_id in ("0", registry.experiment_id):
        location = client.get_experiment(experiment_id).artifact_location
        assert Path(location.removeprefix("file:")).resolve().is_relative_to(artifacts)
    assert "model.skops" in artifact_files(artifacts)
    assert os.listdir(cwd) == []  # no ./mlruns, no ./mlflow.db


@pytest.fixture(scope="module")
def logged(
    tracking_uri: str, fitted: Pipeline, train_frame: pd.DataFrame
) -> tuple[ModelRegistry, ModelVersionInfo]:
    """One candidate logged once, inspected by the read-only tests below."""
    registry = ModelRegistry(tracking_uri, "logged_once", experiment="ct-tests")
    return registry, log(registry, fitted, train_frame, fingerprint="a" * 64)


def test_log_candidate_registers_a_challenger_version(
    logged: tuple[ModelRegistry, ModelVersionInfo],
) -> None:
    registry, info = logged
    assert info.version == 1
    assert info.aliases == [CHALLENGER]
    assert info.fingerprint == "a" * 64
    assert info.metrics == {"roc_auc": 0.79, "accuracy": 0.9}
    assert info.tags == {
        "fingerprint": "a" * 64,
        "dagster_run_id": "dagster-run-1",
        "ct.batches": "b-0001,b-0002",
    }
    run = MlflowClient(registry.tracking_uri).get_run(info.run_id)
    assert run.data.tags["fingerprint"] == "a" * 64
    assert run.data.tags["dagster_run_id"] == "dagster-run-1"
    assert run.data.params["estimator__max_iter"] == "150"  # from the model itself
    assert run.data.params["estimator"] == "sklearn.ensemble.HistGradientBoostingClassifier"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["dataset"]


def test_logged_model_has_skops_format_signature_and_example(
    logged: tuple[ModelRegistry, ModelVersionInfo], bank_spec: Spec
) -> None:
    registry, info = logged
    client = MlflowClient(registry.tracking_uri)
    source = client.get_model_version_download_uri(registry.model_name, str(info.version))
    mlmodel = Path(source.removeprefix("file://")) / "MLmodel"

    model = Model.load(str(mlmodel))
    sklearn_flavor = model.flavors["sklearn"]
    assert sklearn_flavor["serialization_format"] == "skops"
    assert sklearn_flavor["skops_trusted_types"] == [
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
    ]
    assert model.signature.inputs.input_names() == bank_spec.dataset.feature_columns
    assert model.saved_input_example_info is not None


def test_find_version_by_fingerprint(
    registry: ModelRegistry, fitted: Pipeline, train_frame: pd.DataFrame
) -> None:
    assert registry.find_version_by_fingerprint("c" * 64) is None
    first = log(registry, fitted, train_frame, fingerprint="c" * 64)
    log(registry, fitted, train_frame, fingerprint="d" * 64)
    found = registry.find_version_by_fingerprint("c" * 64)
    assert found is not None
    assert (found.version, found.run_id) == (first.version, first.run_id)
    assert registry.find_version_by_fingerprint("e" * 64) is None


def test_aliases_move_between_versions(
    registry: ModelRegistry, fitted: Pipeline, train_frame: pd.DataFrame
) -> None:
    assert registry.alias_version(CHALLENGER) is None  # nothing registered yet
    first = log(registry, fitted, train_frame, fingerprint="1" * 64)
    assert registry.alias_version(CHAMPION) is None
    registry.set_alias(CHAMPION, first.version)
    second = log(registry, fitted, train_frame, fingerprint="2" * 64)
    assert registry.alias_version(CHALLENGER).version == second.version
    assert registry.alias_version(CHAMPION).version == first.version
    assert registry.version(first.version).aliases == [CHAMPION]  # challenger moved off it
    registry.set_alias(CHAMPION, second.version)
    assert registry.version(second.version).aliases == [CHALLENGER, CHAMPION]
    assert registry.version(first.version).aliases == []


def test_load_model_round_trip_predicts_identically(
    logged: tuple[ModelRegistry, ModelVersionInfo],
    fitted: Pipeline,
    train_frame: pd.DataFrame,
    bank_spec: Spec,
) -> None:
    registry, info = logged
    loaded = registry.load_model(info.version)
    features = train_frame[bank_spec.dataset.feature_columns]
    assert np.array_equal(loaded.predict_proba(features), fitted.predict_proba(features))
    assert registry.model_size_bytes(loaded) == registry.model_size_bytes(fitted)


def test_metrics_artifacts_and_tags_added_after_logging(
    registry: ModelRegistry, fitted: Pipeline, train_frame: pd.DataFrame, tmp_path: Path
) -> None:
    info = log(registry, fitted, train_frame, fingerprint="7" * 64)
    registry.log_metrics(info.run_id, {"holdout_roc_auc": 0.61, "parity_max_abs_diff": 1.7e-7})
    report = tmp_path / "quality.html"
    report.write_text("<html>report</html>")
    registry.log_artifact(info.run_id, report, artifact_path="reports")
    registry.set_tags(info.version, {"ct.gates_passed": "true"})
    updated = registry.version(info.version)
    assert updated.metrics["holdout_roc_auc"] == 0.61
    assert updated.metrics["roc_auc"] == 0.79
    assert updated.tags["ct.gates_passed"] == "true"
    listed = MlflowClient(registry.tracking_uri).list_artifacts(info.run_id, "reports")
    assert [a.path for a in listed] == ["reports/quality.html"]
