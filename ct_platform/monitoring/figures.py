"""Write the monitoring figures the model server exports on /metrics.

`production_drift` and `production_performance` each write their own file whole (two checks
running at once never mix their figures), in the shape `serving.platform_figures` reads;
see that module for why the server, not a textfile, exports them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ct_platform.atomic import write_atomically
from ct_platform.monitoring.performance import PerformanceResult
from ct_platform.monitoring.production import ProductionDrift
from ct_platform.serving.platform_figures import DRIFT_FILE, FIGURES_DIR, PERFORMANCE_FILE
from ct_platform.settings import Paths


def write_drift_figures(paths: Paths, drift: ProductionDrift, threshold: float) -> Path:
    """`drift`'s figures, now, with the spec's `drift_share_threshold` (so an alert compares
    with the rule the platform itself applies); tested columns only."""
    result = drift.result
    figures = {
        "checked_at": time.time(),
        "drift_share_threshold": threshold,
        "champion_version": drift.champion_version,
        "status": drift.status,
        "rows": drift.rows,
        "drift_share": None if result is None else result.drift_share,
        "dataset_drift": None if result is None else result.dataset_drift,
        "columns": {}
        if result is None
        else {
            name: {"method": column.method, "score": column.score, "drift": column.drift}
            for name, column in result.columns.items()
        },
        # Contract violations in the window: column -> what is wrong, with counts.
        "violations": {}
        if result is None
        else {name: found.describe() for name, found in result.violations.items()},
    }
    return _write(paths, DRIFT_FILE, figures)


def write_performance_figures(
    paths: Paths, performance: PerformanceResult, champion_version: int
) -> Path:
    """`performance`'s figures, now, with the decay tolerance it applied (metric units)."""
    figures = {
        "checked_at": time.time(),
        "champion_version": champion_version,
        "decay_tolerance": performance.tolerance,
    }
    return _write(paths, PERFORMANCE_FILE, {**figures, **performance.to_dict()})


def _write(paths: Paths, name: str, figures: dict[str, object]) -> Path:
    path = paths.home / FIGURES_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(figures))
    return path
