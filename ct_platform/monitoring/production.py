"""Production checks over the prediction log: drift of live inputs, decay of live accuracy.

Both compare with the current champion's reference (see `champion_reference`) and return a
verdict that says why there is none when there is none (no champion, too little traffic,
too few labels), so a quiet period never reads as "no drift".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ct_platform.monitoring.champion_reference import load_champion_reference
from ct_platform.monitoring.drift import detect_drift
from ct_platform.monitoring.performance import PerformanceResult, evaluate_performance
from ct_platform.monitoring.prediction_log import load_window
from ct_platform.monitoring.results import DriftResult
from ct_platform.settings import Paths, Spec

# The HTML report runs full Evidently on samples this size; the verdict uses all rows.
REPORT_SAMPLE_ROWS = 5000


@dataclass(frozen=True)
class ProductionDrift:
    """`status`: "drift", "no drift", or why there is no verdict ("no champion yet...",
    "insufficient data: N rows < minimum M"); `result` lists every column's status."""

    status: str
    champion_version: int | None
    rows: int
    result: DriftResult | None = None
    report: Path | None = None


def check_production_drift(spec: Spec, paths: Paths) -> ProductionDrift:
    reference = load_champion_reference(paths)
    if reference is None:
        return ProductionDrift("no champion yet: nothing to compare with", None, 0)
    # All recent traffic counts: the inputs' distribution does not depend on which version
    # answered them (performance, in contrast, is judged on the champion's own rows).
    monitoring = spec.monitoring
    window = load_window(monitoring.window, spec.dataset, directory=paths.predictions)
    features = window[spec.dataset.feature_columns]
    result = detect_drift(
        reference.profile,
        features,
        spec.dataset,
        drift_share_threshold=monitoring.drift_share_threshold,
        min_rows=monitoring.min_window_rows,
        min_column_values=monitoring.min_column_values,
    )
    if result.dataset_drift is None:
        return ProductionDrift(result.insufficient or "", reference.version, len(window), result)
    # Evidently is slow to import: only a window with a verdict gets its HTML report.
    from ct_platform.monitoring.evidently_reports import data_drift_report

    report = paths.reports / "production" / f"drift-v{reference.version}.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    data_drift_report(
        _sample(pd.read_parquet(reference.train_path)), _sample(features), spec, report
    )
    return ProductionDrift(result.verdict, reference.version, len(window), result, report)


def _sample(frame: pd.DataFrame) -> pd.DataFrame:
    if len(frame) <= REPORT_SAMPLE_ROWS:
        return frame
    return frame.sample(REPORT_SAMPLE_ROWS, random_state=0)


@dataclass(frozen=True)
class ProductionPerformance:
    """`result` judges the rows `champion_version` answered, against its holdout figure."""

    champion_version: int
    result: PerformanceResult


def check_production_performance(spec: Spec, paths: Paths) -> ProductionPerformance | None:
    """The champion's metric on labelled live traffic vs its holdout; None without champion."""
    reference = load_champion_reference(paths)
    if reference is None:
        return None
    result = evaluate_performance(
        spec,
        reference.holdout_metric,
        model_version=str(reference.version),
        predictions_dir=paths.predictions,
        feedback_dir=paths.feedback,
    )
    return ProductionPerformance(reference.version, result)
