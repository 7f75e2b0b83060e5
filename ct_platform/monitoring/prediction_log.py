"""Read the serving prediction log and the feedback labels into DataFrames.

Formats (docs/architecture.md, written by `ct_platform.serving.prediction_log` and
`ct_platform.serving.feedback`): `$CT_HOME/predictions/*.jsonl` holds one record per line,
`{"request_id", "ts", "slot", "model_version", "features": {col: value}, "output": {"label",
"proba"} | {"value"}, "latency_ms"}` for a scored row (every row until 2026-11-30, a one-row
request since), or a batch record for a multi-row request, the same keys with `"rows": n`
first and a list of n values for each feature and output (`prediction_records` expands it
into its n row records, ids `<request_id>:<i>`: every reader here sees rows);
`$CT_HOME/feedback/*.jsonl` holds `{"request_id", "label", "ts"}`. Missing feature values are
logged as null.

Segments are read newest first and reading stops as soon as the window is filled. That is
sound because a segment's records were all scored before its last write: no record in a
segment last modified at time m has `ts` > m. So once the window holds enough rows newer than
the next segment's modification time, no older segment can contribute. The segment being
written may end in a torn line (a crash between flushes); such lines are skipped.

The drift check reads the window in bounded memory (`summarise_window`): a first pass keeps
only the timestamps of the matching records, to find which ones the window holds (the same
ones `load_window` returns); a second pass reads exactly the same bytes again and feeds those
records, a page at a time, into the column summaries (`monitoring.summaries`). Memory is one
page and 8 bytes per scanned record, however long the window. The features go in as logged,
so values that break the spec's contract (a number outside min/max, an unknown category,
text in a numeric column) are counted and named by the drift check, never typed away.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd

from ct_platform.monitoring.frames import PREDICTION_COLUMN, PROBA_COLUMN, typed_features
from ct_platform.monitoring.sources import add_records, empty_summary
from ct_platform.monitoring.summaries import DataSummary
from ct_platform.settings import DatasetSpec, DriftWindow, Paths

if TYPE_CHECKING:
    from ct_platform.monitoring.drift import ReferenceProfile

# The shadow slot re-scores requests the stable slot already answered: counting it would
# count that traffic twice. Stable and candidate split the real traffic between them.
TRAFFIC_SLOTS = ("stable", "candidate")
LOG_COLUMNS = ["request_id", "ts", "slot", "model_version"]
PREDICTION_KEYS = frozenset([*LOG_COLUMNS, "features", "output"])
FEEDBACK_KEYS = frozenset(["request_id", "label", "ts"])

# Records typed and summarised at a time by `summarise_window`.
PAGE_ROWS = 50_000

Record = dict[str, Any]


@dataclass(frozen=True)
class WindowSummary:
    """The window's feature summaries and a uniform sample of its rows (typed features)."""

    summary: DataSummary
    sample: pd.DataFrame


def load_window(
    window: DriftWindow,
    dataset: DatasetSpec,
    *,
    directory: Path | None = None,
    now: float | None = None,
    slots: Collection[str] = TRAFFIC_SLOTS,
) -> pd.DataFrame:
    """The newest logged rows within `window` (last `rows` rows and/or last `minutes`).

    Columns: the spec's features typed like a cleaned frame (sentinels and nulls -> NaN),
    then `request_id`, `ts`, `slot`, `model_version`, `prediction` (label, or value for
    regression) and `prediction_proba` (classification; NaN when not logged). Oldest first.
    """
    records = read_predictions(window, directory=directory, now=now, slots=slots)
    return records_frame(records, dataset)


def read_predictions(
    window: DriftWindow,
    *,
    directory: Path | None = None,
    now: float | None = None,
    slots: Collection[str] = TRAFFIC_SLOTS,
    request_ids: Collection[str] | None = None,
) -> list[Record]:
    """Raw records in `window`, oldest first; only `request_ids` when given."""
    directory = Paths.from_env().predictions if directory is None else directory
    since = _since(window, now)
    collected: list[Record] = []
    segments = _segments_newest_first(directory)
    for index, (path, _modified) in enumerate(segments):
        raw = _read_bytes(path)
        collected.extend(
            record
            for record in prediction_records(raw or b"", slots, since)
            if request_ids is None or record["request_id"] in request_ids
        )
        older = segments[index + 1][1] if index + 1 < len(segments) else -math.inf
        if older < since or _filled(collected, window.rows, older):
            break
    collected.sort(key=lambda record: record["ts"])
    return collected if window.rows is None else collected[-window.rows :]


def records_frame(records: list[Record], dataset: DatasetSpec) -> pd.DataFrame:
    """Prediction-log records as a frame (see `load_window` for the columns)."""
    features = pd.DataFrame([record["features"] for record in records])
    if not records:
        features = pd.DataFrame(columns=dataset.feature_columns)
    frame = typed_features(features, dataset, where="prediction log")
    for column in LOG_COLUMNS:
        frame[column] = [record[column] for record in records]
    outputs = [record["output"] for record in records]
    key = "value" if dataset.task == "regression" else "label"
    frame[PREDICTION_COLUMN] = [output.get(key) for output in outputs]
    if dataset.task == "classification":
        proba = [output.get("proba") for output in outputs]
        frame[PROBA_COLUMN] = pd.to_numeric(pd.Series(proba, dtype=object)).astype("float64")
    return frame


def summarise_window(
    window: DriftWindow,
    dataset: DatasetSpec,
    *,
    reference: ReferenceProfile,
    sample_rows: int,
    report_rows: int,
    directory: Path | None = None,
    now: float | None = None,
    slots: Collection[str] = TRAFFIC_SLOTS,
) -> WindowSummary:
    """Summaries of the feature columns of the rows `load_window` would return, read in
    bounded memory, plus `report_rows` of those rows drawn at random (for the HTML report).
    Features absent from every logged record count as all missing."""
    directory = Paths.from_env().predictions if directory is None else directory
    since = _since(window, now)
    plan = _window_plan(window, directory, since, slots)
    total = sum(int(keep.sum()) for _, _, keep in plan)
    rng = np.random.default_rng(0)
    picked = set(rng.choice(total, min(report_rows, total), replace=False).tolist())
    summary = empty_summary(dataset, sample_rows, reference)
    page: list[Record] = []
    kept: list[Record] = []
    position = 0
    for path, size, keep in plan:
        raw = _read_bytes(path)
        records = prediction_records(raw[:size] if raw else b"", slots, since)
        for record, wanted in zip(records, keep, strict=False):
            if not wanted:
                continue
            page.append(record["features"])
            if position in picked:
                kept.append(record["features"])
            position += 1
            if len(page) == PAGE_ROWS:
                _add_page(summary, page, dataset)
                page = []
    _add_page(summary, page, dataset)
    return WindowSummary(summary, _typed_page(kept, dataset))


def _window_plan(
    window: DriftWindow, directory: Path, since: float, slots: Collection[str]
) -> list[tuple[Path, int, np.ndarray]]:
    """Per segment read (newest first): its path, the bytes read, and which of its matching
    records (in file order) the window holds. Chosen as `read_predictions` chooses."""
    scanned: list[tuple[Path, int, np.ndarray]] = []
    segments = _segments_newest_first(directory)
    for index, (path, _modified) in enumerate(segments):
        raw = _read_bytes(path)
        if raw is None:
            continue
        stamps = _stamps(raw, slots, since)
        scanned.append((path, len(raw), stamps))
        older = segments[index + 1][1] if index + 1 < len(segments) else -math.inf
        if older < since:
            break
        if window.rows is not None:
            newer = sum(int(np.count_nonzero(ts >= older)) for _, _, ts in scanned)
            if newer >= window.rows:
                break
    if window.rows is None:
        return [(path, size, np.ones(len(ts), dtype=bool)) for path, size, ts in scanned]
    # Newest `rows` by ts, ties in reading order: the stable sort `read_predictions` uses.
    stamps = np.concatenate([ts for _, _, ts in scanned]) if scanned else np.empty(0)
    keep = np.zeros(len(stamps), dtype=bool)
    keep[np.argsort(stamps, kind="stable")[len(stamps) - min(window.rows, len(stamps)) :]] = True
    bounds = np.cumsum([0] + [len(ts) for _, _, ts in scanned])
    return [
        (path, size, keep[start:end])
        for (path, size, _), start, end in zip(scanned, bounds[:-1], bounds[1:], strict=True)
    ]


def _add_page(summary: DataSummary, page: list[Record], dataset: DatasetSpec) -> None:
    # The features as logged: a value outside the contract is counted there, not typed away.
    if page:
        add_records(summary, page, dataset)


def _typed_page(features: list[Record], dataset: DatasetSpec) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(features, columns=dataset.feature_columns)
    return typed_features(frame, dataset, where="prediction log")


def load_feedback(directory: Path | None = None) -> pd.DataFrame:
    """All feedback as `request_id`, `label`, `ts`; the latest label per request id wins."""
    directory = Paths.from_env().feedback if directory is None else directory
    records = [
        record
        for path, _ in _segments_newest_first(directory)
        for record in _read_records(path, FEEDBACK_KEYS)
    ]
    frame = pd.DataFrame(records, columns=["request_id", "label", "ts"])
    frame = frame.sort_values("ts", kind="stable")
    return frame.drop_duplicates("request_id", keep="last").reset_index(drop=True)


def _since(window: DriftWindow, now: float | None) -> float:
    if window.minutes is None:
        return -math.inf
    return (time.time() if now is None else now) - window.minutes * 60


def _filled(collected: list[Record], rows: int | None, older_than: float) -> bool:
    """Enough rows that no record from a segment last written at `older_than` can displace."""
    if rows is None:
        return False
    newer = sum(1 for record in collected if record["ts"] >= older_than)
    return newer >= rows


def _segments_newest_first(directory: Path) -> list[tuple[Path, float]]:
    if not directory.is_dir():
        return []
    with os.scandir(directory) as entries:
        segments = [
            (Path(entry.path), entry.stat().st_mtime)
            for entry in entries
            if entry.name.endswith(".jsonl") and entry.is_file()
        ]
    return sorted(segments, key=lambda segment: segment[1], reverse=True)


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:  # rotated away or removed between listing and reading
        return None


def prediction_records(
    raw: bytes, slots: Collection[str] | None = None, since: float = -math.inf
) -> Iterator[Record]:
    """The row records in a segment's bytes, in file order, a batch record expanded into
    its rows; only those of `slots` (None: every slot) scored at or after `since`."""
    for record in _lines(raw, slots, since):
        if "rows" in record:
            yield from _batch_rows(record)
        else:
            yield record


def _lines(raw: bytes, slots: Collection[str] | None, since: float) -> Iterator[Record]:
    """The prediction records (row or batch) of `slots` scored at or after `since`; a batch
    record whose columns do not all hold `rows` values is not ours to interpret."""
    for record in _parse_records(raw, PREDICTION_KEYS):
        if (
            (slots is None or record["slot"] in slots)
            and record["ts"] >= since
            and ("rows" not in record or _well_formed_batch(record))
        ):
            yield record


def _well_formed_batch(batch: Record) -> bool:
    rows, features, output = batch["rows"], batch["features"], batch["output"]
    if type(rows) is not int or type(features) is not dict or type(output) is not dict:
        return False
    columns = [*features.values(), *output.values()]
    return all(type(values) is list and len(values) == rows for values in columns)


def _batch_rows(batch: Record) -> Iterator[Record]:
    """A batch record's rows as the row records a multi-row request logged until
    2026-11-30: the same keys in the same order, ids `<request_id>:<i>`."""
    features, output = batch["features"], batch["output"]
    request_id, ts, slot, version = (batch[key] for key in LOG_COLUMNS)
    latency = batch.get("latency_ms")
    # Row dicts made by C-level maps over the columns (the Python loop only assembles).
    ids = map(f"{request_id}:".__add__, map(str, range(batch["rows"])))
    rows = map(dict, map(zip, repeat(list(features)), zip(*features.values(), strict=True)))
    outputs = map(dict, map(zip, repeat(list(output)), zip(*output.values(), strict=True)))
    for row_id, row, outcome in zip(ids, rows, outputs, strict=True):
        yield {
            "request_id": row_id,
            "ts": ts,
            "slot": slot,
            "model_version": version,
            "features": row,
            "output": outcome,
            "latency_ms": latency,
        }


def _stamps(raw: bytes, slots: Collection[str], since: float) -> np.ndarray:
    """The `ts` of each row record `prediction_records` yields, without building them."""
    lines = [(record["ts"], record.get("rows", 1)) for record in _lines(raw, slots, since)]
    if not lines:
        return np.empty(0)
    ts, counts = zip(*lines, strict=True)
    return np.repeat(np.array(ts, dtype=float), counts)


def _read_records(path: Path, keys: frozenset[str]) -> Iterator[Record]:
    raw = _read_bytes(path)
    return _parse_records(raw, keys) if raw else iter(())


def _parse_records(raw: bytes, keys: frozenset[str]) -> Iterator[Record]:
    """The records that have all of `keys`; anything else is not ours to interpret."""
    for line in raw.splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a torn last line from a crash mid-write
        if isinstance(record, dict) and keys <= record.keys():
            yield record
