"""The naive baseline a candidate must beat: a scikit-learn dummy fitted on the training target.

Which dummy is the one that scores best among those that ignore the features, for the
primary metric (a baseline that is easy to beat proves nothing):

- mae: `DummyRegressor(strategy="median")` (the median minimises the mean absolute error);
- rmse, r2: `DummyRegressor(strategy="mean")` (the mean minimises the squared error);
- accuracy, balanced_accuracy: `DummyClassifier(strategy="most_frequent")`;
- roc_auc: `DummyClassifier(strategy="prior")` (the class frequencies as probabilities: a
  constant score, AUC 0.5);
- f1 with two classes: `DummyClassifier(strategy="constant")` on the positive (larger) label,
  F1 = 2p / (1 + p) for a positive rate p, which beats predicting the majority (F1 0 when the
  positive class is the minority); macro F1 with more classes: the most frequent class.

The dummy is fitted on the candidate's own training rows and scored on its own holdout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier, DummyRegressor

from ct_platform.settings import Spec
from ct_platform.training.evaluate import Predictions, predict

if TYPE_CHECKING:
    from ct_platform.training.datasets import TrainingSetRef


@dataclass(frozen=True)
class NaiveBaseline:
    """The baseline's predictions on the holdout, and what it predicts, in words."""

    predictions: Predictions
    # e.g. "median of the training target (258)"
    description: str


REGRESSION_STRATEGY = {"mae": "median", "rmse": "mean", "r2": "mean"}


def naive_baseline(
    training_set: TrainingSetRef, holdout: pd.DataFrame, spec: Spec
) -> NaiveBaseline:
    """Fit the primary metric's dummy on `training_set`'s training target; predict `holdout`.

    Raises:
        ValueError: the training set has no row with a target (nothing to fit on).
    """
    name = spec.dataset.target
    # The dummy ignores the features (any frame of the right length fits it): read the target.
    target = pd.read_parquet(training_set.train_path, columns=[name])[name].dropna()
    if target.empty:
        raise ValueError(f"training set {training_set.fingerprint[:12]} has no {name} value")
    model, description = _dummy(target.to_numpy(), spec)
    model.fit(target.to_frame(), target.to_numpy())
    return NaiveBaseline(predict(model, holdout, spec), description)


def _dummy(target: np.ndarray, spec: Spec) -> tuple[DummyRegressor | DummyClassifier, str]:
    metric = spec.evaluation.primary_metric
    if spec.dataset.task == "regression":
        strategy = REGRESSION_STRATEGY[metric]
        value = float(np.median(target) if strategy == "median" else np.mean(target))
        return DummyRegressor(strategy=strategy), f"{strategy} of the training target ({value:.4g})"
    classes, counts = np.unique(target, return_counts=True)
    majority = classes[np.argmax(counts)]
    if metric == "roc_auc":
        return DummyClassifier(strategy="prior"), "training class frequencies as probabilities"
    if metric == "f1" and len(classes) == 2:
        positive = classes[1]
        return (
            DummyClassifier(strategy="constant", constant=positive),
            f"always the positive class {positive}",
        )
    return DummyClassifier(strategy="most_frequent"), f"always the most frequent class {majority}"
