"""The training window: the newest N valid batches, turned into a stored training set.

"Newest" is by the spec's `time_column` when it has one (the batch's newest parsed time),
by landing order otherwise. Content re-landed under a name (`<name>@<hash12>`) supersedes
the earlier batch of that name: only the latest content of a landed name trains. A batch
whose every row was landed in earlier batches (a re-cut file) takes no place in the window;
rows re-delivered within a partly new batch count once (`data.training_set`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ct_platform.data.landing import landed_name
from ct_platform.settings import Paths, Spec
from ct_platform.training.datasets import TrainingSetRef, save_training_set

if TYPE_CHECKING:  # pandas comes with it: loaded by the step, not by the code location
    from ct_platform.data.ingest import ValidBatch


class NoValidData(RuntimeError):
    """No batch has passed the data contract yet: there is nothing to train on."""


def build_window(
    keys_in_order: list[str], spec: Spec, paths: Paths, window_batches: int | None = None
) -> TrainingSetRef:
    """The training set from the newest valid batches among `keys_in_order` (landing order).

    `window_batches` overrides the spec's window, e.g. the shorter one of a drift retrain.
    """
    # pandas comes with these: loaded by the step, not by the code location
    from ct_platform.data.ingest import valid_batches
    from ct_platform.data.training_set import build_training_set, fingerprint

    size = window_batches or spec.evaluation.window_batches
    adding_rows = [b for b in valid_batches(paths, keys_in_order) if not b.wholly_redelivered]
    batches = ordered_batches(adding_rows, spec)[-size:]
    if not batches:
        raise NoValidData(
            f"no valid data: {len(keys_in_order)} batch(es) landed in {spec.landing_dir}, "
            "none passed the data contract (see CT_HOME/quarantine for the reasons)"
        )
    training_set = build_training_set([batch.read() for batch in batches], spec)
    return save_training_set(
        training_set.train,
        training_set.holdout,
        fingerprint=fingerprint(batch.content_hash for batch in batches),
        batch_keys=[batch.key for batch in batches],
        newest_batch=batches[-1].parquet_path,
        paths=paths,
        redelivered_rows=training_set.redelivered_rows,
        holdout_in_train_dropped=training_set.holdout_in_train_dropped,
    )


def ordered_batches(batches: list[ValidBatch], spec: Spec) -> list[ValidBatch]:
    """Latest content per landed name, oldest first (by time column, else landing order)."""
    latest: dict[str, ValidBatch] = {}
    for batch in batches:
        latest.pop(landed_name(batch.key), None)  # re-insert: keeps the later landing position
        latest[landed_name(batch.key)] = batch
    kept = list(latest.values())
    time_column = spec.dataset.time_column
    if time_column is None:
        return kept
    # Stable: batches with the same newest time keep their landing order.
    return sorted(kept, key=lambda batch: _newest_time(batch, time_column))


def _newest_time(batch: ValidBatch, time_column: str) -> float:
    if batch.newest_time is not None:
        return batch.newest_time
    from ct_platform.data.ingest import newest_time

    # A batch stored before sidecars recorded times: read its time from the batch itself.
    value = newest_time(batch.read(), time_column)
    return float("-inf") if value is None else value
