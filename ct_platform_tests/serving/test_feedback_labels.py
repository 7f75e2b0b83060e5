"""`/feedback` checks each label against the served model's target, over real HTTP.

A newcomer's finding: labels "maybe", 7 and 1e308 for real requests against the bank model
(classes 0 and 1) returned {"recorded": 3}, and a NaN label got 400 "not valid JSON". Now
an impossible label is a 422 naming item, value and rule, and a body with one is recorded
not at all; a class may be written as text or as an integral number, and is recorded as the
model names it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ct_platform_tests.serving.conftest import (
    ThreadedServer,
    raw_rows,
    read_log_records,
    season_bundle,
    server_config,
    split_payload,
)

BANK_CLASSES = "[0, 1]"


def _scored_ids(server: ThreadedServer, rows: list[dict], prefix: str) -> list[str]:
    """Ids of real requests: one scored row each, sent with `x-request-id`."""
    ids = []
    for index, row in enumerate(rows):
        request_id = f"{prefix}-{index}"
        response = httpx.post(
            f"{server.url}/invocations",
            json=split_payload([row]),
            headers={"x-request-id": request_id},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        ids.append(request_id)
    return ids


def _feedback(server: ThreadedServer, body: Any) -> httpx.Response:
    # json.dumps writes NaN literals, as Python clients do.
    content = json.dumps(body)
    return httpx.post(f"{server.url}/feedback", content=content, timeout=60)


def _recorded(directory: Path, prefix: str) -> dict[str, Any]:
    records = read_log_records(directory) if directory.exists() else []
    return {r["request_id"]: r["label"] for r in records if r["request_id"].startswith(prefix)}


@pytest.fixture(scope="module")
def bank_ids(open_server: ThreadedServer, holdout, bank_spec) -> list[str]:
    open_server.model = "bank_marketing"
    return _scored_ids(open_server, raw_rows(holdout, bank_spec, 4), "label")


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        ("maybe", '"maybe"'),
        (7, "7"),
        (1e308, "1e+308"),
        (-1, "-1"),
        ("1.0", '"1.0"'),
        (True, "true"),
    ],
)
def test_impossible_class_is_refused_naming_item_value_and_rule(
    open_server: ThreadedServer, bank_ids: list[str], label: Any, shown: str
) -> None:
    body = [{"request_id": bank_ids[0], "label": 1}, {"request_id": bank_ids[1], "label": label}]
    response = _feedback(open_server, body)
    if label is True:  # not a label at all: the body's shape is wrong
        assert (response.status_code, response.json()["message"]) == (
            400,
            "feedback item 1: 'label' must be a number or a string",
        )
    else:
        assert (response.status_code, response.json()["error_code"]) == (422, "INVALID_LABEL")
        assert response.json()["message"] == (
            f"feedback item 1: label {shown} is not one of the model's classes {BANK_CLASSES}"
        )
    # All or nothing: item 0 (a good label) was not recorded either.
    assert _recorded(open_server.config.feedback_dir, "label-") == {}


def test_nan_label_is_named_as_nan_and_where(
    open_server: ThreadedServer, bank_ids: list[str]
) -> None:
    response = _feedback(open_server, [{"request_id": bank_ids[2], "label": float("nan")}])
    assert (response.status_code, response.json()["message"]) == (
        422,
        f"feedback item 0: label NaN is not one of the model's classes {BANK_CLASSES}",
    )


def test_class_as_text_or_integral_number_is_recorded_as_the_model_names_it(
    open_server: ThreadedServer, bank_ids: list[str]
) -> None:
    labels = [1, "0", 1.0, 0]
    body = [{"request_id": i, "label": label} for i, label in zip(bank_ids, labels, strict=True)]
    response = _feedback(open_server, body)
    assert (response.status_code, response.json()) == (200, {"recorded": 4})
    recorded = _recorded(open_server.config.feedback_dir, "label-")
    assert recorded == dict(zip(bank_ids, [1, 0, 1, 0], strict=True))
    assert {type(label) for label in recorded.values()} == {int}


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    """A regression model whose spec declares target_rules [0, 100]."""
    folder = tmp_path_factory.mktemp("bounded")
    bundle = season_bundle(folder, target_rules={"min": 0, "max": 100})
    with ThreadedServer(server_config(bundle, folder / "home")) as server:
        server.model = "seasons"
        yield server


@pytest.mark.parametrize(
    ("label", "rule"),
    [
        (-5, "-5 is outside the target's range [0, 100] (spec target_rules)"),
        (100.5, "100.5 is outside the target's range [0, 100] (spec target_rules)"),
        ("12", '"12": the target is a finite number'),
        (float("inf"), "Infinity: the target is a finite number"),
        (float("nan"), "NaN: NaN is not a number"),
    ],
)
def test_regression_label_must_be_a_finite_number_in_the_declared_range(
    bounded_server: ThreadedServer, label: Any, rule: str
) -> None:
    row = {"season": "2", "temp": 14.5}
    [request_id] = _scored_ids(bounded_server, [row], f"bounded-{rule[:3]}")
    response = _feedback(bounded_server, {"request_id": request_id, "label": label})
    assert (response.status_code, response.json()["message"]) == (
        422,
        f"feedback item 0: label {rule}",
    )
    assert _recorded(bounded_server.config.feedback_dir, "bounded-") == {}


def test_regression_label_in_range_is_recorded(bounded_server: ThreadedServer) -> None:
    [request_id] = _scored_ids(bounded_server, [{"season": "3", "temp": 9.0}], "ok")
    response = _feedback(bounded_server, [{"request_id": request_id, "label": 38.25}])
    assert (response.status_code, response.json()) == (200, {"recorded": 1})
    assert _recorded(bounded_server.config.feedback_dir, "ok-") == {request_id: 38.25}
