"""The many-row request's path: the typed `dataframe_split` reading's collector pause and
integer check, and the log features formatted while the model scores (a big request's
worker thread), against the record formatted after the answer."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

from ct_platform.serving import app as app_module
from ct_platform.serving.bundle import ColumnSchema, Prediction, load_bundle
from ct_platform.serving.mlflow_protocol import parse_json
from ct_platform.serving.prediction_log import ScoredBatch, features_json, jsonl
from ct_platform.serving.schema import (
    MISSING_CATEGORY,
    TYPED_SPLIT_MIN_BYTES,
    InputError,
    InputSchema,
)
from ct_platform.serving.slots import ServedModel
from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import ThreadedServer, raw_rows, split_payload
from ct_platform_tests.serving.test_one_row_path import COLUMNS, VALID

ROWS = 60


def _body(rows: list[list[object]], names: list[str]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": names, "data": rows}}).encode()


def _valid_body(change: Callable[[list[object]], None] = lambda row: None) -> bytes:
    names = [column.name for column in COLUMNS]
    rows = [[VALID[name] for name in names] for _ in range(ROWS)]
    change(rows[1])
    return _body(rows, names)


def _set(name: str, value: object) -> Callable[[list[object]], None]:
    position = [column.name for column in COLUMNS].index(name)
    return lambda row: row.__setitem__(position, value)


# name: (body, read typed)
BODIES = {
    "read typed": (_valid_body(), True),
    "a category outside the list (the second decoder)": (
        _valid_body(_set("job", "teacher")),
        True,
    ),
    "a value of no decoder's type": (_valid_body(_set("age", "42")), False),
    "not JSON": (_valid_body()[:-1], False),
    "one row": (_body([[VALID[c.name] for c in COLUMNS]], [c.name for c in COLUMNS]), False),
}


@pytest.mark.parametrize("name", BODIES)
@pytest.mark.parametrize("was_enabled", [True, False])
def test_the_typed_reading_leaves_the_collector_as_it_found_it(
    name: str, was_enabled: bool
) -> None:
    """The rows are decoded with the collector paused; it is on again afterwards whatever
    the reading's outcome, and still off if it was off."""
    schema = InputSchema(COLUMNS, "score")
    body, read_typed = BODIES[name]
    body = body.ljust(TYPED_SPLIT_MIN_BYTES)  # trailing spaces: long enough to be tried
    enabled = gc.isenabled()
    try:
        (gc.enable if was_enabled else gc.disable)()
        outcome = schema.from_split_body(body)
        assert gc.isenabled() is was_enabled
    finally:
        (gc.enable if enabled else gc.disable)()
    assert (outcome is not None) == read_typed


def test_no_collection_walks_the_rows_of_a_thousand_row_body() -> None:
    """Its 1,000 row tuples would set the collector off (every 700 new containers) and be
    walked by it; paused while they live, a collection that runs during the read (the
    freed rows still counted) finds a young generation without them."""
    names = [column.name for column in COLUMNS]
    body = _body([[VALID[name] for name in names] for _ in range(1000)], names)
    schema = InputSchema(COLUMNS)
    young: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            young.append(len(gc.get_objects(generation=0)))

    gc.collect()  # the count of new containers starts from 0
    gc.callbacks.append(count)
    try:
        parsed = schema.from_split_body(body)
    finally:
        gc.callbacks.remove(count)
    assert parsed is not None and parsed.n_rows == 1000
    assert all(objects < 500 for objects in young), young  # the rows alone are 1,000


def test_categories_decode_as_one_object_each() -> None:
    """A category sent 60 times is one str object in the parsed column (no new str a
    value), equal to the general reading's."""
    schema = InputSchema(COLUMNS, "reject")
    parsed = schema.from_split_body(_valid_body())
    assert parsed is not None
    job = parsed.columns[[c.name for c in COLUMNS].index("job")]
    assert len({id(value) for value in job}) == 1 and job[0] == VALID["job"]


SIGNED = [
    ColumnSchema("delta", "int"),  # no bounds: negative values and fractions reach the check
    ColumnSchema("city", "category"),
]


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ([-3, -2.0, None, 7], None),
        ([-3, -1.5, None, 7], "row 1, column 'delta': expected an integer, got -1.5"),
        ([2, 3, 0.25, -7.75], "row 2, column 'delta': expected an integer, got 0.25"),
        ([1e15, -1e15, None, None], None),
    ],
)
def test_fractions_in_an_int_column_of_either_sign(
    values: list[float | None], refusal: str | None
) -> None:
    """Negative fractions count as fractions, missing values as none, in the typed reading
    as in the general one (which names the first)."""
    schema = InputSchema(SIGNED)
    rows = [[value, "Porto"] for value in values] * 40
    body = _body(rows, ["delta", "city"])
    typed = schema.from_split_body(body)
    if refusal is None:
        assert typed is not None
        np.testing.assert_array_equal(typed.numeric[0], np.array(values * 40, dtype=float))
        return
    assert typed is None
    with pytest.raises(InputError) as caught:
        parse_json(body, schema)
    assert str(caught.value) == refusal


def test_a_big_request_logs_the_record_formatted_after_the_answer_would_be(
    open_server: ThreadedServer,
    bundle_dir: Path,
    holdout: pd.DataFrame,
    bank_spec: Spec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 300-row body (over the inline 16 KiB: scored in a worker thread) has its log
    features formatted beside the model, and its record is, byte for byte, the one
    `jsonl` formats from the parsed columns and the prediction."""
    formatted: list[int] = []
    features_json = app_module.features_json
    monkeypatch.setattr(
        app_module,
        "features_json",
        lambda names, columns: formatted.append(len(columns[0])) or features_json(names, columns),
    )
    rows = raw_rows(holdout, bank_spec, 300)
    rows[5]["job"] = None  # a missing category: null in the record
    rows[6]["age"] = None
    body = orjson.dumps(split_payload(rows))
    assert len(body) > open_server.config.inline_body_bytes
    response = httpx.post(
        f"{open_server.url}/invocations",
        content=body,
        headers={"content-type": "application/json", "x-request-id": "big-300"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert formatted == [300]

    line = _logged_line(open_server.config.predictions_dir, b'"request_id":"big-300"')
    logged = orjson.loads(line)
    served = ServedModel.of(load_bundle(bundle_dir))
    parsed = served.schema.from_split_body(body)
    assert parsed is not None  # the typed reading, as the server's
    expected = ScoredBatch(
        "big-300",
        logged["ts"],
        "stable",
        served.version,
        served.schema.names,
        parsed.columns,
        served.model.predict(parsed),
        logged["latency_ms"],
    )
    assert line == jsonl(expected)
    assert logged["features"]["job"][5] is None and logged["features"]["age"][6] is None


def _logged_line(directory: Path, marker: bytes, timeout: float = 60.0) -> bytes:
    """The prediction-log line holding `marker`, once written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(directory.glob("*.jsonl")):
            for line in path.read_bytes().splitlines(keepends=True):
                if marker in line:
                    return line
        time.sleep(0.1)
    raise AssertionError(f"no line with {marker!r} in {directory} within {timeout} s")


@pytest.mark.parametrize(
    "prediction",
    [
        Prediction(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]), None),
        Prediction(np.array(["a", "b", "a"], dtype=object), None, None),
        Prediction(None, None, np.array([0.1, np.nan, 3.5], np.float32)),
    ],
    ids=["binary", "labels-only", "regression"],
)
def test_features_formatted_beforehand_make_the_same_record(prediction: Prediction) -> None:
    """`features_json` then `jsonl` writes the bytes `jsonl` alone writes: missing values,
    escapes, non-ASCII text, a strided view of the numeric block."""
    block = np.array([[41.0, np.nan, 1e300], [3.0, 2.0, 1.0]])
    columns = [
        block[0],
        np.array(["admin.", MISSING_CATEGORY, 'é "x"\n'], dtype=object),
        block[1][::-1],
    ]
    names = ["age", "job", "n"]
    batch = ScoredBatch("r", 1.5, "candidate", "3", names, columns, prediction, 2.0)
    beforehand = batch._replace(features=features_json(names, columns))
    assert jsonl(beforehand) == jsonl(batch)
    assert orjson.loads(jsonl(batch))["features"]["job"][1] is None
