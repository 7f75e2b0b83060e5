"""Rows re-delivered in a re-cut file: flagged at ingest, counted once, never in the holdout.

The newcomer's case: after the demo's 11 bank batches, rows 36000-41187 landed again as
`late-delivery.csv` (new file content, so not a whole-file duplicate). The next window held
those rows twice and 35 % of its holdout rows were also training rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from ct_platform.data.ingest import Redelivery, find_valid_batch, ingest_batch
from ct_platform.data.training_set import row_hashes
from ct_platform.settings import Spec
from ct_platform.training.datasets import TrainingSetRef
from ct_platform.training.window import build_window

BATCH_ROWS = 4000


def ingest_bank_batches(
    count: int, spec: Spec, bank_frame: pd.DataFrame, write_batch: Callable[..., Path]
) -> list[str]:
    """The demo's replay: the bank file as batches of 4,000 rows, each ingested."""
    keys = []
    for index in range(count):
        key = f"batch-{index + 1:05d}.csv"
        write_batch(bank_frame.iloc[index * BATCH_ROWS : (index + 1) * BATCH_ROWS], key)
        assert ingest_batch(key, spec, spec.paths).passed
        keys.append(key)
    return keys


@pytest.fixture
def eleven_batches(
    spec: Spec, bank_frame: pd.DataFrame, write_batch: Callable[[pd.DataFrame, str], Path]
) -> list[str]:
    """The whole bank file, as the demo lands it."""
    return ingest_bank_batches(11, spec, bank_frame, write_batch)


def in_sample_holdout_rows(ref: TrainingSetRef) -> int:
    train, holdout = ref.load_train(), ref.load_holdout()
    return int(row_hashes(holdout).isin(set(row_hashes(train))).sum())


def test_a_late_delivery_is_flagged_with_figures_and_changes_no_window(
    spec: Spec, bank_frame: pd.DataFrame, write_batch, eleven_batches: list[str]
) -> None:
    before = build_window(eleven_batches, spec, spec.paths)
    whole_before = build_window(eleven_batches, spec, spec.paths, window_batches=12)
    write_batch(bank_frame.iloc[36000:41188], "late-delivery.csv")

    late = ingest_batch("late-delivery.csv", spec, spec.paths)

    # 3 of its rows are natural duplicates of rows batch 9 holds; batch 10 holds the rest of
    # its first 4,000 rows, batch 11 all of its last 1,188.
    assert late.valid.redelivered == Redelivery(
        rows=5188,
        share=1.0,
        earlier={"batch-00009.csv": 3, "batch-00010.csv": 3997, "batch-00011.csv": 1188},
    )
    keys = [*eleven_batches, "late-delivery.csv"]
    after = build_window(keys, spec, spec.paths)
    # Every row was landed before: the file takes no place in the window, the window is
    # the one already trained (same fingerprint: no new model).
    assert after.fingerprint == before.fingerprint
    assert after.batch_keys == before.batch_keys
    whole_after = build_window(keys, spec, spec.paths, window_batches=12)
    assert whole_after.load_train().equals(whole_before.load_train())
    assert whole_after.load_holdout().equals(whole_before.load_holdout())


def test_a_partly_new_recut_counts_its_repeated_rows_once(
    spec: Spec, bank_frame: pd.DataFrame, write_batch
) -> None:
    """A re-cut file repeating rows 38000-39999 of batch 10, with 188 rows of no other
    batch (rows 40000-40187; batch 11 is never landed here)."""
    keys = ingest_bank_batches(10, spec, bank_frame, write_batch)
    write_batch(bank_frame.iloc[38000:40188], "recut.csv")

    recut = ingest_batch("recut.csv", spec, spec.paths)

    assert recut.valid.redelivered.rows == 2000
    assert recut.valid.redelivered.earlier == {"batch-00010.csv": 2000}
    assert recut.valid.redelivered.share == pytest.approx(2000 / 2188)
    keys.append("recut.csv")
    ref = build_window(keys, spec, spec.paths, window_batches=11)
    # The window counts once exactly what ingest flagged, batch by batch: the re-cut's 2,000
    # rows and the few rows of each original batch identical to a row of an earlier one.
    flagged = sum(find_valid_batch(spec.paths, key).redelivered.rows for key in keys)
    assert ref.redelivered_rows == flagged
    kept = ref.train_rows + ref.holdout_rows + ref.holdout_in_train_dropped
    assert kept == 40000 + 2188 - flagged
    assert in_sample_holdout_rows(ref) == 0


def test_the_holdout_never_holds_a_training_row(spec: Spec, eleven_batches: list[str]) -> None:
    ref = build_window(eleven_batches, spec, spec.paths, window_batches=12)

    assert in_sample_holdout_rows(ref) == 0
    # Two holdout rows had an identical twin among the training rows (natural duplicates
    # within batch 9, on both sides of the split): dropped, and said so.
    assert ref.holdout_in_train_dropped == 2
    assert ref.holdout_rows == 8197
