"""Assemble the training set from validated batches: a time-ordered train/holdout split.

The holdout is the newest rows, never a random sample: the model is judged on data from
after what it learned from, which is how it will be used.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from ct_platform.settings import Spec

# Fewer rows than this on either side make a metric (or a fit) meaningless.
MIN_SPLIT_ROWS = 10


class TrainingSetError(ValueError):
    """The batches cannot make a training set (none, mismatched columns, too few rows)."""


@dataclass(frozen=True)
class TrainingSet:
    train: pd.DataFrame
    holdout: pd.DataFrame

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_holdout(self) -> int:
        return len(self.holdout)


def build_training_set(batches: list[pd.DataFrame], spec: Spec) -> TrainingSet:
    """Concatenate cleaned batches (oldest first) and hold out the newest rows."""
    if not batches:
        raise TrainingSetError("no validated batches to build a training set from")
    columns = list(batches[0].columns)
    for position, batch in enumerate(batches[1:], start=1):
        if list(batch.columns) != columns:
            raise TrainingSetError(
                f"batch {position} has columns {list(batch.columns)}, batch 0 has {columns}"
            )
    rows = pd.concat(batches, ignore_index=True)
    time_column = spec.dataset.time_column
    if time_column is not None:
        # Stable sort: rows with equal times keep their arrival order.
        rows = rows.sort_values(time_column, kind="stable", ignore_index=True)
    fraction = spec.evaluation.holdout_fraction
    n_holdout = math.ceil(len(rows) * fraction)
    n_train = len(rows) - n_holdout
    if min(n_train, n_holdout) < MIN_SPLIT_ROWS:
        raise TrainingSetError(
            f"{len(rows)} rows are too few for a {fraction:.0%} holdout: it would leave "
            f"{n_train} training and {n_holdout} holdout rows (at least {MIN_SPLIT_ROWS} each)"
        )
    return TrainingSet(
        train=rows.iloc[:n_train].reset_index(drop=True),
        holdout=rows.iloc[n_train:].reset_index(drop=True),
    )


def fingerprint(content_hashes: Iterable[str]) -> str:
    """Order-independent sha256 of batch content hashes: same data, same fingerprint."""
    hashes = sorted(content_hashes)
    if not hashes:
        raise ValueError("fingerprint of no batches: there is no data to identify")
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()
