"""Full Evidently reports: explicit column mapping, model quality headline numbers, HTML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, mean_absolute_error, roc_auc_score

from ct_platform.monitoring.evidently_reports import (
    PREDICTION_COLUMN,
    PROBA_COLUMN,
    data_definition,
    model_quality_report,
)
from ct_platform.settings import Spec
from ct_platform.training.pipeline import build_pipeline


@pytest.fixture
def labelled(bank_features: pd.DataFrame, bank_frame: pd.DataFrame) -> pd.DataFrame:
    frame = bank_features.copy()
    frame["y"] = bank_frame["y"]
    return frame.sample(12_000, random_state=3).reset_index(drop=True)


def test_columns_declared_from_the_spec_never_inferred(spec: Spec) -> None:
    dataset = spec.dataset
    definition = data_definition(dataset, include_target=False, prediction=None)
    # `previous` holds a handful of small ints: auto-inference would call it categorical.
    assert "previous" in definition.numerical_columns
    assert definition.categorical_columns == dataset.categorical_features
    assert definition.classification is None

    with_outputs = data_definition(dataset, include_target=False, prediction="both")
    assert PROBA_COLUMN in with_outputs.numerical_columns
    assert PREDICTION_COLUMN in with_outputs.categorical_columns

    task = data_definition(dataset, include_target=True, prediction="both").classification[0]
    assert (task.target, task.prediction_labels, task.prediction_probas, task.pos_label) == (
        "y",
        PREDICTION_COLUMN,
        PROBA_COLUMN,
        1,
    )


def test_classification_quality(spec: Spec, labelled: pd.DataFrame, tmp_path: Path) -> None:
    train, holdout = labelled.iloc[:8_000], labelled.iloc[8_000:].copy()
    model = build_pipeline(spec).fit(train[spec.dataset.feature_columns], train["y"])
    features = holdout[spec.dataset.feature_columns]
    holdout[PREDICTION_COLUMN] = model.predict(features)
    holdout[PROBA_COLUMN] = model.predict_proba(features)[:, 1]

    numbers = model_quality_report(holdout, spec, tmp_path / "reports" / "quality.html")

    assert {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"} <= set(numbers)
    assert numbers["roc_auc"] == pytest.approx(roc_auc_score(holdout["y"], holdout[PROBA_COLUMN]))
    expected_accuracy = accuracy_score(holdout["y"], holdout[PREDICTION_COLUMN])
    assert numbers["accuracy"] == pytest.approx(expected_accuracy)
    assert "<html" in (tmp_path / "reports" / "quality.html").read_text()[:2000].lower()


def test_regression_quality(spec: Spec, labelled: pd.DataFrame, tmp_path: Path) -> None:
    raw = spec.model_dump()
    raw["dataset"]["task"] = "regression"
    raw["dataset"]["target_labels"] = None
    raw["model"]["estimator"] = "sklearn.ensemble.HistGradientBoostingRegressor"
    raw["evaluation"]["primary_metric"] = "mae"
    raw["gates"]["fairness"]["metric_gap"] = 0.1  # MAE gap between groups, target units
    regression = Spec.model_validate(raw)
    scored = labelled.assign(y=labelled["y"].astype("float64"))
    scored[PREDICTION_COLUMN] = np.clip(scored["y"] + np.linspace(-0.3, 0.3, len(scored)), 0, 1)

    numbers = model_quality_report(scored, regression, tmp_path / "quality.html")

    assert numbers["mae"] == pytest.approx(mean_absolute_error(scored["y"], scored["prediction"]))
    assert {"rmse", "r2", "mean_error"} <= set(numbers)
    assert (tmp_path / "quality.html").stat().st_size > 0
