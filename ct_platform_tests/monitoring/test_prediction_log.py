"""Reading the serving prediction log: typed windows by rows and by minutes, newest first."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from ct_platform.monitoring import prediction_log
from ct_platform.monitoring.drift import ReferenceProfile, detect_drift
from ct_platform.monitoring.frames import PREDICTION_COLUMN, PROBA_COLUMN
from ct_platform.monitoring.prediction_log import (
    load_feedback,
    load_window,
    read_predictions,
    summarise_window,
)
from ct_platform.serving.prediction_log import ScoredBatch, jsonl
from ct_platform.settings import DriftWindow, Paths, Spec
from ct_platform_tests.monitoring.serving_logs import (
    post_feedback,
    rows_of,
    scored_batch,
    write_log,
)

NOW = 1_800_000_000.0


@pytest.fixture
def rows(bank_features: pd.DataFrame) -> pd.DataFrame:
    return bank_features.iloc[:300].reset_index(drop=True)


@pytest.fixture
def hourly(spec: Spec, rows: pd.DataFrame) -> list[ScoredBatch]:
    """Three requests of 100 rows, an hour apart, the newest at NOW."""
    return [
        scored_batch(
            rows.iloc[hour * 100 : (hour + 1) * 100],
            spec.dataset,
            request_id=f"req{hour}",
            ts=NOW - (2 - hour) * 3600,
            positive_proba=np.linspace(0, 1, 100),
        )
        for hour in range(3)
    ]


def test_last_rows_typed_like_a_cleaned_frame(spec: Spec, rows, hourly) -> None:
    write_log(Paths.from_env().predictions, hourly)
    frame = load_window(DriftWindow(rows=150), spec.dataset, now=NOW)

    features = spec.dataset.feature_columns
    assert len(frame) == 150
    assert list(frame.columns[: len(features)]) == features
    pd.testing.assert_frame_equal(frame[features], rows.iloc[150:].reset_index(drop=True))
    assert frame["request_id"].iloc[0] == "req1:50" and frame["request_id"].iloc[-1] == "req2:99"
    assert frame["pdays"].isna().all()  # 999 "never contacted" was served and logged as NaN
    assert frame["job"].map(type).eq(str).all() and frame["age"].dtype == "float64"
    assert frame[PREDICTION_COLUMN].isin([0, 1]).all()
    assert frame[PROBA_COLUMN].between(0, 1).all()


def test_last_minutes(spec: Spec, hourly) -> None:
    write_log(Paths.from_env().predictions, hourly)
    frame = load_window(DriftWindow(rows=None, minutes=90), spec.dataset, now=NOW)
    assert len(frame) == 200
    assert set(frame["request_id"].str.split(":").str[0]) == {"req1", "req2"}


def test_reading_stops_once_the_window_is_filled(spec: Spec, rows, hourly) -> None:
    """A segment last written before the window's oldest row is never opened. To see that,
    the oldest segment here claims rows scored after NOW (impossible in a real log): had it
    been read, they would be the newest rows of the window."""
    impossible = scored_batch(
        rows.iloc[:10],
        spec.dataset,
        request_id="stale",
        ts=NOW - 3 * 86_400,
        positive_proba=np.full(10, 0.5),
    )
    [stale_segment, *_] = write_log(Paths.from_env().predictions, [impossible, *hourly])
    stale_segment.write_bytes(stale_segment.read_bytes().replace(b'"ts":', b'"ts":9'))

    frame = load_window(DriftWindow(rows=100), spec.dataset, now=NOW)
    assert set(frame["request_id"].str.split(":").str[0]) == {"req2"}
    frame = load_window(DriftWindow(rows=1000), spec.dataset, now=NOW)
    assert len(frame) == 310  # a window larger than the log reads every segment


def test_shadow_rows_and_torn_lines_are_skipped(spec: Spec, rows, hourly) -> None:
    shadow = scored_batch(
        rows.iloc[:5],
        spec.dataset,
        request_id="shadow",
        ts=NOW,
        positive_proba=np.full(5, 0.5),
        slot="shadow",
    )
    segments = write_log(Paths.from_env().predictions, [*hourly, shadow])
    with segments[-1].open("ab") as handle:
        handle.write(b'{"request_id": "torn", "ts": 1')  # a crash mid-write

    frame = load_window(DriftWindow(rows=1000), spec.dataset, now=NOW)
    assert len(frame) == 300
    assert set(frame["slot"]) == {"stable"}


@pytest.mark.parametrize(
    "window", [DriftWindow(rows=150), DriftWindow(rows=None, minutes=90), DriftWindow(rows=1000)]
)
def test_streamed_window_summarises_exactly_the_rows_of_load_window(
    spec: Spec, rows, hourly, window: DriftWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bounded-memory reading (two passes, pages of 40 rows here) sees the same rows as
    `load_window`, shadow traffic and a torn last line included, and gives the same drift
    result as the frame. The report sample is a subset of those rows."""
    shadow = scored_batch(
        rows.iloc[:5], spec.dataset, request_id="shadow", ts=NOW, slot="shadow",
        positive_proba=np.full(5, 0.5),
    )  # fmt: skip
    segments = write_log(Paths.from_env().predictions, [*hourly, shadow])
    with segments[-1].open("ab") as handle:
        handle.write(b'{"request_id": "torn", "ts": 1')
    monkeypatch.setattr(prediction_log, "PAGE_ROWS", 40)
    profile = ReferenceProfile.from_frame(rows, spec.dataset)
    frame = load_window(window, spec.dataset, now=NOW)
    features = frame[spec.dataset.feature_columns]

    streamed = summarise_window(
        window, spec.dataset, reference=profile, sample_rows=1000, report_rows=30, now=NOW
    )
    assert streamed.summary.rows == len(frame)
    for name, column in streamed.summary.columns.items():
        assert column.n == features[name].notna().sum(), name
    assert streamed.summary.columns["job"].counts == features["job"].value_counts().to_dict()
    age = np.sort(streamed.summary.columns["age"].sample)  # all kept: fewer than 1000 values
    np.testing.assert_array_equal(age, np.sort(features["age"].to_numpy()))
    args = {"drift_share_threshold": 0.5, "min_rows": 10}
    assert (
        detect_drift(profile, streamed.summary, spec.dataset, **args).to_dict()
        == detect_drift(profile, features, spec.dataset, sample_rows=1000, **args).to_dict()
    )
    assert len(streamed.sample) == 30
    assert list(streamed.sample.columns) == spec.dataset.feature_columns
    merged = streamed.sample.merge(features.drop_duplicates(), how="left", indicator=True)
    assert (merged["_merge"] == "both").all()


def test_segments_written_a_line_per_row_read_as_batch_records_do(spec: Spec, rows, hourly) -> None:
    """Segments from before the batch record (a multi-row request logged a line per row)
    stay readable: a log whose two oldest segments are in that format gives the same
    window, the same feedback join and the same streamed summaries as one written now."""
    segments = write_log(Paths.from_env().predictions, hourly)
    window = DriftWindow(rows=250)
    profile = ReferenceProfile.from_frame(rows, spec.dataset)

    def read() -> tuple[pd.DataFrame, list[dict], dict]:
        wanted = {"req0:99", "req1:0", "req2:42", "req2:nope"}
        summary = summarise_window(
            window, spec.dataset, reference=profile, sample_rows=1000, report_rows=20, now=NOW
        ).summary
        return (
            load_window(window, spec.dataset, now=NOW),
            read_predictions(window, now=NOW, request_ids=wanted),
            detect_drift(
                profile, summary, spec.dataset, drift_share_threshold=0.5, min_rows=10
            ).to_dict(),
        )

    today = read()
    for segment, batch in zip(segments[:2], hourly[:2], strict=False):
        segment.write_bytes(b"".join(jsonl(row) for row in rows_of(batch)))
        os.utime(segment, (batch.ts, batch.ts))
    assert len(segments[0].read_bytes().splitlines()) == 100  # a line per row
    before = read()
    pd.testing.assert_frame_equal(before[0], today[0])
    assert len(before[0]) == 250 and before[0]["request_id"].iloc[0] == "req0:50"
    assert [r["request_id"] for r in before[1]] == ["req0:99", "req1:0", "req2:42"]
    assert before[1:] == today[1:]


def test_a_batch_record_that_does_not_hold_its_rows_is_skipped(spec: Spec, hourly) -> None:
    """A line that parses but whose columns do not all hold `rows` values is not ours to
    interpret: skipped like a torn line, by the window and by its streamed reading alike."""
    [segment] = write_log(Paths.from_env().predictions, hourly[-1:])
    good = segment.read_bytes()
    segment.write_bytes(good + good.replace(b'{"rows":100,', b'{"rows":101,'))
    os.utime(segment, (NOW, NOW))
    frame = load_window(DriftWindow(rows=1000), spec.dataset, now=NOW)
    assert len(frame) == 100
    profile = ReferenceProfile.from_frame(frame[spec.dataset.feature_columns], spec.dataset)
    streamed = summarise_window(
        DriftWindow(rows=1000), spec.dataset, reference=profile, sample_rows=10, report_rows=5,
        now=NOW,
    )  # fmt: skip
    assert streamed.summary.rows == 100


def test_empty_log_gives_an_empty_typed_frame(spec: Spec) -> None:
    frame = load_window(DriftWindow(rows=10), spec.dataset)
    assert frame.empty and spec.dataset.feature_columns[0] in frame.columns


def test_feedback_latest_label_wins() -> None:
    feedback = Paths.from_env().feedback
    post_feedback(feedback, {"a": 1, "b": 0})
    post_feedback(feedback, {"a": 0})
    labels = load_feedback().set_index("request_id")["label"].to_dict()
    assert labels == {"a": 0, "b": 0}
