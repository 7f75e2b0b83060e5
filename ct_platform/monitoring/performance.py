"""Performance decay: the champion's primary metric on labelled live traffic vs its holdout.

Feedback labels (`POST /feedback`) are joined to the stable slot's logged predictions by
request id; the primary metric is computed over the newest `window_rows` labelled rows and
compared with the metric the champion scored on its holdout when it was promoted. A shortfall
beyond `monitoring.decay_tolerance` (in the metric's units, direction-aware) is a retrain
trigger. Too little data gives no verdict rather than a noisy one, and `status` says why with
the figures: fewer than `monitoring.min_feedback_rows` labelled rows, a single class among the
labels, fewer than `monitoring.min_feedback_per_class` rows in a class (classification), or a
metric undefined on the rows at hand (ROC AUC of a multiclass log without the probabilities).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ct_platform.monitoring.prediction_log import Record, load_feedback, read_predictions
from ct_platform.settings import DatasetSpec, DriftWindow, Spec
from ct_platform.training.evaluate import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    Predictions,
    shortfall,
)

# Only the stable slot answers for the champion; candidate/shadow rows belong to other models.
CHAMPION_SLOT = "stable"


@dataclass(frozen=True)
class PerformanceResult:
    metric: str
    value: float | None  # None: no verdict (see `status`)
    reference: float
    decay: float | None  # how much worse than the reference (negative: better)
    decayed: bool | None  # None: no verdict
    n_labelled: int
    # "decay", "no decay", or why there is no verdict ("insufficient data: ...")
    status: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def evaluate_performance(
    spec: Spec,
    reference: float,
    *,
    model_version: str | None = None,
    window_rows: int | None = None,
    predictions_dir: Path | None = None,
    feedback_dir: Path | None = None,
) -> PerformanceResult:
    """Primary metric on the newest labelled rows vs `reference` (the champion's holdout
    figure). `model_version` keeps only rows the given version scored, so a window that
    straddles a promotion does not blame the new champion for the old one's errors."""
    monitoring, metric = spec.monitoring, spec.evaluation.primary_metric
    feedback = load_feedback(feedback_dir)
    labels = dict(zip(feedback["request_id"], feedback["label"], strict=True))
    window = DriftWindow(rows=window_rows or monitoring.window.rows, minutes=None)
    # A label joins one record: the latest logged with its id (a client that reused an id
    # sent several; the server's ids and the rows' `<id>:<i>` are unique).
    latest = {
        record["request_id"]: record
        for record in read_predictions(
            window, directory=predictions_dir, slots=(CHAMPION_SLOT,), request_ids=labels.keys()
        )
    }
    records = [
        record
        for record in latest.values()
        if model_version is None or record["model_version"] == model_version
    ]

    def no_verdict(why: str) -> PerformanceResult:
        return PerformanceResult(metric, None, reference, None, None, len(records), why)

    why = _too_little_data(records, labels, spec)
    if why is not None:
        return no_verdict(why)
    value = labelled_metric(records, labels, spec)
    if math.isnan(value):
        return no_verdict(f"no verdict: {metric} is undefined on these {len(records)} rows")
    decay = shortfall(value, reference, metric)
    decayed = decay > monitoring.decay_tolerance
    return PerformanceResult(
        metric, value, reference, decay, decayed, len(records), "decay" if decayed else "no decay"
    )


def _too_little_data(records: list[Record], labels: dict[str, object], spec: Spec) -> str | None:
    """Why these labelled rows are too few for a verdict, with the figures; None if enough."""
    monitoring, dataset = spec.monitoring, spec.dataset
    if len(records) < monitoring.min_feedback_rows:
        return (
            f"insufficient data: {len(records)} labelled rows < minimum "
            f"{monitoring.min_feedback_rows}"
        )
    if dataset.task == "regression":
        return None
    per_class = Counter(_as_target(labels[r["request_id"]], dataset) for r in records)
    counts = ", ".join(f"{label}: {n}" for label, n in sorted(per_class.items(), key=str))
    if len(per_class) < 2:
        return f"insufficient data: a single class among {len(records)} labelled rows ({counts})"
    minimum = monitoring.min_feedback_per_class
    if min(per_class.values()) < minimum:
        return f"insufficient data: labelled rows per class {counts}; minimum {minimum} per class"
    return None


def labelled_metric(records: list[Record], labels: dict[str, object], spec: Spec) -> float:
    """The spec's primary metric of logged outputs against their feedback labels."""
    dataset, metric = spec.dataset, spec.evaluation.primary_metric
    target = np.array([_as_target(labels[r["request_id"]], dataset) for r in records])
    if dataset.task == "regression":
        predicted = np.array([float(r["output"]["value"]) for r in records])
        return REGRESSION_METRICS[metric](Predictions(target, predicted))
    predicted = np.array([_as_target(r["output"]["label"], dataset) for r in records])
    classes = np.array(sorted(dataset.target_labels or set(target) | set(predicted)))
    proba = _proba_matrix(records, classes)
    if proba is None and metric == "roc_auc":
        return math.nan
    return CLASSIFICATION_METRICS[metric](Predictions(target, predicted, proba, classes))


def _proba_matrix(records: list[Record], classes: np.ndarray) -> np.ndarray | None:
    """Class probabilities as the metrics expect them, when the log allows it.

    The server logs the positive (second) class's probability for binary models; for
    multiclass models it logs the predicted class's, which cannot rebuild the matrix, so ROC
    AUC there is undefined and gives no verdict.
    """
    proba = [r["output"].get("proba") for r in records]
    if len(classes) != 2 or any(p is None for p in proba):
        return None
    positive = np.asarray(proba, dtype="float64")
    return np.column_stack([1 - positive, positive])


def _as_target(value: object, dataset: DatasetSpec) -> object:
    # Labels arrive as JSON: 1, 1.0 or "1" must all mean the declared label 1.
    if dataset.task == "regression":
        return float(value)
    labels = dataset.target_labels
    if labels and all(isinstance(label, int) for label in labels):
        return int(float(value))
    return str(value)
