"""`/feedback` checks each label against the answering model's target, over real HTTP.

A newcomer's finding: labels "maybe", 7 and 1e308 for real requests against the bank model
(classes 0 and 1) returned {"recorded": 3}, and a NaN label got 400 "not valid JSON". Now
an impossible label is a 422 naming item, value, rule and version, and a body with one is
recorded not at all; a class may be written as text or as an integral number, and is
recorded as the model names it.

A later finding: labels were judged by the stable model's rule only, so during a rollout a
label for the candidate's answer (a class only it has; a number for a regression
candidate) was refused, and a label only the candidate could take was recorded for
stable's answers. Now each label is judged by the version that answered its request.
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
            f"feedback item 1: label {shown} is not one of the model's classes {BANK_CLASSES} "
            f"(model version 1 answered request '{bank_ids[1]}')"
        )
    # All or nothing: item 0 (a good label) was not recorded either.
    assert _recorded(open_server.config.feedback_dir, "label-") == {}


def test_nan_label_is_named_as_nan_and_where(
    open_server: ThreadedServer, bank_ids: list[str]
) -> None:
    response = _feedback(open_server, [{"request_id": bank_ids[2], "label": float("nan")}])
    assert (response.status_code, response.json()["message"]) == (
        422,
        f"feedback item 0: label NaN is not one of the model's classes {BANK_CLASSES} "
        f"(model version 1 answered request '{bank_ids[2]}')",
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
        f"feedback item 0: label {rule} (model version 1 answered request '{request_id}')",
    )
    assert _recorded(bounded_server.config.feedback_dir, "bounded-") == {}


def test_regression_label_in_range_is_recorded(bounded_server: ThreadedServer) -> None:
    [request_id] = _scored_ids(bounded_server, [{"season": "3", "temp": 9.0}], "ok")
    response = _feedback(bounded_server, [{"request_id": request_id, "label": 38.25}])
    assert (response.status_code, response.json()) == (200, {"recorded": 1})
    assert _recorded(bounded_server.config.feedback_dir, "ok-") == {request_id: 38.25}


# --- a rollout: two versions answer, each label is judged by the one that answered ---------

ADMIN_TOKEN = "feedback-admin-token"
SEASON_CLASSES = ("cold", "mild", "warm")


@pytest.fixture(scope="module")
def rollout_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    """Stable: `seasons` v1, regression with target_rules [0, 100]. Candidate: v2, a
    classifier on the same columns (classes cold, mild, warm): a task change, new labels."""
    folder = tmp_path_factory.mktemp("rollout")
    stable = season_bundle(folder, target_rules={"min": 0, "max": 100})
    candidate = season_bundle(folder, version=2, classes=SEASON_CLASSES)
    config = server_config(stable, folder / "home")
    with ThreadedServer(config, env={config.admin_token_env: ADMIN_TOKEN}) as server:
        server.model = "seasons"
        _admin(server, "/admin/slots/candidate/load", {"bundle": str(candidate)})
        yield server


def _admin(server: ThreadedServer, path: str, body: dict) -> None:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    response = httpx.post(server.url + path, json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text


def _answered_by(server: ThreadedServer, weight: float, rows: int, request_id: str) -> str:
    """Send one request of `rows` rows with all traffic on the candidate (`weight` 1) or on
    stable (0); the version that answered."""
    _admin(server, "/admin/routing", {"candidate_weight": weight})
    body = split_payload([{"season": str(1 + i % 4), "temp": 10.0 + i} for i in range(rows)])
    response = httpx.post(
        f"{server.url}/invocations", json=body, headers={"x-request-id": request_id}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.headers["x-model-version"]


@pytest.fixture(scope="module")
def answered(rollout_server: ThreadedServer) -> dict[str, str]:
    """Request id -> the version that answered it: one- and three-row requests on each."""
    return {
        request_id: _answered_by(rollout_server, weight, rows, request_id)
        for request_id, weight, rows in [
            ("by-v2", 1.0, 1),
            ("by-v2-rows", 1.0, 3),
            ("by-v1", 0.0, 1),
            ("by-v1-rows", 0.0, 3),
        ]
    }


def test_each_label_is_judged_by_the_version_that_answered_its_request(
    rollout_server: ThreadedServer, answered: dict[str, str]
) -> None:
    """The candidate's class for its own answers, a number in range for stable's, row ids
    of multi-row requests by their request's version: all recorded as sent."""
    assert answered == {"by-v2": "2", "by-v2-rows": "2", "by-v1": "1", "by-v1-rows": "1"}
    body = [
        {"request_id": "by-v2", "label": "warm"},
        {"request_id": "by-v2-rows:2", "label": "cold"},
        {"request_id": "by-v1", "label": 38.25},
        {"request_id": "by-v1-rows:0", "label": 12},
    ]
    response = _feedback(rollout_server, body)
    assert (response.status_code, response.json()) == (200, {"recorded": 4})
    assert _recorded(rollout_server.config.feedback_dir, "by-") == {
        "by-v2": "warm",
        "by-v2-rows:2": "cold",
        "by-v1": 38.25,
        "by-v1-rows:0": 12,
    }


@pytest.mark.parametrize(
    ("request_id", "label", "message"),
    [
        (
            "by-v2",
            38.25,
            "label 38.25 is not one of the model's classes ['cold', 'mild', 'warm'] "
            "(model version 2 answered request 'by-v2')",
        ),
        (
            "by-v2-rows:1",
            "hot",
            "label \"hot\" is not one of the model's classes ['cold', 'mild', 'warm'] "
            "(model version 2 answered request 'by-v2-rows')",
        ),
        (
            "by-v1",
            "warm",
            'label "warm": the target is a finite number '
            "(model version 1 answered request 'by-v1')",
        ),
        (
            "by-v1-rows:2",
            250,
            "label 250 is outside the target's range [0, 100] (spec target_rules) "
            "(model version 1 answered request 'by-v1-rows')",
        ),
    ],
)
def test_a_label_the_answering_version_cannot_take_is_refused_naming_it(
    rollout_server: ThreadedServer,
    answered: dict[str, str],
    request_id: str,
    label: Any,
    message: str,
) -> None:
    """Each refused label would fit the other version's rule: judged by stable's alone,
    the first two were refused as not numbers and "warm" for v1's answer was recorded."""
    body = [{"request_id": "by-v1", "label": 40.0}, {"request_id": request_id, "label": label}]
    response = _feedback(rollout_server, body)
    assert (response.status_code, response.json()) == (
        422,
        {"error_code": "INVALID_LABEL", "message": f"feedback item 1: {message}"},
    )


def test_a_request_the_server_does_not_remember_is_judged_by_every_version_it_serves(
    rollout_server: ThreadedServer, answered: dict[str, str]
) -> None:
    """An id answered before a restart (or never): a label any served version takes is
    recorded as that version names it; one none takes is refused, naming each rule."""
    body = [
        {"request_id": "before-restart-1", "label": 7},
        {"request_id": "before-restart-2", "label": "mild"},
    ]
    response = _feedback(rollout_server, body)
    assert (response.status_code, response.json()) == (200, {"recorded": 2})
    assert _recorded(rollout_server.config.feedback_dir, "before-") == {
        "before-restart-1": 7,
        "before-restart-2": "mild",
    }
    response = _feedback(rollout_server, {"request_id": "never-answered", "label": "hot"})
    assert (response.status_code, response.json()["message"]) == (
        422,
        "feedback item 0: request 'never-answered' is not among the last 200,000 requests "
        "this server answered, and no model version it serves takes the label: model "
        'version 1: label "hot": the target is a finite number; model version 2: label '
        "\"hot\" is not one of the model's classes ['cold', 'mild', 'warm']",
    )
