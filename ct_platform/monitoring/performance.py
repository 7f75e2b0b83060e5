"""Performance decay: the champion's primary metric on labelled live traffic vs its holdout.

Feedback labels (`POST /feedback`) are joined to the stable slot's logged predictions by
request id; the primary metric is computed over the newest `window_rows` labelled rows and
compared with the metric the champion scored on its holdout when it was promoted. It has
decayed, a retrain trigger, only when both hold:

- the shortfall (direction-aware, in the metric's units) exceeds `monitoring.decay_tolerance`
  (`MonitoringSpec.decay_margin`: unset, 0.05 for metrics on a 0..1 scale and 5 % of the
  holdout figure for mae and rmse);
- a one-sided test at `monitoring.decay_alpha` says the live figure is worse than the holdout
  figure beyond noise. MAE: one-sample t test of the per-row absolute errors against the
  holdout MAE; RMSE: of the squared errors against the holdout MSE; accuracy: exact binomial
  test of the correct predictions against the holdout accuracy; any other metric: the
  shortfall over the live figure's bootstrap standard error (normal approximation). The
  holdout figure is taken as known: the live window is the noisier side.

Too little data gives no verdict rather than a noisy one, and `status` says why with the
figures: fewer than `monitoring.min_feedback_rows` labelled rows, a single class among the
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
from ct_platform.training.evaluate import ALL_METRICS, Predictions, shortfall

# Only the stable slot answers for the champion; candidate/shadow rows belong to other models.
CHAMPION_SLOT = "stable"


# Bootstrap resamples for metrics without a per-row test (each calls scikit-learn once).
BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_SEED = 20261130


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
    # The decay tolerance for this reference, in the metric's units.
    tolerance: float | None = None
    # One-sided p-value of "the live figure is worse than the reference", and its test.
    p_value: float | None = None
    test: str | None = None
    # The verdict in one sentence with its figures (the status when there is no verdict).
    reason: str = ""

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
        tolerance = monitoring.decay_margin(metric, reference)
        return PerformanceResult(
            metric, None, reference, None, None, len(records), why, tolerance, reason=why
        )

    why = _too_little_data(records, labels, spec)
    if why is not None:
        return no_verdict(why)
    predictions = labelled_predictions(records, labels, spec)
    value = math.nan if predictions is None else ALL_METRICS[metric](predictions)
    if predictions is None or math.isnan(value):
        return no_verdict(f"no verdict: {metric} is undefined on these {len(records)} rows")
    return _verdict(predictions, value, reference, spec)


def _verdict(
    predictions: Predictions, value: float, reference: float, spec: Spec
) -> PerformanceResult:
    """Decayed when the shortfall exceeds the tolerance and the test finds it significant."""
    monitoring, metric = spec.monitoring, spec.evaluation.primary_metric
    rows = len(predictions.target)
    decay = shortfall(value, reference, metric)
    tolerance = monitoring.decay_margin(metric, reference)
    p_value, test = decay_p_value(predictions, value, reference, metric)
    alpha = monitoring.decay_alpha
    beyond, significant = decay > tolerance, p_value < alpha
    decayed = beyond and significant
    figures = (
        f"{metric} {value:.4g} vs holdout {reference:.4g} on {rows} labelled rows: shortfall "
        f"{decay:+.4g} {'>' if beyond else '<='} tolerance {tolerance:.4g}; {test} p = "
        f"{p_value:.3g} {'<' if significant else '>='} alpha {alpha:g}"
    )
    if decayed:
        reason = f"decay: {figures}"
    elif beyond:
        reason = f"no decay (the shortfall is within noise): {figures}"
    else:
        reason = f"no decay: {figures}"
    return PerformanceResult(
        metric,
        value,
        reference,
        decay,
        decayed,
        rows,
        "decay" if decayed else "no decay",
        tolerance=tolerance,
        p_value=p_value,
        test=test,
        reason=reason,
    )


def decay_p_value(
    predictions: Predictions, value: float, reference: float, metric: str
) -> tuple[float, str]:
    """One-sided p-value of "the live `metric` (`value`, from `predictions`) is worse than
    `reference`", and the test's name; 1.0 when the test is undefined (e.g. zero spread)."""
    from scipy import stats

    target, predicted = predictions.target, predictions.predicted
    if metric == "mae":
        errors = np.abs(target.astype(float) - predicted.astype(float))
        p_value = stats.ttest_1samp(errors, reference, alternative="greater").pvalue
        test = "one-sample t test of the absolute errors"
    elif metric == "rmse":
        squared = (target.astype(float) - predicted.astype(float)) ** 2
        p_value = stats.ttest_1samp(squared, reference**2, alternative="greater").pvalue
        test = "one-sample t test of the squared errors"
    elif metric == "accuracy":
        correct = int(np.sum(target == predicted))
        p_value = stats.binomtest(
            correct, len(target), min(max(reference, 0.0), 1.0), alternative="less"
        ).pvalue
        test = "exact binomial test of the correct predictions"
    else:
        p_value = _bootstrap_p_value(predictions, value, reference, metric)
        test = f"bootstrap ({BOOTSTRAP_RESAMPLES} resamples) of {metric}"
    p_value = float(p_value)
    return (p_value if math.isfinite(p_value) else 1.0), test


def _bootstrap_p_value(
    predictions: Predictions, value: float, reference: float, metric: str
) -> float:
    """Normal approximation: the shortfall over the live figure's bootstrap standard error."""
    from scipy import stats

    score = ALL_METRICS[metric]
    result = stats.bootstrap(
        (np.arange(len(predictions.target)),),
        lambda indices: score(predictions.subset(indices.astype(int))),
        vectorized=False,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    se = float(np.nan_to_num(result.standard_error, nan=0.0))
    decay = shortfall(value, reference, metric)
    if se <= 0:
        return 0.0 if decay > 0 else 1.0
    return float(stats.norm.sf(decay / se))


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


def labelled_predictions(
    records: list[Record], labels: dict[str, object], spec: Spec
) -> Predictions | None:
    """Logged outputs against their feedback labels, as the metrics take them; None when the
    primary metric needs probabilities the log cannot rebuild (multiclass ROC AUC)."""
    dataset, metric = spec.dataset, spec.evaluation.primary_metric
    target = np.array([_as_target(labels[r["request_id"]], dataset) for r in records])
    if dataset.task == "regression":
        predicted = np.array([float(r["output"]["value"]) for r in records])
        return Predictions(target, predicted)
    predicted = np.array([_as_target(r["output"]["label"], dataset) for r in records])
    classes = np.array(sorted(dataset.target_labels or set(target) | set(predicted)))
    proba = _proba_matrix(records, classes)
    if proba is None and metric == "roc_auc":
        return None
    return Predictions(target, predicted, proba, classes)


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
