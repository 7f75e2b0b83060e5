"""The platform's monitoring figures (production drift, live performance) as Prometheus gauges.

Why the model server exports them, read from JSON the monitor writes under CT_HOME:
the monitoring assets run in Dagster runs that end, and Prometheus scrapes long-lived HTTP
targets; a Prometheus textfile would need node_exporter's textfile collector, one more daemon
on every host. The model server is scraped already and shares CT_HOME with the monitor (the
prediction log it writes is the monitor's input), so at scrape time it reads the two small
files `production_drift` and `production_performance` write whole
(`CT_HOME/state/metrics/{drift,performance}.json`, see `ct_platform.monitoring.figures`):
no pandas, Evidently or Dagster in the server, figures as fresh as the last check, and each
check's own timestamp (`ct_*_check_timestamp_seconds`) so a monitor that stopped shows as
stale. Every replica exports the same figures: rules and panels take `max` over instances.

A figure without a verdict (too little traffic, too few labels) is not exported, so a quiet
period never reads as "no drift"; `ct_*_verdict` says whether there is one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# Under CT_HOME; the monitor (ct_platform.monitoring.figures) writes them, the server reads.
FIGURES_DIR = Path("state") / "metrics"
DRIFT_FILE = "drift.json"
PERFORMANCE_FILE = "performance.json"

Labels = tuple[tuple[str, str], ...]
Gauges = dict[str, tuple[str, list[tuple[Labels, float]]]]


def read_figures(home: Path, name: str) -> dict[str, Any] | None:
    """One figures file as written by the monitor; None when absent or unreadable (a scrape
    never fails on it: the staleness and verdict gauges show what is missing)."""
    try:
        return json.loads((home / FIGURES_DIR / name).read_text())
    except (OSError, ValueError):
        return None


def platform_gauges(home: Path) -> Gauges:
    """Drift and performance gauges from the files under `home`; empty before any check."""
    gauges: Gauges = {}
    drift = read_figures(home, DRIFT_FILE)
    if drift is not None:
        gauges.update(_drift_gauges(drift))
    performance = read_figures(home, PERFORMANCE_FILE)
    if performance is not None:
        gauges.update(_performance_gauges(performance))
    # A metric undefined on the rows at hand is no sample, rather than a NaN on a panel.
    return {
        name: (help_text, [(labels, v) for labels, v in samples if math.isfinite(v)])
        for name, (help_text, samples) in gauges.items()
    }


def _drift_gauges(figures: dict[str, Any]) -> Gauges:
    model = (("model_version", str(figures["champion_version"] or "none")),)
    has_verdict = figures["dataset_drift"] is not None
    gauges: Gauges = {
        "ct_drift_check_timestamp_seconds": (
            "Unix time of the last production drift check.",
            [((), float(figures["checked_at"]))],
        ),
        "ct_drift_verdict": (
            "1 when the last drift check had enough rows for a verdict.",
            [(model, float(has_verdict))],
        ),
        "ct_drift_share_threshold": (
            "The spec's drift_share_threshold: dataset drift at or above this share.",
            [(model, float(figures["drift_share_threshold"]))],
        ),
        "ct_drift_window_rows": (
            "Prediction-log rows in the last drift check's window.",
            [(model, float(figures["rows"]))],
        ),
    }
    if has_verdict:
        gauges["ct_drift_share"] = (
            "Share of tested feature columns that drifted (0-1).",
            [(model, float(figures["drift_share"]))],
        )
        gauges["ct_dataset_drift"] = (
            "1 when the drifted share reached the spec's drift_share_threshold.",
            [(model, float(figures["dataset_drift"]))],
        )
    columns = figures["columns"]
    gauges["ct_column_drift"] = (
        "1 when the column drifted in the last check (tested columns only).",
        [(_column(name, c), float(c["drift"])) for name, c in columns.items()],
    )
    gauges["ct_column_drift_score"] = (
        "The column's drift statistic (its method's score) in the last check.",
        [(_column(name, c), float(c["score"])) for name, c in columns.items()],
    )
    return gauges


def _column(name: str, column: dict[str, Any]) -> Labels:
    return (("column", name), ("method", str(column["method"])))


def _performance_gauges(figures: dict[str, Any]) -> Gauges:
    labels = (("model_version", str(figures["champion_version"])), ("metric", figures["metric"]))
    has_verdict = figures["decayed"] is not None
    gauges: Gauges = {
        "ct_performance_check_timestamp_seconds": (
            "Unix time of the last live performance check.",
            [((), float(figures["checked_at"]))],
        ),
        "ct_performance_verdict": (
            "1 when the last performance check had enough labels for a verdict.",
            [(labels, float(has_verdict))],
        ),
        "ct_performance_labelled_rows": (
            "Labelled live rows (feedback joined to predictions) in the last check.",
            [(labels, float(figures["n_labelled"]))],
        ),
        "ct_performance_decay_tolerance": (
            "The decay tolerance applied (monitoring.decay_tolerance), in the metric's units.",
            [(labels, float(figures["decay_tolerance"]))],
        ),
        "ct_performance_reference": (
            "The champion's primary metric on its holdout when it was promoted.",
            [(labels, float(figures["reference"]))],
        ),
    }
    if has_verdict:
        gauges["ct_performance_value"] = (
            "The champion's primary metric on labelled live traffic.",
            [(labels, float(figures["value"]))],
        )
        gauges["ct_performance_decay"] = (
            "How much worse than the holdout reference, in the metric's units (negative: better).",
            [(labels, float(figures["decay"]))],
        )
        gauges["ct_performance_decayed"] = (
            "1 when the decay is beyond the tolerance and significant at monitoring.decay_alpha.",
            [(labels, float(figures["decayed"]))],
        )
    return gauges
