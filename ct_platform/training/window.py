"""The training window: the newest N valid batches, turned into a stored training set."""

from __future__ import annotations

from ct_platform.settings import Paths, Spec
from ct_platform.training.datasets import TrainingSetRef, save_training_set


class NoValidData(RuntimeError):
    """No batch has passed the data contract yet: there is nothing to train on."""


def build_window(
    keys_in_order: list[str], spec: Spec, paths: Paths, window_batches: int | None = None
) -> TrainingSetRef:
    """The training set from the newest valid batches among `keys_in_order`.

    `window_batches` overrides the spec's window, e.g. the shorter one of a drift retrain.
    """
    # pandas comes with these: loaded by the step, not by the code location
    from ct_platform.data.ingest import valid_batches
    from ct_platform.data.training_set import build_training_set, fingerprint

    size = window_batches or spec.evaluation.window_batches
    batches = valid_batches(paths, keys_in_order)[-size:]
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
    )
