"""The registry's model scores raw rows as the platform does, the MLflow way (pyfunc).

Raw rows are the bank file as it is: pdays=999 (the "never contacted" sentinel) as an
integer, the dropped `duration` column and the target still there, integer columns int64.
The platform's answer is the pipeline its server runs (the logged pipeline without its
preparation step) on the same rows cleaned by the data contract.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from ct_platform.data.contract import check_contract
from ct_platform.governance.lifecycle import set_champion
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.registry.versions import CHAMPION
from ct_platform.settings import Spec
from ct_platform.training.fit import fit_pipeline
from ct_platform.training.preparation import without_preparation
from ct_platform_tests.registry.conftest import log

RAW_ROWS = 200


@pytest.fixture(scope="module")
def raw_rows(bank_frame: pd.DataFrame) -> pd.DataFrame:
    """200 raw rows just before the training rows (the fixture trains on the newest 3,000)."""
    rows = bank_frame.iloc[-3000 - RAW_ROWS : -3000].reset_index(drop=True)
    # Both kinds of pdays, so the sentinel matters to the answers.
    assert 0 < int((rows["pdays"] == 999).sum()) < RAW_ROWS
    return rows


@pytest.fixture(scope="module")
def champion_uri(
    tracking_uri: str, fitted: Pipeline, train_frame: pd.DataFrame, bank_spec: Spec
) -> str:
    registry = ModelRegistry(tracking_uri, "self_contained", experiment="ct-tests")
    info = log(registry, fitted, train_frame, fingerprint="s" * 64)
    set_champion(registry, info.version, bank_spec)
    return f"models:/{registry.model_name}@{CHAMPION}"


def _platform_answers(
    fitted: Pipeline, rows: pd.DataFrame, spec: Spec
) -> tuple[np.ndarray, np.ndarray]:
    clean = check_contract(rows, spec.dataset).clean
    features = clean[spec.dataset.feature_columns]
    served = without_preparation(fitted)
    return served.predict(features), served.predict_proba(features)


def test_pyfunc_on_raw_rows_gives_the_platform_answers(
    tracking_uri: str,
    champion_uri: str,
    fitted: Pipeline,
    raw_rows: pd.DataFrame,
    bank_spec: Spec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    model = mlflow.pyfunc.load_model(champion_uri)
    # The failure: int64 input against a signature that typed int columns as double.
    assert raw_rows["pdays"].dtype == np.int64 and raw_rows["age"].dtype == np.int64
    labels, _ = _platform_answers(fitted, raw_rows, bank_spec)
    assert np.asarray(model.predict(raw_rows)).tolist() == labels.tolist()


def test_sklearn_flavor_on_raw_rows_gives_the_platform_probabilities(
    tracking_uri: str,
    champion_uri: str,
    fitted: Pipeline,
    raw_rows: pd.DataFrame,
    bank_spec: Spec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batch scoring with the sklearn flavor: the same probabilities, to the bit."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    # skops with exactly the types MLflow stored (ours are re-checked by registry.load_model).
    loaded = mlflow.sklearn.load_model(champion_uri)
    _, proba = _platform_answers(fitted, raw_rows, bank_spec)
    assert np.array_equal(loaded.predict_proba(raw_rows), proba)
    # The preparation is what makes them equal: the served pipeline alone reads pdays=999 as
    # a number of days and scores the never-contacted rows differently.
    unprepared = without_preparation(fitted).predict_proba(
        raw_rows[bank_spec.dataset.feature_columns].astype(
            {c: object for c in bank_spec.dataset.categorical_features}
        )
    )
    never_contacted = (raw_rows["pdays"] == 999).to_numpy()
    assert not np.allclose(unprepared[never_contacted], proba[never_contacted])


def test_pyfunc_refuses_a_row_without_a_feature_naming_it(
    tracking_uri: str, champion_uri: str, raw_rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    model = mlflow.pyfunc.load_model(champion_uri)
    with pytest.raises(mlflow.exceptions.MlflowException, match="pdays"):
        model.predict(raw_rows.drop(columns=["pdays"]))


def test_integer_coded_category_is_accepted_as_integers(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A season coded 1-4 in the data: the signature says long, int64 input is scored."""
    spec = Spec.model_validate(
        {
            "dataset": {
                "name": "rentals",
                "target": "busy",
                "task": "classification",
                "target_labels": [0, 1],
                "columns": {
                    "season": {"type": "category", "categories": ["1", "2", "3", "4"]},
                    "hour": {"type": "int", "min": 0, "max": 23},
                    "temp": {"type": "float"},
                },
            },
            "model": {
                "name": "rentals",
                "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                "params": {"max_iter": 20, "random_state": 0},
            },
            "evaluation": {"primary_metric": "roc_auc"},
            "gates": {"metric_floor": {"threshold": 0.5}},
        }
    )
    rng = np.random.default_rng(0)
    raw = pd.DataFrame(
        {
            "season": rng.integers(1, 5, 400),
            "hour": rng.integers(0, 24, 400),
            "temp": rng.normal(15, 8, 400).round(1),
        }
    )
    raw["busy"] = ((raw["season"] == 3) | (raw["hour"] > 16)).astype(int)
    clean = check_contract(raw, spec.dataset).clean
    model = fit_pipeline(clean, spec)
    registry = ModelRegistry(tracking_uri, "rentals", experiment="ct-tests")
    info = log(registry, model, clean, fingerprint="r" * 64)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    logged = mlflow.pyfunc.load_model(info.model_uri)
    inputs = logged.metadata.get_input_schema()
    assert dict(zip(inputs.input_names(), (t.name for t in inputs.input_types()), strict=True)) == {
        "season": "long",
        "hour": "long",
        "temp": "double",
    }
    features = raw[["season", "hour", "temp"]]
    assert features["season"].dtype == np.int64
    expected = without_preparation(model).predict(clean[spec.dataset.feature_columns])
    assert np.asarray(logged.predict(features)).tolist() == expected.tolist()
