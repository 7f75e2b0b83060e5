"""The fairness gate: how differently a candidate treats the groups of a sensitive column.

Computed with fairlearn on the candidate's holdout predictions, per sensitive column
(`dataset.sensitive_column` / `sensitive_columns`, each judged on its own):

- demographic parity difference: the largest gap between groups in selection rate (share
  of rows predicted positive by the model's own decision rule, `predict()`);
- equalized odds difference: the larger of the true-positive-rate and false-positive-rate
  gaps between groups;
- metric gap: the largest gap between groups in the spec's primary metric
  (`MetricFrame(...).difference()`).

The first two apply to binary classification; regression (and multiclass) is judged on the
metric gap only. A group with fewer than `min_group_rows` holdout rows is reported with its
size and left out; a group holding a single class is left out of the figures that need both
(equalized odds, ROC AUC). A figure with fewer than two groups left is "not judged", and a
gate that could judge nothing says so and fails as a warning, never passes silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ct_platform.settings import Spec
from ct_platform.training.gates import GateResult, MetadataValue

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ct_platform.training.evaluate import Predictions

GATE = "fairness"
DEMOGRAPHIC_PARITY = "demographic_parity_difference"
EQUALIZED_ODDS = "equalized_odds_difference"
METRIC_GAP = "metric_gap"
# Metrics that are undefined on a group holding one class only.
NEEDS_BOTH_CLASSES = frozenset({"roc_auc"})


@dataclass
class ColumnVerdict:
    """The figures of one sensitive column; `breaches` names each figure over its bound."""

    column: str
    figures: dict[str, float] = field(default_factory=dict)
    breaches: list[str] = field(default_factory=list)
    not_judged: list[str] = field(default_factory=list)
    small_groups: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, MetadataValue] = field(default_factory=dict)


def fairness_gate(model: object, holdout: pd.DataFrame, spec: Spec) -> GateResult:
    """Judge `model`'s holdout predictions across the groups of each sensitive column.

    `holdout` is the cleaned holdout frame (features, target and the sensitive columns).
    Fails when any judged figure exceeds its threshold (`gates.fairness`); fails as a
    warning (never blocking) when nothing could be judged. Without a sensitive column in the
    spec it passes, saying there is nothing to judge.

    Raises:
        ValueError: a sensitive column is not in `holdout`.
    """
    from ct_platform.training.evaluate import predict

    gate = spec.gates.fairness
    columns = spec.dataset.sensitive
    if not columns:
        return GateResult(GATE, True, gate.blocking, "no sensitive column in the spec")
    missing = [c for c in columns if c not in holdout]
    if missing:
        raise ValueError(f"fairness gate: holdout lacks the sensitive column(s) {missing}")
    predictions = predict(model, holdout, spec)
    verdicts = [_judge_column(holdout[c], predictions, spec) for c in columns]
    metadata: dict[str, MetadataValue] = {
        "threshold": gate.threshold,
        "metric_gap_threshold": gate.metric_gap_threshold,
        "min_group_rows": gate.min_group_rows,
    }
    for verdict in verdicts:
        metadata |= verdict.metadata
    judged = [v for v in verdicts if v.figures]
    description = "; ".join(_describe(v, spec) for v in verdicts)
    if not judged:
        # Nothing judged is not a pass: say so, as a warning (the holdout cannot decide).
        return GateResult(
            GATE, False, False, f"unknown: nothing could be judged: {description}", metadata
        )
    passed = not any(v.breaches for v in verdicts)
    return GateResult(GATE, passed, gate.blocking, description, metadata)


def _judge_column(values: pd.Series, predictions: Predictions, spec: Spec) -> ColumnVerdict:
    import numpy as np

    from ct_platform.training.evaluate import MISSING_GROUP

    gate = spec.gates.fairness
    groups = values.astype(object).where(values.notna(), MISSING_GROUP).astype(str).to_numpy()
    verdict = ColumnVerdict(values.name)
    names, sizes = np.unique(groups, return_counts=True)
    for name, size in zip(names, sizes, strict=True):
        verdict.metadata[f"{values.name}/{name}/rows"] = int(size)
        if size < gate.min_group_rows:
            verdict.small_groups[str(name)] = int(size)
    eligible = ~np.isin(groups, list(verdict.small_groups))
    binary = predictions.classes is not None and len(predictions.classes) == 2
    if binary:
        _rate_figures(verdict, groups, eligible, predictions, gate.threshold)
    _metric_gap(verdict, groups, eligible, predictions, spec)
    return verdict


def _rate_figures(
    verdict: ColumnVerdict,
    groups: np.ndarray,
    eligible: np.ndarray,
    predictions: Predictions,
    threshold: float,
) -> None:
    """Demographic parity and equalized odds differences, with the per-group rates."""
    import numpy as np
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    positive = predictions.classes[1]  # the larger label, as in `evaluate`
    truth = predictions.target == positive
    chosen = predictions.predicted == positive
    both = eligible & _groups_with_both_classes(groups, truth)
    figures = {
        DEMOGRAPHIC_PARITY: (eligible, demographic_parity_difference),
        EQUALIZED_ODDS: (both, equalized_odds_difference),
    }
    for name, (rows, difference) in figures.items():
        if len(np.unique(groups[rows])) < 2:
            verdict.not_judged.append(name)
            continue
        value = float(difference(truth[rows], chosen[rows], sensitive_features=groups[rows]))
        _record(verdict, name, value, threshold)
    if not eligible.any():
        return
    rates = MetricFrame(
        metrics={
            "selection_rate": selection_rate,
            "true_positive_rate": true_positive_rate,
            "false_positive_rate": false_positive_rate,
        },
        y_true=truth[eligible],
        y_pred=chosen[eligible],
        sensitive_features=groups[eligible],
    ).by_group
    for group, row in rates.iterrows():
        for rate, value in row.items():
            verdict.metadata[f"{verdict.column}/{group}/{rate}"] = float(value)


def _metric_gap(
    verdict: ColumnVerdict,
    groups: np.ndarray,
    eligible: np.ndarray,
    predictions: Predictions,
    spec: Spec,
) -> None:
    """The primary metric per group and its largest gap (`MetricFrame.difference()`)."""
    import numpy as np
    from fairlearn.metrics import MetricFrame

    from ct_platform.training.evaluate import (
        CLASSIFICATION_METRICS,
        REGRESSION_METRICS,
        Predictions,
    )

    primary = spec.evaluation.primary_metric
    metric = {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}[primary]
    rows = eligible
    if primary in NEEDS_BOTH_CLASSES:
        rows = eligible & _groups_with_both_classes(
            groups, predictions.target == predictions.classes[1]
        )
    if len(np.unique(groups[rows])) < 2:
        verdict.not_judged.append(METRIC_GAP)
        return

    def on_rows(y_true: np.ndarray, y_pred: np.ndarray, index: np.ndarray) -> float:
        # MetricFrame splits 1-D sample parameters only: pass row numbers, slice proba here.
        proba = None if predictions.proba is None else predictions.proba[index]
        return metric(Predictions(y_true, y_pred, proba, predictions.classes))

    frame = MetricFrame(
        metrics=on_rows,
        y_true=predictions.target[rows],
        y_pred=predictions.predicted[rows],
        sensitive_features=groups[rows],
        sample_params={"index": np.flatnonzero(rows)},
    )
    for group, value in frame.by_group.items():
        verdict.metadata[f"{verdict.column}/{group}/{primary}"] = float(value)
    _record(
        verdict, METRIC_GAP, float(frame.difference()), spec.gates.fairness.metric_gap_threshold
    )


def _groups_with_both_classes(groups: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Row mask: the row's group holds both positives and negatives."""
    import numpy as np

    mixed = [g for g in np.unique(groups) if 0 < truth[groups == g].sum() < (groups == g).sum()]
    return np.isin(groups, mixed)


def _record(verdict: ColumnVerdict, name: str, value: float, threshold: float) -> None:
    verdict.figures[name] = value
    verdict.metadata[f"{verdict.column}/{name}"] = value
    if math.isnan(value) or value > threshold:
        verdict.breaches.append(name)


def _describe(verdict: ColumnVerdict, spec: Spec) -> str:
    gate = spec.gates.fairness
    bounds = {
        DEMOGRAPHIC_PARITY: gate.threshold,
        EQUALIZED_ODDS: gate.threshold,
        METRIC_GAP: gate.metric_gap_threshold,
    }
    parts = [
        f"{name} {value:.3f} {'over' if name in verdict.breaches else 'within'} {bounds[name]:g}"
        for name, value in verdict.figures.items()
    ]
    if verdict.not_judged:
        parts.append(
            f"not judged (fewer than two groups to compare): {', '.join(verdict.not_judged)}"
        )
    if verdict.small_groups:
        small = ", ".join(f"{g} ({n} rows)" for g, n in verdict.small_groups.items())
        parts.append(f"groups under {gate.min_group_rows} rows, not judged: {small}")
    return f"{verdict.column}: " + ", ".join(parts)
