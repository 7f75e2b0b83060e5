"""Auth, admin API, candidate routing, shadow mode and hot swap, over real HTTP."""

from __future__ import annotations

import dataclasses
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from ct_platform.serving.bundle import read_meta
from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import (
    ThreadedServer,
    copy_bundle,
    raw_rows,
    server_config,
    wait_for_records,
)

API_KEY = "test-api-key"
ADMIN_TOKEN = "test-admin-token"
KEY = {"x-api-key": API_KEY}
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def guarded_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("guarded_home")


# The admin API loads only bundles under $CT_HOME/bundles: these tests use copies there.
@pytest.fixture(scope="module")
def served_v1(bundle_dir: Path, guarded_home: Path) -> Path:
    return shutil.copytree(bundle_dir, guarded_home / "bundles" / "bank_marketing-v1")


@pytest.fixture(scope="module")
def served_v2(bundle_v2_dir: Path, guarded_home: Path) -> Path:
    return shutil.copytree(bundle_v2_dir, guarded_home / "bundles" / "bank_marketing-v2")


@pytest.fixture(scope="module")
def guarded_server(served_v1: Path, guarded_home: Path) -> Iterator[ThreadedServer]:
    config = server_config(served_v1, guarded_home)
    env = {config.api_key_env: API_KEY, config.admin_token_env: ADMIN_TOKEN}
    with ThreadedServer(config, env=env) as server:
        yield server


@pytest.fixture
def server(guarded_server: ThreadedServer, served_v1: Path) -> ThreadedServer:
    """The guarded server reset to: stable = v1, no candidate."""
    admin(guarded_server, "DELETE", "/admin/slots/candidate")
    if admin(guarded_server, "GET", "/admin/slots")["stable"]["version"] != "1":
        admin(guarded_server, "POST", "/admin/slots/stable/load", {"bundle": str(served_v1)})
    return guarded_server


@pytest.fixture(scope="module")
def payload(holdout: pd.DataFrame, bank_spec: Spec) -> dict:
    return {"dataframe_records": raw_rows(holdout, bank_spec, 1)}


def admin(server: ThreadedServer, method: str, path: str, body: dict | None = None) -> dict:
    response = httpx.request(method, server.url + path, json=body, headers=ADMIN, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def predict(server: ThreadedServer, payload: dict, request_id: str | None = None) -> httpx.Response:
    headers = dict(KEY)
    if request_id is not None:
        headers["x-request-id"] = request_id
    return httpx.post(f"{server.url}/invocations", json=payload, headers=headers, timeout=10)


def test_predict_needs_the_api_key(server: ThreadedServer, payload: dict) -> None:
    url = f"{server.url}/invocations"
    assert httpx.post(url, json=payload).status_code == 401
    wrong = httpx.post(url, json=payload, headers={"x-api-key": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error_code"] == "UNAUTHENTICATED"
    assert httpx.post(url, json=payload, headers=KEY).status_code == 200
    bearer = httpx.post(url, json=payload, headers={"authorization": f"Bearer {API_KEY}"})
    assert bearer.status_code == 200
    v2 = httpx.post(f"{server.url}/v2/models/bank_marketing/infer", json={"inputs": []})
    assert v2.status_code == 401
    assert (
        httpx.post(f"{server.url}/feedback", json={"request_id": "a", "label": 1}).status_code
        == 401
    )
    assert httpx.get(f"{server.url}/ping").status_code == 200  # health stays open


def test_admin_needs_the_admin_token(server: ThreadedServer) -> None:
    url = f"{server.url}/admin/slots"
    assert httpx.get(url).status_code == 401
    # The predict key is not an admin credential.
    assert httpx.get(url, headers={"authorization": f"Bearer {API_KEY}"}).status_code == 401
    assert httpx.get(url, headers=KEY).status_code == 401
    assert httpx.get(url, headers=ADMIN).status_code == 200


def test_admin_is_off_without_a_token(open_server: ThreadedServer) -> None:
    response = httpx.get(f"{open_server.url}/admin/slots", headers=ADMIN)
    assert response.status_code == 403
    assert "CT_ADMIN_TOKEN" in response.json()["message"]


def test_bad_admin_requests(server: ThreadedServer, tmp_path: Path) -> None:
    def post(path: str, body: dict | None = None) -> httpx.Response:
        return httpx.post(server.url + path, json=body, headers=ADMIN, timeout=30)

    assert post("/admin/slots/canary/load", {"bundle": "x"}).status_code == 404
    assert post("/admin/slots/candidate/load", {}).status_code == 400
    assert post("/admin/promote").status_code == 409
    assert post("/admin/routing", {"candidate_weight": 0.5}).status_code == 409


def test_admin_load_only_takes_bundles_under_ct_home(
    server: ThreadedServer, guarded_home: Path, served_v1: Path, other_model_bundle: Path
) -> None:
    """Any folder outside $CT_HOME/bundles is refused (4xx); no answer shows a server path."""

    def load(bundle: str) -> httpx.Response:
        return httpx.post(
            f"{server.url}/admin/slots/candidate/load",
            json={"bundle": bundle},
            headers=ADMIN,
            timeout=60,
        )

    bundles = guarded_home / "bundles"
    (bundles / "empty").mkdir()
    (bundles / "escape").symlink_to(other_model_bundle, target_is_directory=True)
    swapped = shutil.copytree(served_v1, bundles / "swapped-onnx")
    shutil.copyfile(other_model_bundle / "model.onnx", swapped / "model.onnx")
    cases = {
        str(other_model_bundle): (403, "outside the bundles folder"),
        "../../etc": (403, "outside the bundles folder"),
        "escape": (403, "outside the bundles folder"),
        str(bundles): (403, "outside the bundles folder"),
        "no-such-bundle": (404, "no bundle 'no-such-bundle' under $CT_HOME/bundles"),
        "empty": (400, "cannot load bundle 'empty': bundle has no manifest.json"),
        "swapped-onnx": (400, "bundle file model.onnx does not match manifest.json"),
    }
    for bundle, (status, message) in cases.items():
        response = load(bundle)
        assert (response.status_code, bundle) == (status, bundle), response.text
        assert message in response.json()["message"]
        assert str(guarded_home) not in response.text.replace(bundle, "")
    # The stable model kept serving; a good bundle loads by name or by its path.
    assert load("bank_marketing-v1").status_code == 200
    assert load(str(served_v1)).status_code == 200


def test_candidate_share_is_sticky_per_request_key(
    server: ThreadedServer, served_v2: Path, payload: dict
) -> None:
    admin(server, "POST", "/admin/slots/candidate/load", {"bundle": str(served_v2)})
    admin(server, "POST", "/admin/routing", {"candidate_weight": 0.3})
    slots = {
        f"key-{i}": predict(server, payload, f"key-{i}").headers["x-model-slot"] for i in range(200)
    }
    share = Counter(slots.values())["candidate"] / len(slots)
    assert 0.15 < share < 0.45
    # The same key lands in the same slot every time.
    for key in list(slots)[:30]:
        assert predict(server, payload, key).headers["x-model-slot"] == slots[key]
    candidate = predict(server, payload, next(k for k, s in slots.items() if s == "candidate"))
    assert candidate.headers["x-model-version"] == "2"
    # A routing key header overrides the request id for stickiness.
    routed = [
        httpx.post(
            f"{server.url}/invocations",
            json=payload,
            headers={**KEY, "x-routing-key": "user-42", "x-request-id": f"r{i}"},
        ).headers["x-model-slot"]
        for i in range(10)
    ]
    assert len(set(routed)) == 1
    admin(server, "POST", "/admin/routing", {"candidate_weight": 0.0})
    assert {predict(server, payload, f"key-{i}").headers["x-model-slot"] for i in range(30)} == {
        "stable"
    }


def test_shadow_mode_answers_from_stable_and_logs_the_candidate(
    server: ThreadedServer, served_v2: Path, payload: dict
) -> None:
    admin(server, "POST", "/admin/slots/candidate/load", {"bundle": str(served_v2)})
    admin(server, "POST", "/admin/routing", {"candidate_weight": 1.0, "shadow": True})
    ids = {f"shadow-{i}" for i in range(20)}
    for request_id in ids:
        response = predict(server, payload, request_id)
        assert response.headers["x-model-slot"] == "stable"
        assert response.headers["x-model-version"] == "1"
    records = wait_for_records(server.config.predictions_dir, ids)
    by_slot = Counter((r["slot"], r["model_version"]) for r in records)
    assert by_slot == {("stable", "1"): 20, ("shadow", "2"): 20}


@pytest.fixture(scope="module")
def refusing_v3(served_v2: Path, guarded_home: Path) -> Path:
    """Version 3, whose data contract refuses every real age (max 1): a shadow that fails."""
    columns = [
        dataclasses.replace(column, max=1.0) if column.name == "age" else column
        for column in read_meta(served_v2).columns
    ]
    target = guarded_home / "bundles" / "bank_marketing-v3"
    return copy_bundle(served_v2, target, version="3", columns=columns)


def counter(metrics: str, name: str, labels: str) -> int:
    """The value of `name{labels}` in an exposition text (labels as the server orders them)."""
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\d+)$", metrics, re.M)
    return int(found[1]) if found else 0


def scrape(server: ThreadedServer) -> str:
    return httpx.get(f"{server.url}/metrics", timeout=60).text


def test_shadow_copies_are_labelled_slot_shadow_scored_or_refused(
    server: ThreadedServer, served_v2: Path, refusing_v3: Path, payload: dict
) -> None:
    """Every series of a shadow copy says slot="shadow" on the endpoint the client called, so
    the alert rules' `slot!="shadow"` leaves exactly them out of served traffic."""
    served = 'endpoint="invocations",slot="stable",model_version="1"'
    scored = 'endpoint="invocations",slot="shadow",model_version="2"'
    refused = 'endpoint="invocations",slot="shadow",status="422"'
    before = scrape(server)
    admin(server, "POST", "/admin/slots/candidate/load", {"bundle": str(served_v2)})
    admin(server, "POST", "/admin/routing", {"candidate_weight": 1.0, "shadow": True})
    ids = {f"labelled-{i}" for i in range(10)}
    for request_id in ids:
        assert predict(server, payload, request_id).status_code == 200
    wait_for_records(server.config.predictions_dir, ids)  # shadow copies are logged too
    admin(server, "POST", "/admin/slots/candidate/load", {"bundle": str(refusing_v3)})
    admin(server, "POST", "/admin/routing", {"candidate_weight": 1.0, "shadow": True})
    for i in range(10):
        assert predict(server, payload, f"refused-{i}").status_code == 200  # stable answers
    deadline = time.monotonic() + 120  # the copies are scored after each answer went out
    while (
        counter(scrape(server), "ct_request_errors_total", refused)
        < counter(before, "ct_request_errors_total", refused) + 10
    ):
        assert time.monotonic() < deadline, "the refused shadow copies were never counted"
        time.sleep(0.2)
    after = scrape(server)
    grew = {
        labels: counter(after, name, labels) - counter(before, name, labels)
        for name, labels in [
            ("ct_requests_total", served),
            ("ct_requests_total", scored),
            ("ct_request_errors_total", refused),
        ]
    }
    assert grew == {served: 20, scored: 10, refused: 10}
    assert counter(after, "ct_prediction_rows_total", 'slot="shadow",model_version="2"') >= 10
    assert not re.search(r'endpoint="\w+_shadow"', after)  # no second spelling of shadow


def test_promote_then_rollback(server: ThreadedServer, served_v2: Path, payload: dict) -> None:
    admin(server, "POST", "/admin/slots/candidate/load", {"bundle": str(served_v2)})
    promoted = admin(server, "POST", "/admin/promote")
    assert promoted["stable"]["version"] == "2" and promoted["previous"]["version"] == "1"
    assert promoted["candidate"] is None
    assert predict(server, payload).headers["x-model-version"] == "2"
    rolled_back = admin(server, "POST", "/admin/rollback")
    assert rolled_back["stable"]["version"] == "1" and rolled_back["previous"]["version"] == "2"
    assert predict(server, payload).headers["x-model-version"] == "1"


def test_hot_swap_under_load_drops_no_request(
    server: ThreadedServer, served_v1: Path, served_v2: Path, payload: dict
) -> None:
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    failures: list[str] = []

    def hammer() -> None:
        with httpx.Client(headers=KEY, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.post(f"{server.url}/invocations", json=payload)
                except httpx.HTTPError as exc:  # a dropped connection is a failed request
                    failures.append(repr(exc))
                    continue
                statuses[response.status_code] += 1
                versions[response.headers.get("x-model-version", "?")] += 1

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()

    def served_more_than(count: int) -> None:
        # On a busy box the swaps can outpace the hammer: wait for its requests, not a clock.
        deadline = time.monotonic() + 120
        while sum(statuses.values()) <= count and not failures and time.monotonic() < deadline:
            time.sleep(0.05)

    try:
        served_more_than(0)  # version 1 answered before the first swap
        for bundle in (served_v2, served_v1, served_v2):
            admin(server, "POST", "/admin/slots/stable/load", {"bundle": str(bundle)})
            admin(server, "POST", "/admin/rollback")
            admin(server, "POST", "/admin/rollback")
        served_more_than(50)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == []
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 50
    assert set(versions) == {"1", "2"}


def test_refusals_name_the_slot_and_version_that_refused(
    server: ThreadedServer, served_v2: Path, payload: dict
) -> None:
    """A 422 (value outside the contract) or 400 (bad value) of either scoring route says
    which slot and version judged it, as a 200 does; an answer given before any slot was
    chosen (401) names none (issue 12, a newcomer's 422 without `x-model-slot`)."""
    admin(server, "POST", "/admin/slots/candidate/load", {"bundle": str(served_v2)})
    admin(server, "POST", "/admin/routing", {"candidate_weight": 1.0})
    row = payload["dataframe_records"][0]
    out_of_contract = {"dataframe_records": [{**row, "age": 500}]}
    not_a_number = {"dataframe_records": [{**row, "age": "abc"}]}
    v2_out_of_contract = {
        "inputs": [
            {"name": name, "shape": [1], "datatype": "BYTES", "data": [value]}
            for name, value in {**row, "age": 500}.items()
        ]
    }
    answers = {
        "422": predict(server, out_of_contract),
        "400": predict(server, not_a_number),
        "v2 422": httpx.post(
            f"{server.url}/v2/models/bank_marketing/infer",
            json=v2_out_of_contract,
            headers=KEY,
            timeout=10,
        ),
    }
    figures = {
        case: (
            answer.status_code,
            answer.headers.get("x-model-slot"),
            answer.headers.get("x-model-version"),
        )
        for case, answer in answers.items()
    }
    assert figures == {
        "422": (422, "candidate", "2"),
        "400": (400, "candidate", "2"),
        "v2 422": (422, "candidate", "2"),
    }
    admin(server, "POST", "/admin/routing", {"candidate_weight": 0.0})
    stable = predict(server, out_of_contract)
    assert (stable.status_code, stable.headers["x-model-slot"]) == (422, "stable")
    assert stable.headers["x-model-version"] == "1"
    unauthenticated = httpx.post(f"{server.url}/invocations", json=payload, timeout=10)
    assert unauthenticated.status_code == 401
    assert "x-model-slot" not in unauthenticated.headers
    assert "x-request-id" in unauthenticated.headers


def test_versioned_v2_routes_answer_with_the_slot_serving_that_version(
    server: ThreadedServer, served_v2: Path, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    """`/v2/models/{name}/versions/{v}/infer` was a bare 404: the protocol defines it."""
    rows = raw_rows(holdout, bank_spec, 3)
    body = {
        "inputs": [
            {
                "name": column,
                "shape": [len(rows)],
                "datatype": "FP64" if bank_spec.dataset.columns[column].is_numeric else "BYTES",
                "data": [row[column] for row in rows],
            }
            for column in bank_spec.dataset.feature_columns
        ]
    }
    model = f"{server.url}/v2/models/bank_marketing"

    def infer(version: str, key: str) -> httpx.Response:
        headers = {**KEY, "x-routing-key": key}
        return httpx.post(f"{model}/versions/{version}/infer", json=body, headers=headers)

    plain = httpx.post(f"{model}/infer", json=body, headers=KEY)
    pinned = infer("1", "any")
    assert (pinned.status_code, pinned.headers["x-model-version"]) == (200, "1")
    assert pinned.json()["outputs"] == plain.json()["outputs"]
    assert httpx.get(f"{model}/versions/1").json() == httpx.get(model).json()
    ready = httpx.get(f"{model}/versions/1/ready").json()
    assert ready == {"name": "bank_marketing", "ready": True}

    def refused(version: str, served: str) -> None:
        said = (
            f"model 'bank_marketing' version '{version}' is not served here: this server "
            f"answers with {served}; POST /v2/models/bank_marketing/infer answers with what "
            "is served"
        )
        for response in (
            infer(version, "any"),
            httpx.get(f"{model}/versions/{version}"),
            httpx.get(f"{model}/versions/{version}/ready"),
        ):
            assert (response.status_code, response.json()) == (404, {"error": said})

    refused("2", "version 1 (stable)")
    unknown = httpx.post(f"{server.url}/v2/models/bank/versions/1/infer", json=body, headers=KEY)
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"error": "unknown model 'bank': this server serves 'bank_marketing'"},
    )

    admin(server, "POST", "/admin/slots/candidate/load", {"bundle": str(served_v2)})
    refused("2", "version 1 (stable)")  # loaded, but answering no request yet
    admin(server, "POST", "/admin/routing", {"candidate_weight": 0.3})
    # Whatever the routing key, a version is answered by the slot serving it.
    for version, slot in (("1", "stable"), ("2", "candidate")):
        answers = [infer(version, f"key-{i}") for i in range(20)]
        assert {(a.status_code, a.headers["x-model-slot"]) for a in answers} == {(200, slot)}
        assert {a.json()["model_version"] for a in answers} == {version}
    refused("3", "version 1 (stable) and version 2 (candidate)")
    admin(server, "POST", "/admin/routing", {"candidate_weight": 1.0, "shadow": True})
    refused("2", "version 1 (stable)")  # in shadow mode it scores copies, answers no one
