"""Request column names that are not the contract's, over real HTTP, in every protocol.

The newcomer's finding: a request with `Age` or `age ` (beside or instead of `age`) or an
unknown column was answered 200 and the extra column silently ignored. Now a near-duplicate
of a contract column (equal once case-folded and stripped) is refused with a 400 naming both
names ("did you mean"); an unknown column is kept out of scoring as MLflow does, but said:
`x-ignored-columns` on the answer, `ct_ignored_columns_total` in /metrics, `ignored_columns`
in /admin/stats; under `serving.unknown_columns: refuse` it is a 400 naming it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import (
    MODEL_NAME,
    ThreadedServer,
    raw_rows,
    server_config,
)

ADMIN_TOKEN = "column-names-admin"
INFER = f"/v2/models/{MODEL_NAME}/infer"
EXACTLY = "(names must match exactly: case and spaces count)"


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory) -> Iterator[ThreadedServer]:
    home = tmp_path_factory.mktemp("column_names_home")
    with ThreadedServer(server_config(bundle_dir, home), env={"CT_ADMIN_TOKEN": ADMIN_TOKEN}) as s:
        yield s


@pytest.fixture(scope="module")
def refusing_server(bundle_dir: Path, tmp_path_factory) -> Iterator[ThreadedServer]:
    home = tmp_path_factory.mktemp("refusing_home")
    with ThreadedServer(server_config(bundle_dir, home, unknown_columns="refuse")) as s:
        yield s


@pytest.fixture(scope="module")
def row(holdout: pd.DataFrame, bank_spec: Spec) -> dict:
    return raw_rows(holdout, bank_spec, 1, start=3)[0]


# One row in each protocol: (path, content type, body) from a row as {column: value}.
def _split(row: dict) -> tuple[str, str, bytes]:
    body = {"dataframe_split": {"columns": list(row), "data": [list(row.values())]}}
    return "/invocations", "application/json", json.dumps(body).encode()


def _records(row: dict) -> tuple[str, str, bytes]:
    return "/invocations", "application/json", json.dumps({"dataframe_records": [row]}).encode()


def _instances(row: dict) -> tuple[str, str, bytes]:
    return "/invocations", "application/json", json.dumps({"instances": [row]}).encode()


def _inputs(row: dict) -> tuple[str, str, bytes]:
    body = {"inputs": {name: [value] for name, value in row.items()}}
    return "/invocations", "application/json", json.dumps(body).encode()


def _csv(row: dict) -> tuple[str, str, bytes]:
    values = ["" if value is None else str(value) for value in row.values()]
    return "/invocations", "text/csv", (",".join(row) + "\n" + ",".join(values)).encode()


def _v2(row: dict) -> tuple[str, str, bytes]:
    tensors = [
        {"name": name, "shape": [1], "datatype": "BYTES", "data": [value]}
        for name, value in row.items()
    ]
    return INFER, "application/json", json.dumps({"inputs": tensors}).encode()


PROTOCOLS: dict[str, Callable[[dict], tuple[str, str, bytes]]] = {
    "dataframe_split": _split,
    "dataframe_records": _records,
    "instances": _instances,
    "inputs": _inputs,
    "csv": _csv,
    "v2": _v2,
}
# What the message starts with in each: records are checked row by row; V2 sends tensors.
PREFIX = {"dataframe_records": "row 0: ", "instances": "row 0: "}
KIND = {"v2": "tensor"}


def _post(server: ThreadedServer, protocol: str, row: dict) -> httpx.Response:
    path, content_type, body = PROTOCOLS[protocol](row)
    return httpx.post(
        server.url + path, content=body, headers={"content-type": content_type}, timeout=60
    )


def _message(response: httpx.Response) -> str:
    payload = response.json()
    return payload.get("message") or payload.get("error")


def _answer(response: httpx.Response) -> Any:
    payload = response.json()
    return payload.get("predictions") or payload.get("outputs")


def _renamed(row: dict, old: str, new: str) -> dict:
    return {(new if name == old else name): value for name, value in row.items()}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sent", ["Age", "age ", " AGE"])
def test_a_near_duplicate_instead_of_a_column_is_refused_naming_both(
    server: ThreadedServer, row: dict, protocol: str, sent: str
) -> None:
    response = _post(server, protocol, _renamed(row, "age", sent))

    kind = KIND.get(protocol, "column")
    assert response.status_code == 400, response.text
    assert _message(response) == (
        f"{PREFIX.get(protocol, '')}{kind} {sent!r} is not a {kind} of the model: did you "
        f"mean 'age'? {EXACTLY}"
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_near_duplicate_beside_the_column_is_refused_not_ignored(
    server: ThreadedServer, row: dict, protocol: str
) -> None:
    """The issue's example: `Age` sent beside `age` was scored without a word."""
    response = _post(server, protocol, {**row, "Age": 99})

    assert response.status_code == 400, response.text
    assert "'Age' is not a" in _message(response)
    assert "did you mean 'age'?" in _message(response)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unknown_column_is_ignored_and_said(
    server: ThreadedServer, row: dict, protocol: str
) -> None:
    """Scored as without it (MLflow's behaviour), named in `x-ignored-columns`, counted."""
    plain = _post(server, protocol, row)
    before = _ignored_count(server, "zip code")

    response = _post(server, protocol, {**row, "zip code": "75001", "nickname": "Bo"})

    assert response.status_code == 200, response.text
    assert _answer(response) == _answer(plain)
    assert "x-ignored-columns" not in plain.headers
    assert json.loads(response.headers["x-ignored-columns"]) == ["zip code", "nickname"]
    assert _ignored_count(server, "zip code") == before + 1
    stats = httpx.get(
        f"{server.url}/admin/stats", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()
    assert stats["ignored_columns"]["zip code"] == before + 1


def test_unknown_columns_of_many_records_are_named_once(server: ThreadedServer, row: dict) -> None:
    records = [{**row, "note": "a"}, row, {**row, "id": 7, "note": "b"}]
    response = httpx.post(
        f"{server.url}/invocations", json={"dataframe_records": records}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert json.loads(response.headers["x-ignored-columns"]) == ["note", "id"]


def test_an_unknown_name_with_a_newline_stays_one_header_and_one_metric_line(
    server: ThreadedServer, row: dict
) -> None:
    """Client-chosen names reach a header and a label: escaped, never split."""
    response = httpx.post(
        f"{server.url}/invocations", json={"dataframe_records": [{**row, "a\nb é": 1}]}
    )
    assert response.status_code == 200, response.text
    assert json.loads(response.headers["x-ignored-columns"]) == ["a\nb é"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'ct_ignored_columns_total{column="a\\nb é"} 1' in metrics.splitlines()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_under_refuse_an_unknown_column_is_a_400_naming_it(
    refusing_server: ThreadedServer, row: dict, protocol: str, bank_spec: Spec
) -> None:
    response = _post(refusing_server, protocol, {**row, "zip code": "75001"})

    kind = KIND.get(protocol, "column")
    names = bank_spec.dataset.feature_columns
    assert response.status_code == 400, response.text
    assert _message(response) == (
        f"{PREFIX.get(protocol, '')}unknown {kind}(s) ['zip code']: not in the model's schema "
        f"(serving.unknown_columns: refuse); the model expects {len(names)}: {names}"
    )
    assert _post(refusing_server, protocol, row).status_code == 200


def _ignored_count(server: ThreadedServer, column: str) -> int:
    metrics = httpx.get(f"{server.url}/metrics").text
    found = re.search(
        rf'^ct_ignored_columns_total\{{column="{re.escape(column)}"\}} (\d+)$', metrics, re.M
    )
    return int(found[1]) if found else 0
