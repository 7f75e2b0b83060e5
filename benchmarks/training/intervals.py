"""Cost of the model card's holdout intervals (`comparison.metric_interval`) by holdout size.

    nice .venv/bin/python benchmarks/training/intervals.py [--rows 3000 200000 1000000]

Synthetic predictions (seeded): a two-class scorer like the bank's (11 % positives) and a
regressor with Student-t errors. Prints, per metric and holdout size, the method, the
interval and the median wall time of 3 calls in this process (the first call's imports
excluded by a warm-up on a small holdout).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ct_platform.training.comparison import CARD_ALPHA, metric_interval
from ct_platform.training.evaluate import Predictions

CLASSIFICATION = ("accuracy", "balanced_accuracy", "roc_auc", "f1")
REGRESSION = ("mae", "rmse", "r2")


def holdouts(rows: int) -> tuple[Predictions, Predictions]:
    rng = np.random.default_rng(rows)
    target = (rng.random(rows) < 0.11).astype(int)
    positive = 1 / (1 + np.exp(-(1.2 * target + rng.normal(size=rows) - 1)))
    scorer = Predictions(
        target,
        (positive > 0.5).astype(int),
        np.column_stack([1 - positive, positive]),
        np.array([0, 1]),
    )
    truth = rng.normal(100, 20, rows)
    return scorer, Predictions(truth, truth + 10 * rng.standard_t(5, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[3_000, 200_000, 1_000_000])
    rows_list = parser.parse_args().rows
    warm_scorer, warm_regressor = holdouts(500)
    for metric in CLASSIFICATION + REGRESSION:
        metric_interval(warm_scorer if metric in CLASSIFICATION else warm_regressor, metric, 0.05)
    print(f"{'rows':>9}  {'metric':<18} {'method':<17} {'interval':<25} median s")
    for rows in rows_list:
        scorer, regressor = holdouts(rows)
        for metric in CLASSIFICATION + REGRESSION:
            holdout = scorer if metric in CLASSIFICATION else regressor
            times = []
            for _ in range(3):
                started = time.perf_counter()
                low, high, method = metric_interval(holdout, metric, CARD_ALPHA)
                times.append(time.perf_counter() - started)
            shown = f"{low:.4f} to {high:.4f}"
            print(
                f"{rows:>9,}  {metric:<18} {method:<17} {shown:<25} {statistics.median(times):.3f}"
            )


if __name__ == "__main__":
    main()
