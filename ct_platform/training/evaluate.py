"""Score a fitted pipeline on a holdout frame: the task's metrics, overall and per group.

Classification: accuracy, balanced_accuracy, roc_auc, f1. With two classes the positive
label is the larger one (e.g. 1 for a 0/1 target); with more, F1 is macro-averaged and ROC
AUC is one-vs-rest (`METRIC_DEFINITIONS`). Regression: mae, rmse, r2. A metric that is
undefined on the rows given (ROC AUC with one class present, r2 on one row) is NaN, never a
made-up number; `why_undefined` says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from ct_platform.settings import LOWER_IS_BETTER, Spec

# Group key for rows whose sensitive column is missing.
MISSING_GROUP = "(missing)"
GROUP_ROWS = "rows"


@dataclass(frozen=True)
class Predictions:
    """A model's outputs on a holdout, next to the truth; sliced per group without re-predicting."""

    target: np.ndarray
    predicted: np.ndarray
    # Classification only: probabilities in `classes` order.
    proba: np.ndarray | None = None
    classes: np.ndarray | None = None

    def subset(self, mask: np.ndarray) -> Predictions:
        """The rows picked by a boolean mask or by row indices (repeats allowed)."""
        proba = None if self.proba is None else self.proba[mask]
        return Predictions(self.target[mask], self.predicted[mask], proba, self.classes)


def predict(model: object, holdout: pd.DataFrame, spec: Spec) -> Predictions:
    dataset = spec.dataset
    missing = [c for c in [*dataset.feature_columns, dataset.target] if c not in holdout]
    if missing:
        raise ValueError(f"holdout frame lacks columns {missing}")
    if holdout.empty:
        raise ValueError("holdout frame has no rows: nothing to score")
    features = holdout[dataset.feature_columns]
    target = holdout[dataset.target].to_numpy()
    if dataset.task == "classification":
        proba = model.predict_proba(features)
        return Predictions(target, model.predict(features), proba, np.asarray(model.classes_))
    return Predictions(target, model.predict(features))


# How each metric is computed, for the model card (a reader comparing figures needs it).
# True of every figure shown; when a figure is undefined the card adds `UNDEFINED_WHEN`.
METRIC_DEFINITIONS: dict[str, str] = {
    "roc_auc": (
        "two classes: the larger label is positive; more classes: one-vs-rest, the unweighted "
        "mean of each class's ROC AUC against the rest (Provost & Domingos; scikit-learn's "
        "multi_class='ovr', average='macro'), over the classes present in the rows scored: "
        "a group lacking a class is averaged over the classes it holds (scikit-learn raises "
        "instead)"
    ),
    "f1": "two classes: of the larger label; more classes: macro-averaged over every class",
    "mae": "mean absolute error, in the target's units",
    "rmse": "root mean squared error, in the target's units",
    "r2": (
        "coefficient of determination, 1 - squared error / squared deviation from the mean "
        "of the rows scored: 0 scores like predicting that mean, below 0 is worse than it"
    ),
}
# When a metric is undefined (NaN), for the card's note on an undefined figure.
UNDEFINED_WHEN: dict[str, str] = {
    "roc_auc": "fewer than two classes present",
    "r2": "fewer than two rows",
}


def _roc_auc(p: Predictions) -> float:
    present = np.unique(p.target)
    if len(present) < 2:
        return math.nan
    if len(p.classes) == 2:
        # Positive = the larger label; predict_proba columns follow sorted `classes_`.
        return float(roc_auc_score(p.target == p.classes[1], p.proba[:, 1]))
    # One-vs-rest macro over the classes present: with every class present this is exactly
    # roc_auc_score(multi_class="ovr", labels=classes), which refuses a class-less subset
    # (and a column subset, its rows no longer summing to 1).
    columns = np.flatnonzero(np.isin(p.classes, present))
    return float(np.mean([roc_auc_score(p.target == p.classes[c], p.proba[:, c]) for c in columns]))


def absent_classes(p: Predictions) -> list[str]:
    """The model's classes with no row in `p` (classification; [] for regression)."""
    if p.classes is None:
        return []
    return [str(c) for c in p.classes if not np.any(p.target == c)]


def why_undefined(metric: str, p: Predictions) -> str:
    """Why `metric` is NaN on the rows of `p`, in words (for a gate's reason)."""
    if metric == "roc_auc":
        present = np.unique(p.target)
        return f"one class only ({present[0]})" if len(present) == 1 else "no rows"
    if metric == "r2":
        return f"{len(p.target)} row(s), r2 needs two"
    return f"{metric} undefined on {len(p.target)} row(s)"


def _f1(p: Predictions) -> float:
    if len(p.classes) == 2:
        return float(f1_score(p.target, p.predicted, pos_label=p.classes[1], zero_division=0))
    return float(
        f1_score(p.target, p.predicted, average="macro", labels=p.classes, zero_division=0)
    )


def _r2(p: Predictions) -> float:
    return float(r2_score(p.target, p.predicted)) if len(p.target) >= 2 else math.nan


Metric = Callable[[Predictions], float]
CLASSIFICATION_METRICS: dict[str, Metric] = {
    "accuracy": lambda p: float(accuracy_score(p.target, p.predicted)),
    "balanced_accuracy": lambda p: float(balanced_accuracy_score(p.target, p.predicted)),
    "roc_auc": _roc_auc,
    "f1": _f1,
}
REGRESSION_METRICS: dict[str, Metric] = {
    "mae": lambda p: float(mean_absolute_error(p.target, p.predicted)),
    "rmse": lambda p: float(root_mean_squared_error(p.target, p.predicted)),
    "r2": _r2,
}
ALL_METRICS: dict[str, Metric] = {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}


def task_metrics(spec: Spec) -> dict[str, Metric]:
    """Name -> metric of the spec's task (classification or regression)."""
    if spec.dataset.task == "classification":
        return CLASSIFICATION_METRICS
    return REGRESSION_METRICS


def score(model: object, holdout: pd.DataFrame, spec: Spec) -> dict[str, float]:
    """Every metric of the spec's task, on the whole holdout."""
    return score_predictions(predict(model, holdout, spec), spec)


def score_predictions(predictions: Predictions, spec: Spec) -> dict[str, float]:
    """Every metric of the spec's task, from predictions already made."""
    return {name: metric(predictions) for name, metric in task_metrics(spec).items()}


def score_by_group(model: object, holdout: pd.DataFrame, spec: Spec) -> dict[str, dict[str, float]]:
    """Primary metric and row count per value of `dataset.sensitive_column` ({} if unset).

    A fairness view: a model can be good overall and poor for one group.
    """
    column = spec.dataset.sensitive_column
    if column is None:
        return {}
    predictions = predict(model, holdout, spec)
    primary = spec.evaluation.primary_metric
    metric = task_metrics(spec)[primary]
    groups = holdout[column].astype(object).where(holdout[column].notna(), MISSING_GROUP)
    result: dict[str, dict[str, float]] = {}
    for group in sorted(groups.unique(), key=str):
        mask = (groups == group).to_numpy()
        result[str(group)] = {
            primary: metric(predictions.subset(mask)),
            GROUP_ROWS: int(mask.sum()),
        }
    return result


def shortfall(candidate: float, reference: float, metric: str) -> float:
    """How much worse `candidate` is than `reference` in `metric` units (negative: better)."""
    if metric in LOWER_IS_BETTER:
        return candidate - reference
    return reference - candidate


def is_better(a: float, b: float, metric: str) -> bool:
    """True when `a` is strictly better than `b`; a number beats NaN, NaN beats nothing."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return shortfall(a, b, metric) < 0
