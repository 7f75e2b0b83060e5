"""Assemble the training set from validated batches: a time-ordered train/holdout split.

The holdout is the newest rows, never a random sample: the model is judged on data from
after what it learned from, which is how it will be used.

Rows are compared by content (`row_hashes`: every column, features and target):

- A row re-delivered in a later batch (a re-cut file repeating rows landed before) counts
  once: per row content, the window keeps as many copies as the one batch holding the most
  (a multiset union of the batches). Identical rows within one batch are natural
  duplicates (two clients with the same attributes and outcome) and are all kept.
- The holdout never holds a row identical to a training row: such holdout rows are dropped,
  not moved into training. Moving them would add weight to rows the model already sees and
  put the newest rows on the training side; dropping keeps the split time-ordered and the
  judgement out-of-sample. The count is reported (`holdout_in_train_dropped`).
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
    # Rows of later batches already delivered by earlier batches of the window: counted once.
    redelivered_rows: int = 0
    # Holdout rows identical to a training row, dropped so the holdout stays out-of-sample.
    holdout_in_train_dropped: int = 0

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_holdout(self) -> int:
        return len(self.holdout)


def build_training_set(batches: list[pd.DataFrame], spec: Spec) -> TrainingSet:
    """Concatenate cleaned batches (oldest first), re-delivered rows once, and hold out the
    newest rows, minus any identical to a training row.

    Raises `TrainingSetError` for no batches, mismatched columns, or fewer than
    `MIN_SPLIT_ROWS` rows on either side.
    """
    if not batches:
        raise TrainingSetError("no validated batches to build a training set from")
    columns = list(batches[0].columns)
    for position, batch in enumerate(batches[1:], start=1):
        if list(batch.columns) != columns:
            raise TrainingSetError(
                f"batch {position} has columns {list(batch.columns)}, batch 0 has {columns}"
            )
    kept = without_redelivered_rows(batches)
    rows = pd.concat(kept, ignore_index=True)
    redelivered = sum(map(len, batches)) - len(rows)
    time_column = spec.dataset.time_column
    if time_column is not None:
        # Stable sort: rows with equal times keep their arrival order.
        rows = rows.sort_values(time_column, kind="stable", ignore_index=True)
    fraction = spec.evaluation.holdout_fraction
    n_holdout = math.ceil(len(rows) * fraction)
    n_train = len(rows) - n_holdout
    train, holdout = rows.iloc[:n_train], rows.iloc[n_train:]
    in_train = row_hashes(holdout).isin(set(row_hashes(train))).to_numpy()
    holdout = holdout[~in_train]
    if min(len(train), len(holdout)) < MIN_SPLIT_ROWS:
        raise TrainingSetError(
            f"{len(rows)} rows are too few for a {fraction:.0%} holdout: it would leave "
            f"{len(train)} training and {len(holdout)} holdout rows (at least "
            f"{MIN_SPLIT_ROWS} each; {int(in_train.sum())} holdout rows identical to training "
            "rows dropped)"
        )
    return TrainingSet(
        train=train.reset_index(drop=True),
        holdout=holdout.reset_index(drop=True),
        redelivered_rows=redelivered,
        holdout_in_train_dropped=int(in_train.sum()),
    )


def row_hashes(frame: pd.DataFrame) -> pd.Series:
    """One uint64 per row over every column's value (not the index): equal rows, equal hash.

    Categorical columns hash by value, not by code, so batches with different category sets
    agree.
    """
    return pd.util.hash_pandas_object(frame, index=False, categorize=False)


def without_redelivered_rows(batches: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Each batch (oldest first) without the rows an earlier batch already delivered.

    Per row content, a batch keeps only the copies beyond the most any earlier batch held:
    identical rows within one batch all stay, a re-delivered row counts once.
    """
    most_copies: dict[int, int] = {}
    kept = []
    for batch in batches:
        hashes = row_hashes(batch)
        copy_number = hashes.groupby(hashes, sort=False).cumcount()
        earlier = hashes.map(lambda value: most_copies.get(value, 0))
        kept.append(batch[(copy_number >= earlier).to_numpy()])
        for value, copies in hashes.value_counts().items():
            most_copies[value] = max(most_copies.get(value, 0), copies)
    return kept


def fingerprint(content_hashes: Iterable[str]) -> str:
    """Order-independent sha256 of batch content hashes: same data, same fingerprint."""
    hashes = sorted(content_hashes)
    if not hashes:
        raise ValueError("fingerprint of no batches: there is no data to identify")
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()
