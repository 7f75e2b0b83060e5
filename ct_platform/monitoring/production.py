"""Production checks over the prediction log: drift of live inputs, decay of live accuracy.

Both compare with the current champion's reference (see `champion_reference`) and return a
verdict that says why there is none when there is none (no champion, no reference for the
serving champion, too little traffic, too few labels), so a quiet period never reads as
"no drift".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ct_platform.monitoring.champion_reference import ChampionReference, load_champion_reference
from ct_platform.monitoring.drift import SAMPLE_ROWS, detect_drift
from ct_platform.monitoring.performance import PerformanceResult, evaluate_performance
from ct_platform.monitoring.prediction_log import summarise_window
from ct_platform.monitoring.results import DriftResult
from ct_platform.monitoring.sources import sample_parquet
from ct_platform.settings import Paths, Spec

# The HTML report runs full Evidently on random rows, this many per side; the verdict
# uses every row of the window (through its summaries).
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


NO_CHAMPION = "no champion yet: nothing to compare with"


def reference_of(champion: int | None, paths: Paths, note: str = "") -> ChampionReference | str:
    """The drift reference of `champion` (the version serving as champion, None: none yet),
    or why there is none to judge with. `note`: why it could not be rebuilt, if known.

    A reference that describes another version is never used: that would judge the
    champion's traffic against data it did not learn from.
    """
    if champion is None:
        return NO_CHAMPION
    reference = load_champion_reference(paths)
    if reference is not None and reference.version == champion:
        return reference
    held = "none" if reference is None else f"version {reference.version}'s"
    return (
        f"cannot judge: version {champion} serves as champion but the drift reference is "
        f"{held}{f' ({note})' if note else ''}"
    )


def check_production_drift(
    spec: Spec, paths: Paths, champion: int | None, note: str = ""
) -> ProductionDrift:
    """Live inputs vs `champion`'s training data (see `reference_of` for `champion`, `note`)."""
    reference = reference_of(champion, paths, note)
    if isinstance(reference, str):
        return ProductionDrift(reference, champion, 0)
    # All recent traffic counts: the inputs' distribution does not depend on which version
    # answered them (performance, in contrast, is judged on the champion's own rows).
    monitoring = spec.monitoring
    window = summarise_window(
        monitoring.window,
        spec.dataset,
        reference=reference.profile,
        sample_rows=SAMPLE_ROWS,
        report_rows=REPORT_SAMPLE_ROWS,
        directory=paths.predictions,
    )
    rows = window.summary.rows
    result = detect_drift(
        reference.profile,
        window.summary,
        spec.dataset,
        drift_share_threshold=monitoring.drift_share_threshold,
        min_rows=monitoring.min_window_rows,
        min_column_values=monitoring.min_column_values,
        max_invalid_share=monitoring.max_invalid_share,
    )
    if result.dataset_drift is None:
        return ProductionDrift(result.insufficient or "", reference.version, rows, result)
    # Evidently is slow to import: only a window with a verdict gets its HTML report.
    from ct_platform.monitoring.evidently_reports import data_drift_report

    report = paths.reports / "production" / f"drift-v{reference.version}.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    train = sample_parquet(reference.train_path, spec.dataset.feature_columns, REPORT_SAMPLE_ROWS)
    data_drift_report(train, window.sample, spec, report)
    return ProductionDrift(result.verdict, reference.version, rows, result, report)


@dataclass(frozen=True)
class ProductionPerformance:
    """`result` judges the rows `champion_version` answered, against its holdout figure."""

    champion_version: int
    result: PerformanceResult


def check_production_performance(
    spec: Spec, paths: Paths, champion: int | None, note: str = ""
) -> ProductionPerformance | str:
    """`champion`'s metric on labelled live traffic vs its holdout figure; without its
    reference, why there is no verdict (see `reference_of`)."""
    reference = reference_of(champion, paths, note)
    if isinstance(reference, str):
        return reference
    result = evaluate_performance(
        spec,
        reference.holdout_metric,
        model_version=str(reference.version),
        predictions_dir=paths.predictions,
        feedback_dir=paths.feedback,
    )
    return ProductionPerformance(reference.version, result)
