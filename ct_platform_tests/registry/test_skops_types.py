"""skops trusted types: exactly the allowlisted ones, anything else refused, never pickle."""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.pipeline import Pipeline

from ct_platform.registry import skops_types
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.settings import Spec
from ct_platform.training.fit import fit_pipeline
from ct_platform_tests.registry.conftest import log

KDTREE = "sklearn.neighbors._kd_tree.KDTree"
# Every logged pipeline starts with the spec's input preparation (our own, reviewed, type).
PREPARATION = "ct_platform.training.preparation.SpecPreparation"


@pytest.fixture(scope="module")
def knn_pipeline(train_frame: pd.DataFrame, bank_spec: Spec) -> Pipeline:
    """A real model holding types outside the allowlist (KNeighbors keeps a KDTree)."""
    raw = bank_spec.model_dump()
    raw["model"] |= {
        "estimator": "sklearn.neighbors.KNeighborsClassifier",
        "params": {"algorithm": "kd_tree"},
    }
    return fit_pipeline(train_frame, Spec.model_validate(raw))


def test_an_imputing_pipeline_round_trips(train_frame: pd.DataFrame, bank_spec: Spec) -> None:
    """Estimators that cannot take NaN get a SimpleImputer, whose numpy.dtype is trusted."""
    raw = bank_spec.model_dump()
    raw["model"] |= {"estimator": "sklearn.linear_model.LogisticRegression", "params": {}}
    model = fit_pipeline(train_frame, Spec.model_validate(raw))
    trusted = [PREPARATION, "numpy.dtype"]
    assert skops_types.skops_trusted_types(model) == trusted
    restored = skops.io.loads(skops_types.dumps(model), trusted=trusted)
    sample = train_frame.head(50)
    np.testing.assert_array_equal(restored.predict(sample), model.predict(sample))


def test_hist_gradient_boosting_needs_exactly_tree_predictor(fitted: Pipeline) -> None:
    assert skops_types.skops_trusted_types(fitted) == [
        PREPARATION,
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    ]


def test_unknown_types_are_refused_not_trusted(knn_pipeline: Pipeline, tmp_path: Path) -> None:
    with pytest.raises(skops_types.UntrustedModelError, match=KDTREE):
        skops_types.skops_trusted_types(knn_pipeline)
    target = tmp_path / "model.skops"
    with pytest.raises(skops_types.UntrustedModelError):
        skops_types.save(knn_pipeline, target)
    assert not target.exists()


def test_load_checks_the_file_not_a_list_stored_with_it(
    knn_pipeline: Pipeline, tmp_path: Path
) -> None:
    crafted = tmp_path / "crafted.skops"
    skops.io.dump(knn_pipeline, crafted)  # written by someone else, outside our save()
    with pytest.raises(skops_types.UntrustedModelError, match=KDTREE):
        skops_types.load(crafted)


def test_save_and_load_round_trip(
    fitted: Pipeline, train_frame: pd.DataFrame, bank_spec: Spec, tmp_path: Path
) -> None:
    path = tmp_path / "model.skops"
    assert skops_types.save(fitted, path) == skops_types.skops_trusted_types(fitted)
    features = train_frame[bank_spec.dataset.feature_columns]
    assert np.array_equal(skops_types.load(path).predict(features), fitted.predict(features))


def test_registry_refuses_to_log_an_unknown_type(
    registry: ModelRegistry, knn_pipeline: Pipeline, train_frame: pd.DataFrame
) -> None:
    with pytest.raises(skops_types.UntrustedModelError, match=KDTREE):
        log(registry, knn_pipeline, train_frame, fingerprint="k" * 64)
    assert registry.alias_version("challenger") is None


def test_registry_never_unpickles(
    registry: ModelRegistry, fitted: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version someone logged with pickle is refused by load_model, not loaded."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)  # for the fluent API
    with mlflow.start_run(experiment_id=registry.experiment_id) as run:
        logged = mlflow.sklearn.log_model(fitted, name="model", serialization_format="pickle")
    client = mlflow.MlflowClient(registry.tracking_uri)
    client.create_registered_model(registry.model_name)
    version = client.create_model_version(
        registry.model_name, logged.model_uri, run_id=run.info.run_id, model_id=logged.model_id
    )
    with pytest.raises(skops_types.UntrustedModelError, match="refusing to unpickle"):
        registry.load_model(int(version.version))
