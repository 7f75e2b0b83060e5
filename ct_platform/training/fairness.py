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
(equalized odds), and a group where the primary metric is undefined (ROC AUC on one class)
is named with why and left out of the metric gap. A multiclass group lacking some classes
is judged on the classes it holds (`evaluate.METRIC_DEFINITIONS`), and the reason says so.
Only groups with a defined figure count: a figure with fewer than two is "not judged", and a
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


@dataclass
class ColumnVerdict:
    """The figures of one sensitive column; `breaches` names each figure over its bound."""

    column: str
    figures: dict[str, float] = field(default_factory=dict)
    breaches: list[str] = field(default_factory=list)
    not_judged: list[str] = field(default_factory=list)
    small_groups: dict[str, int] = field(default_factory=dict)
    # Group -> why its primary metric is undefined (left out of the metric gap).
    undefined_groups: dict[str, str] = field(default_factory=dict)
    # Group -> the target classes it lacks (multiclass: its figure covers the others).
    partial_groups: dict[str, list[str]] = field(default_factory=dict)
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
    """The primary metric per group and its largest gap between the groups where it is
    defined (`MetricFrame.difference()` over them); a group where it is undefined (ROC AUC
    on one class) is named with why, and never counts as judged."""
    import numpy as np
    from fairlearn.metrics import MetricFrame

    from ct_platform.training.evaluate import (
        ALL_METRICS,
        Predictions,
        absent_classes,
        why_undefined,
    )

    primary = spec.evaluation.primary_metric
    metric = ALL_METRICS[primary]

    def on_rows(y_true: np.ndarray, y_pred: np.ndarray, index: np.ndarray) -> float:
        # MetricFrame splits 1-D sample parameters only: pass row numbers, slice proba here.
        proba = None if predictions.proba is None else predictions.proba[index]
        return metric(Predictions(y_true, y_pred, proba, predictions.classes))

    if not eligible.any():
        verdict.not_judged.append(
            f"{METRIC_GAP} (no group of {spec.gates.fairness.min_group_rows}+ rows)"
        )
        return
    by_group = MetricFrame(
        metrics=on_rows,
        y_true=predictions.target[eligible],
        y_pred=predictions.predicted[eligible],
        sensitive_features=groups[eligible],
        sample_params={"index": np.flatnonzero(eligible)},
    ).by_group
    for group, value in by_group.items():
        verdict.metadata[f"{verdict.column}/{group}/{primary}"] = float(value)
        rows = predictions.subset(groups == group)
        absent = absent_classes(rows)
        if absent and not math.isnan(value):
            verdict.metadata[f"{verdict.column}/{group}/classes_absent"] = ", ".join(absent)
            verdict.partial_groups[str(group)] = absent
        if math.isnan(value):
            verdict.undefined_groups[str(group)] = why_undefined(primary, rows)
    defined = by_group.dropna()
    verdict.metadata[f"{verdict.column}/{METRIC_GAP}/groups_judged"] = len(defined)
    if len(defined) < 2:
        verdict.not_judged.append(
            f"{METRIC_GAP} ({len(defined)} group(s) with a defined {primary})"
        )
        return
    # Same as MetricFrame.difference() (max - min between groups), on defined groups only.
    gap = float(defined.max() - defined.min())
    _record(verdict, METRIC_GAP, gap, spec.gates.fairness.metric_gap_threshold)


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
    if verdict.undefined_groups:
        undefined = ", ".join(f"{g} ({why})" for g, why in verdict.undefined_groups.items())
        parts.append(f"{spec.evaluation.primary_metric} undefined, group not judged: {undefined}")
    if verdict.partial_groups:
        partial = ", ".join(f"{g} lacks {', '.join(c)}" for g, c in verdict.partial_groups.items())
        parts.append(f"{spec.evaluation.primary_metric} over the classes present ({partial})")
    if verdict.small_groups:
        small = ", ".join(f"{g} ({n} rows)" for g, n in verdict.small_groups.items())
        parts.append(f"groups under {gate.min_group_rows} rows, not judged: {small}")
    return f"{verdict.column}: " + ", ".join(parts)
