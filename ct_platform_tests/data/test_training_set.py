from __future__ import annotations

import pandas as pd
import pytest

from ct_platform.data.training_set import TrainingSetError, build_training_set, fingerprint
from ct_platform.settings import Spec


def _batches(rows: int, size: int) -> list[pd.DataFrame]:
    frame = pd.DataFrame({"age": range(rows), "y": [i % 2 for i in range(rows)]}, dtype="float64")
    return [frame.iloc[start : start + size] for start in range(0, rows, size)]


def test_holdout_is_the_newest_rows(spec: Spec) -> None:
    training_set = build_training_set(_batches(1000, 250), spec)
    assert (training_set.n_train, training_set.n_holdout) == (800, 200)
    assert training_set.train["age"].tolist() == list(range(800))
    assert training_set.holdout["age"].tolist() == list(range(800, 1000))


def test_holdout_rounds_up(spec: Spec) -> None:
    training_set = build_training_set(_batches(101, 50), spec)
    assert (training_set.n_train, training_set.n_holdout) == (80, 21)


def test_sorts_by_the_time_column_when_declared(spec: Spec) -> None:
    timed = spec.model_copy(
        update={"dataset": spec.dataset.model_copy(update={"time_column": "age"})}
    )
    newest_first = list(reversed(_batches(100, 25)))
    training_set = build_training_set(newest_first, timed)
    assert training_set.holdout["age"].tolist() == list(range(80, 100))


def test_too_few_rows_for_a_holdout(spec: Spec) -> None:
    with pytest.raises(TrainingSetError, match="too few for a 20% holdout"):
        build_training_set(_batches(30, 10), spec)


def test_no_batches_or_mismatched_columns(spec: Spec) -> None:
    with pytest.raises(TrainingSetError, match="no validated batches"):
        build_training_set([], spec)
    first, second = _batches(200, 100)
    with pytest.raises(TrainingSetError, match="batch 1 has columns"):
        build_training_set([first, second.rename(columns={"age": "years"})], spec)


def test_fingerprint_ignores_order_and_tracks_content() -> None:
    hashes = ["a" * 64, "b" * 64, "c" * 64]
    assert fingerprint(hashes) == fingerprint(reversed(hashes))
    assert fingerprint(hashes) == fingerprint(list(hashes))
    assert fingerprint(hashes) != fingerprint(hashes[:2])
    assert len(fingerprint(hashes)) == 64
    with pytest.raises(ValueError, match="no batches"):
        fingerprint([])


def test_a_redelivered_row_counts_once_and_natural_duplicates_stay(spec: Spec) -> None:
    first = pd.DataFrame({"age": [1.0, 1.0, 2.0, *range(10, 60)], "y": 0.0})
    # Three copies of age 1 (one more than `first` had), age 2 again, and new rows.
    second = pd.DataFrame({"age": [1.0, 1.0, 1.0, 2.0, *range(100, 150)], "y": 0.0})

    training_set = build_training_set([first, second], spec)

    rows = pd.concat([training_set.train, training_set.holdout])
    assert training_set.redelivered_rows == 3  # two copies of age 1 and one of age 2
    assert (rows["age"] == 1.0).sum() == 3  # natural duplicates: as many as one batch holds
    assert (rows["age"] == 2.0).sum() == 1
    assert len(rows) + training_set.holdout_in_train_dropped == 53 + 54 - 3


def test_holdout_rows_identical_to_training_rows_are_dropped(spec: Spec) -> None:
    ages = [*range(80), 5.0, 6.0, *range(200, 218)]  # two late copies of old rows
    training_set = build_training_set(
        [pd.DataFrame({"age": ages, "y": 1.0}, dtype="float64")], spec
    )

    assert training_set.n_train == 80
    assert training_set.holdout_in_train_dropped == 2
    assert training_set.holdout["age"].tolist() == list(range(200, 218))
