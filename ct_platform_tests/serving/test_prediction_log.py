"""Prediction log and feedback: every scored row recorded once, under concurrency too."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

from ct_platform.monitoring.performance import evaluate_performance
from ct_platform.monitoring.prediction_log import prediction_records
from ct_platform.serving.app import ScoredAnswer
from ct_platform.serving.bundle import Prediction, load_bundle
from ct_platform.serving.prediction_log import PredictionLog, ScoredBatch, jsonl, rows_in
from ct_platform.serving.slots import ServedModel
from ct_platform.settings import Spec
from ct_platform_tests.monitoring.serving_logs import rows_of
from ct_platform_tests.serving.conftest import (
    ThreadedServer,
    raw_rows,
    read_log_records,
    server_config,
    split_payload,
    wait_for_records,
)


@pytest.fixture(scope="module")
def rows(holdout: pd.DataFrame, bank_spec: Spec) -> list[dict]:
    return raw_rows(holdout, bank_spec, 50)


def test_concurrent_requests_each_logged_once(
    open_server: ThreadedServer, rows: list[dict]
) -> None:
    ids = [f"concurrent-{i}" for i in range(300)]

    def send(index: int) -> httpx.Response:
        payload = {"dataframe_records": [rows[index % len(rows)]]}
        return httpx.post(
            f"{open_server.url}/invocations", json=payload, headers={"x-request-id": ids[index]}
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(send, range(len(ids))))
    assert all(response.status_code == 200 for response in responses)
    records = wait_for_records(open_server.config.predictions_dir, set(ids))
    assert sorted(record["request_id"] for record in records) == sorted(ids)
    record = next(r for r in records if r["request_id"] == "concurrent-0")
    assert record["slot"] == "stable" and record["model_version"] == "1"
    assert record["features"] == rows[0]
    assert record["output"]["label"] == responses[0].json()["predictions"][0]
    assert 0.0 <= record["output"]["proba"] <= 1.0
    assert record["latency_ms"] > 0


def test_multi_row_request_logs_one_record_per_row(
    open_server: ThreadedServer, rows: list[dict]
) -> None:
    response = httpx.post(
        f"{open_server.url}/v2/models/bank_marketing/infer",
        json={"id": "batch-v2", "inputs": [_table(rows[:5])]},
    )
    assert response.status_code == 200
    httpx.post(
        f"{open_server.url}/invocations",
        json=split_payload(rows[:7]),
        headers={"x-request-id": "batch-mlflow"},
    )
    records = wait_for_records(open_server.config.predictions_dir, {"batch-v2", "batch-mlflow"})
    keys = sorted(record["request_id"] for record in records)
    assert keys == sorted(
        [f"batch-v2:{i}" for i in range(5)] + [f"batch-mlflow:{i}" for i in range(7)]
    )
    by_id = {record["request_id"]: record for record in records}
    assert [by_id[f"batch-mlflow:{i}"]["features"] for i in range(7)] == rows[:7]
    assert {by_id[f"batch-v2:{i}"]["slot"] for i in range(5)} == {"stable"}


def _table(rows: list[dict]) -> dict:
    columns = list(rows[0])
    data = [row[column] for row in rows for column in columns]
    return {
        "name": "input-0",
        "shape": [len(rows), len(columns)],
        "datatype": "BYTES",
        "data": data,
    }


def test_feedback_single_and_list(open_server: ThreadedServer) -> None:
    url = f"{open_server.url}/feedback"
    assert httpx.post(url, json={"request_id": "fb-1", "label": 1}).json() == {"recorded": 1}
    many = [{"request_id": f"fb-{i}", "label": i % 2} for i in range(2, 12)]
    assert httpx.post(url, json=many).json() == {"recorded": 10}
    records = read_log_records(open_server.config.feedback_dir)
    labels = {r["request_id"]: r["label"] for r in records if r["request_id"].startswith("fb-")}
    assert labels == {"fb-1": 1, **{f"fb-{i}": i % 2 for i in range(2, 12)}}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"{",
        b'{"label": 1}',
        b'{"request_id": "x"}',
        b'{"request_id": "x", "label": [1]}',
        b"[1]",
    ],
)
def test_bad_feedback_is_400(open_server: ThreadedServer, body: bytes) -> None:
    response = httpx.post(f"{open_server.url}/feedback", content=body)
    assert response.status_code == 400
    assert response.json()["error_code"] == "BAD_REQUEST"


def test_metrics_count_requests_errors_and_latency(
    open_server: ThreadedServer, rows: list[dict]
) -> None:
    httpx.post(f"{open_server.url}/invocations", json={"dataframe_records": rows[:1]})
    httpx.post(f"{open_server.url}/invocations", json={"dataframe_records": []})
    text = httpx.get(f"{open_server.url}/metrics").text
    assert 'ct_requests_total{endpoint="invocations",slot="stable",model_version="1"}' in text
    assert 'ct_request_errors_total{endpoint="invocations",status="400"}' in text
    assert 'ct_request_latency_seconds_bucket{slot="stable",model_version="1",le="+Inf"}' in text
    assert 'ct_model_loaded{slot="stable",model_version="1",backend="onnx"} 1.0' in text


def _batch(request_id: str, n_rows: int) -> ScoredBatch:
    return ScoredBatch(
        request_id=request_id,
        ts=1.0,
        slot="stable",
        model_version="1",
        column_names=["x", "c"],
        columns=[np.arange(n_rows, dtype=np.float64), np.array(["a"] * n_rows, dtype=object)],
        prediction=Prediction(
            labels=np.zeros(n_rows, dtype=np.int64), proba=np.full((n_rows, 2), 0.5), values=None
        ),
        latency_ms=1.0,
    )


def test_segments_rotate_by_size_and_lose_nothing(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, max_segment_bytes=4096)
    log.start()
    for i in range(200):
        log.submit(_batch(f"r{i}", 3))
    log.close()
    segments = sorted(tmp_path.glob("*.jsonl"))
    assert len(segments) > 5
    records = [record for path in segments for record in prediction_records(path.read_bytes())]
    assert len(records) == 600 and log.dropped == 0 and log.written == 600
    assert {r["request_id"] for r in records} == {f"r{i}:{j}" for i in range(200) for j in range(3)}


def test_full_queue_drops_instead_of_blocking(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, max_pending=5)  # not started: nothing drains the queue
    for i in range(8):
        log.submit(_batch(f"r{i}", 1))
    assert log.dropped == 3


def test_records_are_exact_json_whatever_the_text_holds() -> None:
    """Names, ids, categories and labels holding quotes, commas, `%` or non-ASCII text,
    missing values and NaN decode to the exact row records."""
    odd = 'a "b", 50% é'
    batch = ScoredBatch(
        request_id='id "%s", 1',
        ts=1764478000.25,
        slot="stable",
        model_version="7",
        column_names=["x%d", odd],
        columns=[np.array([1.5, np.nan, -3.0]), np.array([odd, "", "b"], dtype=object)],
        prediction=Prediction(
            labels=np.array([odd, "no", odd], dtype=object),
            proba=np.array([[0.9, 0.1], [0.25, 0.75], [0.5, 0.5]]),
            values=None,
        ),
        latency_ms=0.125,
    )
    base = {"ts": 1764478000.25, "slot": "stable", "model_version": "7", "latency_ms": 0.125}
    assert list(prediction_records(jsonl(batch))) == [
        {
            **base,
            "request_id": 'id "%s", 1:0',
            "features": {"x%d": 1.5, odd: odd},
            "output": {"label": odd, "proba": 0.1},
        },
        {
            **base,
            "request_id": 'id "%s", 1:1',
            "features": {"x%d": None, odd: None},
            "output": {"label": "no", "proba": 0.75},
        },
        {
            **base,
            "request_id": 'id "%s", 1:2',
            "features": {"x%d": -3.0, odd: "b"},
            "output": {"label": odd, "proba": 0.5},
        },
    ]


def test_single_row_regression_and_multiclass_records() -> None:
    regression = ScoredBatch(
        "one", 1.0, "candidate", "2", ["x"], [np.array([2.0])],
        Prediction(labels=None, proba=None, values=np.array([0.5], dtype=np.float32)), 3.0,
    )  # fmt: skip
    assert orjson.loads(jsonl(regression)) == {
        "request_id": "one", "ts": 1.0, "slot": "candidate", "model_version": "2",
        "features": {"x": 2.0}, "output": {"value": 0.5}, "latency_ms": 3.0,
    }  # fmt: skip
    multiclass = ScoredBatch(
        "m", 1.0, "stable", "2", ["x"], [np.array([2.0, 3.0])],
        Prediction(labels=np.array([2, 0]), proba=np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]),
                   values=None),
        3.0,
    )  # fmt: skip
    outputs = [record["output"] for record in prediction_records(jsonl(multiclass))]
    assert outputs == [{"label": 2, "proba": 0.7}, {"label": 0, "proba": 0.6}]


@pytest.mark.parametrize(
    "prediction",
    [
        Prediction(
            labels=np.array(["yes", "no", "yes"], dtype=object),
            proba=np.array([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]], dtype=np.float32),
            values=None,
        ),
        Prediction(labels=np.array([2, 0, 1]), proba=None, values=None),
        Prediction(labels=None, proba=None, values=np.array([0.1, np.nan, 3.5], np.float32)),
    ],
    ids=["binary-float32", "labels-only", "regression"],
)
def test_a_multi_row_request_is_one_batch_record_holding_each_row_record(
    prediction: Prediction,
) -> None:
    """A multi-row request is written as one line (one orjson call over its arrays), which
    the reader expands into exactly the records its rows would have as one-row requests
    (`<id>:<i>`): the row-per-line format of before, value for value."""
    columns = [
        np.array([41.0, np.nan, 1e300]),
        np.array(["admin.", "", 'é "x"'], dtype=object),
        np.arange(3.0)[::-1],  # a strided view, as the numeric block's rows may be
    ]
    batch = ScoredBatch("r", 1.5, "candidate", "3", ["age", "job", "n"], columns, prediction, 2.0)
    line = jsonl(batch)
    assert line.count(b"\n") == 1 and line.endswith(b"\n") and rows_in(line) == 3
    assert orjson.loads(line)["features"]["age"] == [41.0, None, 1e300]

    row_lines = [jsonl(row) for row in rows_of(batch)]
    assert [rows_in(row_line) for row_line in row_lines] == [1, 1, 1]
    assert list(prediction_records(line)) == [orjson.loads(row_line) for row_line in row_lines]


def test_a_client_id_in_the_row_id_form_is_refused_and_a_label_joins_one_record(
    bundle_dir: Path, tmp_path: Path, rows: list[dict], bank_spec: Spec
) -> None:
    """The newcomer's finding: rows of a 3-row request `zz-dup` are logged `zz-dup:<i>`, so
    a client's own `X-Request-ID: zz-dup:1` made a second `zz-dup:1` record and one label
    joined both. Such ids are refused (header or v2 body id), others with a colon are not;
    a reused id's label joins its latest prediction only."""
    with ThreadedServer(server_config(bundle_dir, tmp_path)) as server:
        url = server.url
        batch = httpx.post(
            f"{url}/invocations", json=split_payload(rows[:3]), headers={"x-request-id": "zz-dup"}
        )
        assert batch.status_code == 200
        clash = _post_one(url, rows[3], "zz-dup:1")
        assert clash.status_code == 400
        assert clash.json()["message"] == (
            "X-Request-ID 'zz-dup:1' ends in ':' and digits, the form of the ids the server "
            "gives the rows of a multi-row request (<request id>:<row>; 'zz-dup' row 1): send "
            "an id that does not end in ':<digits>'"
        )
        v2_clash = httpx.post(
            f"{url}/v2/models/bank_marketing/infer",
            json={"id": "zz-dup:2", "inputs": [_table(rows[:1])]},
        )
        assert v2_clash.status_code == 400
        assert "the body's id 'zz-dup:2' ends in ':' and digits" in v2_clash.json()["error"]
        # One client id sent twice, and one with a colon but not in the row form.
        assert [_post_one(url, row, "zz-reused").status_code for row in rows[4:6]] == [200, 200]
        colon = _post_one(url, rows[6], "order:a1")
        assert colon.status_code == 200 and colon.headers["x-request-id"] == "order:a1"

        logged = wait_for_records(server.config.predictions_dir, {"zz-dup", "zz-reused", "order"})
        assert sorted(record["request_id"] for record in logged) == [
            "order:a1",
            "zz-dup:0",
            "zz-dup:1",
            "zz-dup:2",
            "zz-reused",
            "zz-reused",
        ]
        labels = [{"request_id": "zz-dup:1", "label": 1}, {"request_id": "zz-reused", "label": 0}]
        assert httpx.post(f"{url}/feedback", json=labels).json() == {"recorded": 2}
        result = evaluate_performance(
            bank_spec,
            0.5,
            predictions_dir=server.config.predictions_dir,
            feedback_dir=server.config.feedback_dir,
        )
        assert result.n_labelled == 2  # each label joined exactly one record


def _post_one(url: str, row: dict, request_id: str) -> httpx.Response:
    return httpx.post(
        f"{url}/invocations",
        json={"dataframe_records": [row]},
        headers={"x-request-id": request_id},
    )


def test_segments_rotate_at_their_size_bound(tmp_path: Path) -> None:
    """The writer counts the bytes it wrote (no `tell()` per line): a segment is closed at
    the first line that takes it to the bound, so every closed segment holds at least the
    bound, and less than the bound before its last line."""
    log = PredictionLog(tmp_path, max_segment_bytes=4096)
    log.start()
    for i in range(100):
        log.submit(_batch(f"r{i}", 1 + i % 4))
    log.close()
    segments = sorted(tmp_path.glob("*.jsonl"), key=lambda path: path.name[-10:])
    assert len(segments) > 3
    for segment in segments[:-1]:
        lines = segment.read_bytes().splitlines(keepends=True)
        size = sum(map(len, lines))
        assert size >= 4096 and size - len(lines[-1]) < 4096, segment.name
    assert segments[-1].stat().st_size > 0
    assert log.written == sum(1 + i % 4 for i in range(100))


def test_a_scored_answer_logs_its_record_once_written_and_when_the_write_fails() -> None:
    """The record is submitted after the body has been written (so its formatting is not
    part of the answer's latency), and also when the write raised: the row was scored."""
    logged: list[ScoredBatch] = []
    sent: list[str] = []
    batch = _batch("r1", 1)

    async def send(message: dict) -> None:
        sent.append(message["type"])
        assert not logged, "logged before the body was written"

    async def broken_send(message: dict) -> None:
        raise OSError("connection reset")

    async def nothing() -> dict:
        return {}

    answer = ScoredAnswer(b"{}", {"x-request-id": "r1"}, logged.append, batch, None)
    asyncio.run(answer({}, nothing, send))
    assert sent == ["http.response.start", "http.response.body"] and logged == [batch]
    with pytest.raises(OSError, match="connection reset"):
        asyncio.run(answer({}, nothing, broken_send))
    assert logged == [batch, batch]


def test_a_one_row_record_from_the_plain_values_is_the_columns_record(
    open_server: ThreadedServer, rows: list[dict]
) -> None:
    """The one-row path logs from `ParsedRows.logged_values`: byte for byte the record made
    from the row's column arrays, a missing category (null) and a missing number (NaN) too;
    the common row (no missing category) is logged from the very list that is scored."""
    served = ServedModel.of(load_bundle(open_server.config.bundle), "reject", "ignore")
    for sent in ({**rows[0]}, {**rows[1], "job": None, "pdays": 999}):
        parsed = served.schema.from_records([sent])
        assert parsed.values is not None  # the one-row path took it
        prediction = served.model.predict(parsed)
        fields = ("r1", 1.5, "stable", "1", served.schema.names)
        assert (parsed.logged_values is parsed.values) == ("" not in parsed.values)
        from_values = ScoredBatch(*fields, [], prediction, 0.25, parsed.logged_values)
        from_columns = ScoredBatch(*fields, parsed.columns, prediction, 0.25)
        assert jsonl(from_values) == jsonl(from_columns)
        record = orjson.loads(jsonl(from_values))
        assert record["features"] == {
            name: (None if value == 999 and name == "pdays" else value)
            for name, value in sent.items()
        }
