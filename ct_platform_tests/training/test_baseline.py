"""The naive baseline: which scikit-learn dummy for which primary metric, fitted on the
training set's own rows (read from its Parquet file) and scored on the holdout given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ct_platform.settings import Paths
from ct_platform.training.baseline import naive_baseline
from ct_platform.training.datasets import save_training_set
from ct_platform_tests.training.conftest import synthetic_frame

CASES = [
    # task, estimator, metric, classes, what the baseline predicts
    ("regression", "HistGradientBoostingRegressor", "mae", None, "median of the training target"),
    ("regression", "HistGradientBoostingRegressor", "rmse", None, "mean of the training target"),
    ("classification", "HistGradientBoostingClassifier", "roc_auc", 2, "class frequencies"),
    ("classification", "HistGradientBoostingClassifier", "f1", 2, "always the positive class"),
    ("classification", "HistGradientBoostingClassifier", "accuracy", 3, "most frequent class"),
]


@pytest.mark.parametrize(("task", "estimator", "metric", "classes", "what"), CASES)
def test_the_dummy_that_fits_the_metric_on_the_training_rows(
    synthetic_spec, tmp_path: Path, task, estimator, metric, classes, what
) -> None:
    spec = synthetic_spec(task, f"sklearn.ensemble.{estimator}", metric)
    frame = synthetic_frame(500, classes)
    train, holdout = frame.iloc[:400], frame.iloc[400:]
    ref = save_training_set(
        train,
        holdout,
        fingerprint="b" * 64,
        batch_keys=["b1"],
        newest_batch=tmp_path / "b1.csv",
        paths=Paths(home=tmp_path / "home"),
    )

    baseline = naive_baseline(ref, holdout, spec)

    assert what in baseline.description
    predicted = baseline.predictions.predicted
    assert len(predicted) == len(holdout) and len(set(predicted)) == 1
    truth = train[spec.dataset.target]
    expected = {
        "mae": np.median(truth),
        "rmse": np.mean(truth),
        "roc_auc": truth.mode()[0],
        "f1": truth.max(),
        "accuracy": truth.mode()[0],
    }[metric]
    assert predicted[0] == pytest.approx(expected)
    if task == "classification":
        frequencies = truth.value_counts(normalize=True).sort_index().to_numpy()
        if metric == "roc_auc":
            assert baseline.predictions.proba[0] == pytest.approx(frequencies)
