"""Write prediction-log and feedback files with the serving package's own writers, so the
reader is tested against the real format rather than a hand-made imitation of it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from ct_platform.serving.bundle import Prediction
from ct_platform.serving.feedback import FeedbackLog, LabelJudge, LabelRule, parse_feedback
from ct_platform.serving.prediction_log import PredictionLog, ScoredBatch
from ct_platform.serving.schema import MISSING_CATEGORY
from ct_platform.settings import DatasetSpec


def scored_batch(
    features: pd.DataFrame,
    dataset: DatasetSpec,
    *,
    request_id: str,
    ts: float,
    positive_proba: np.ndarray,
    slot: str = "stable",
    model_version: str = "1",
) -> ScoredBatch:
    """`features` scored as one multi-row request (rows are logged as `<request_id>:<i>`)."""
    columns = [_served_column(features[name], dataset, name) for name in dataset.feature_columns]
    proba = np.column_stack([1 - positive_proba, positive_proba])
    labels = (positive_proba > 0.5).astype(int)
    return ScoredBatch(
        request_id=request_id,
        ts=ts,
        slot=slot,
        model_version=model_version,
        column_names=dataset.feature_columns,
        columns=columns,
        prediction=Prediction(labels=labels, proba=proba, values=None),
        latency_ms=1.0,
    )


def write_log(directory: Path, batches: list[ScoredBatch]) -> list[Path]:
    """One segment per batch, each last modified when its batch was scored, as if the batches
    had arrived over time. Returns the segments in batch order.

    Each batch goes through its own writer into a staging folder and its segment is then
    moved in under a numbered name: how the writer groups batches into segments is its own
    business, and two writers started in the same second would share a segment name.
    """
    directory.mkdir(parents=True, exist_ok=True)
    segments = []
    for index, batch in enumerate(batches):
        staging = directory.parent / f"staging-{index}"
        log = PredictionLog(staging)
        log.start()
        log.submit(batch)
        log.close()
        [written] = staging.glob("*.jsonl")
        segment = written.rename(directory / f"{index:04d}-{written.name}")
        staging.rmdir()
        os.utime(segment, (batch.ts, batch.ts))
        segments.append(segment)
    return segments


def rows_of(batch: ScoredBatch) -> list[ScoredBatch]:
    """Each row of a multi-row `batch` as a one-row batch with id `<request_id>:<i>`: the
    `jsonl` of each is the line the writer logged for that row until 2026-11-30 (a line
    per row), and is what a reader must still make of the batch's record."""
    outputs = (batch.prediction.labels, batch.prediction.proba, batch.prediction.values)
    return [
        batch._replace(
            request_id=f"{batch.request_id}:{i}",
            columns=[column[i : i + 1] for column in batch.columns],
            prediction=Prediction(*(None if a is None else a[i : i + 1] for a in outputs)),
        )
        for i in range(batch.columns[0].shape[0])
    ]


BANK_LABELS = LabelRule(classes=(0, 1))


def post_feedback(
    directory: Path, labels: dict[str, int | float], rule: LabelRule = BANK_LABELS
) -> None:
    """Labels as the server records them, checked by `rule` (default: the bank model's
    classes 0 and 1; a regression model's `LabelRule(classes=None)`): the rule of the one
    version served, which answered requests the server no longer remembers."""
    body = orjson.dumps([{"request_id": key, "label": label} for key, label in labels.items()])
    FeedbackLog(directory).append(parse_feedback(body, LabelJudge(lambda: [rule])))


def _served_column(values: pd.Series, dataset: DatasetSpec, name: str) -> np.ndarray:
    # What the server scores: float64 with NaN for numerics, str with "" for a missing category.
    if dataset.columns[name].is_numeric:
        return values.to_numpy(dtype="float64", na_value=np.nan)
    return values.fillna(MISSING_CATEGORY).to_numpy(dtype=object)
