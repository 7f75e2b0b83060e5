"""Bare training baseline: the platform's training job as one hand-wired script.

No Dagster, no MLflow: read the bank CSV in the time-ordered 4,000-row batches the simulator
lands, keep the newest `evaluation.window_batches`, check them with plain pandas, clean them,
fit the spec's pipeline, score it on the newest rows and save it with skops. What the
platform costs on top of this is orchestration, tracking and the data contract's figures.

    .venv/bin/python benchmarks/training/bare.py [spec.yaml]
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ct_platform.registry import skops_types
from ct_platform.settings import Spec, load_spec
from ct_platform.training.evaluate import score
from ct_platform.training.pipeline import build_pipeline

REPO_ROOT = Path(__file__).resolve().parents[2]
BANK_CSV = REPO_ROOT / "data" / "bank_marketing.csv.gz"
# The simulator lands the file in batches of this many rows.
BATCH_ROWS = 4000


def read_window(csv_path: Path, spec: Spec) -> list[pd.DataFrame]:
    """The newest `window_batches` batches of the file, oldest first."""
    window: deque[pd.DataFrame] = deque(maxlen=spec.evaluation.window_batches)
    reader = pd.read_csv(csv_path, sep=spec.dataset.separator, chunksize=BATCH_ROWS)
    with reader:
        window.extend(reader)
    return list(window)


def validate(batch: pd.DataFrame, spec: Spec) -> None:
    """What a hand-written script checks: columns present, numbers numeric and in range,
    categories known, labels known. Raises ValueError on the first problem."""
    dataset = spec.dataset
    missing = [c for c in [*dataset.columns, dataset.target] if c not in batch.columns]
    if missing:
        raise ValueError(f"missing columns {missing}")
    for name, column in dataset.columns.items():
        values = batch[name].dropna()
        if column.is_numeric:
            numbers = pd.to_numeric(values, errors="coerce")
            if numbers.isna().any():
                raise ValueError(f"{name}: non-numeric values")
            low = -math.inf if column.min is None else column.min
            high = math.inf if column.max is None else column.max
            if not numbers.between(low, high).all():
                raise ValueError(f"{name}: values outside [{low}, {high}]")
        elif column.categories is not None and not values.isin(column.categories).all():
            raise ValueError(f"{name}: unknown categories")
    if (
        dataset.target_labels is not None
        and not batch[dataset.target].isin(dataset.target_labels).all()
    ):
        raise ValueError(f"{dataset.target}: unknown labels")


def clean(batch: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """Spec columns in spec order plus the target; sentinels as NaN, leaked columns gone."""
    dataset = spec.dataset
    cleaned = batch.drop(columns=dataset.drop_columns)[[*dataset.columns, dataset.target]]
    for name in dataset.numeric_features:
        sentinels = dataset.columns[name].sentinels
        cleaned[name] = cleaned[name].astype("float64").replace(sentinels, np.nan)
    for name in dataset.categorical_features:
        cleaned[name] = cleaned[name].map(str, na_action="ignore").astype(object)
    return cleaned


def _timed(timings: dict[str, float], step: str, work: Callable[[], object]) -> object:
    started = time.perf_counter()
    result = work()
    timings[f"{step}_s"] = time.perf_counter() - started
    return result


def run_bare(spec_path: Path, csv_path: Path = BANK_CSV) -> dict[str, float]:
    """Run the whole job once; return seconds per step and what it produced."""
    spec = load_spec(spec_path)
    dataset = spec.dataset
    timings: dict[str, float] = {}
    started = time.perf_counter()
    batches = _timed(timings, "read", lambda: read_window(csv_path, spec))
    _timed(timings, "validate", lambda: [validate(batch, spec) for batch in batches])
    rows = _timed(
        timings, "clean", lambda: pd.concat([clean(b, spec) for b in batches], ignore_index=True)
    )
    # The newest rows are the holdout: judged on data after what it learned from.
    n_train = len(rows) - math.ceil(len(rows) * spec.evaluation.holdout_fraction)
    train, holdout = rows.iloc[:n_train], rows.iloc[n_train:]
    pipeline = build_pipeline(spec)
    _timed(
        timings, "fit", lambda: pipeline.fit(train[dataset.feature_columns], train[dataset.target])
    )
    metrics = _timed(timings, "evaluate", lambda: score(pipeline, holdout, spec))
    with tempfile.TemporaryDirectory(prefix="ct-bare-") as folder:
        model_path = Path(folder) / "model.skops"
        _timed(timings, "save", lambda: skops_types.save(pipeline, model_path))
        model_bytes = model_path.stat().st_size
    timings["total_s"] = time.perf_counter() - started
    primary = spec.evaluation.primary_metric
    return {
        **timings,
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        primary: metrics[primary],
        "model_bytes": model_bytes,
    }


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss can carry over a parent's across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str]) -> int:
    spec_path = Path(argv[0]) if argv else REPO_ROOT / "ct_platform.yaml"
    started = time.perf_counter()
    result = run_bare(spec_path)
    wall = time.perf_counter() - started
    for key, value in result.items():
        print(f"{key:>16}: {value:.4f}" if isinstance(value, float) else f"{key:>16}: {value}")
    print(f"{'wall_s':>16}: {wall:.2f} (after imports)")
    print(f"{'peak_rss_mb':>16}: {peak_rss_mb():.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
