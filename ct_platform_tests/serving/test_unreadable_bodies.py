"""Bodies the parsers cannot take, and bodies sent too slowly: a clear 4xx, never a 500.

Real HTTP to the real server. The newcomer's cases: JSON nested 100,000 deep got a 500
(RecursionError) on /invocations and V2 infer; 300 clients trickling a body held their
connections for ever. No timing is asserted beyond "the 408 arrives".
"""

from __future__ import annotations

import gzip
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ct_platform_tests.serving.conftest import MODEL_NAME, ThreadedServer, server_config

ADMIN_TOKEN = "unreadable-bodies-admin"
DEEP = b"[" * 100_000 + b"]" * 100_000
TOO_DEEP = "JSON nested too deeply"

# body -> words the answer must hold (whatever the protocol's prefix).
UNREADABLE_JSON = {
    "nested 100,000 deep": (DEEP, TOO_DEEP),
    # Accepted by orjson (1,024 levels), deeper than Python's own walks go.
    "nested 1,020 deep": (b'{"inputs": ' + b"[" * 1020 + b"]" * 1020 + b"}", TOO_DEEP),
    "100,000 digits": (
        b'{"dataframe_records": [{"age": ' + b"1" * 100_000 + b"}]}",
        "a number of 100,000 digits (11111111111111111111…); numbers of more than 4,300 "
        "digits are not read",
    ),
    "lone surrogate": (
        b'{"dataframe_records": [{"job": "\\ud800"}]}',
        "a lone UTF-16 surrogate \\ud800 at character 32",
    ),
    "invalid UTF-8": (b'{"dataframe_records": [{"job": "\xff"}]}', "can't decode byte 0xff"),
    "NUL byte": (b'{"dataframe_records": [{"job": "a\x00"}]}', "Invalid control character"),
}


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory) -> Iterator[ThreadedServer]:
    config = server_config(
        bundle_dir, tmp_path_factory.mktemp("unreadable_home"), body_timeout_s=1.0
    )
    with ThreadedServer(config, env={"CT_ADMIN_TOKEN": ADMIN_TOKEN}) as server:
        yield server


def _metrics(server: ThreadedServer) -> str:
    return httpx.get(f"{server.url}/metrics", timeout=60).text


def _count(metrics: str, name: str, labels: str) -> int:
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\d+)$", metrics, re.M)
    return int(found[1]) if found else 0


def _refused(server: ThreadedServer) -> int:
    stats = httpx.get(
        f"{server.url}/admin/stats",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=60,
    ).json()
    return stats["slots"].get("stable", {}).get("refused", 0)


@pytest.mark.parametrize("case", list(UNREADABLE_JSON))
@pytest.mark.parametrize(
    ("path", "endpoint"),
    [("/invocations", "invocations"), (f"/v2/models/{MODEL_NAME}/infer", "v2_infer")],
)
def test_unreadable_json_is_a_400_counted_as_a_refusal(
    server: ThreadedServer, case: str, path: str, endpoint: str
) -> None:
    body, words = UNREADABLE_JSON[case]
    labels = f'endpoint="{endpoint}",status="400"'
    before_metrics, before_refused = _metrics(server), _refused(server)
    response = httpx.post(
        server.url + path,
        content=body,
        headers={"content-type": "application/json"},
        timeout=120,
    )
    assert response.status_code == 400, response.text[:300]
    answer = response.json()
    assert words in answer.get("message", answer.get("error")), answer
    after = _metrics(server)
    assert _count(after, "ct_request_errors_total", labels) == (
        _count(before_metrics, "ct_request_errors_total", labels) + 1
    )
    assert _count(after, "ct_http_responses_total", 'status="500"') == 0
    assert _refused(server) == before_refused + 1


@pytest.mark.parametrize("case", list(UNREADABLE_JSON))
def test_feedback_refuses_the_same_bodies_with_a_400(server: ThreadedServer, case: str) -> None:
    """/feedback reads JSON as the predict routes do: each is refused (not JSON or not feedback)."""
    body, _ = UNREADABLE_JSON[case]
    response = httpx.post(f"{server.url}/feedback", content=body, timeout=120)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["message"], response.text[:300]


def _trickle(server: ThreadedServer, path: str, promised: int = 100_000) -> bytes:
    """Headers promising `promised` bytes, then one byte and silence; the answer read."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {promised}\r\n\r\n["
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        sock.sendall(head)
        answer = b""
        try:
            while data := sock.recv(65536):  # b"": the server closed the connection
                answer += data
        except ConnectionResetError:
            pass
    return answer


@pytest.mark.parametrize("path", ["/invocations", f"/v2/models/{MODEL_NAME}/infer", "/feedback"])
def test_a_body_sent_too_slowly_gets_408_and_the_connection_closes(
    server: ThreadedServer, path: str
) -> None:
    """Slowloris on the body: no byte for `body_timeout_s` -> 408, closed, counted once."""
    labels = 'endpoint="http",status="408"'
    before = _metrics(server)
    answer = _trickle(server, path)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert answer.endswith(b"request body: no bytes received for 1 s"), answer[-200:]
    after = _metrics(server)
    assert _count(after, "ct_request_errors_total", labels) == (
        _count(before, "ct_request_errors_total", labels) + 1
    )
    assert _count(after, "ct_http_responses_total", 'status="408"') == (
        _count(before, "ct_http_responses_total", 'status="408"') + 1
    )
    assert _count(after, "ct_http_responses_total", 'status="500"') == 0


def test_a_body_that_keeps_coming_is_not_cut(server: ThreadedServer) -> None:
    """The timeout is between reads, not for the whole body: a body sent in pieces, each
    within the timeout, is read whole (here: pieces sent back to back)."""
    body = b'{"request_id": "slow-but-steady", "label": 1}'
    head = (
        f"POST /feedback HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        sock.sendall(head)
        for start in range(0, len(body), 8):
            sock.sendall(body[start : start + 8])
        answer = b""
        while data := sock.recv(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


@pytest.mark.parametrize("path", ["/invocations", f"/v2/models/{MODEL_NAME}/infer", "/feedback"])
@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_a_compressed_body_is_a_415_naming_the_encoding(
    server: ThreadedServer, path: str, encoding: str
) -> None:
    """Was read as plain bytes (a gzip body then "is not valid JSON")."""
    response = httpx.post(
        server.url + path,
        content=gzip.compress(b'{"request_id": "r", "label": 1}'),
        headers={"content-type": "application/json", "content-encoding": encoding},
        timeout=120,
    )
    assert response.status_code == 415, response.text[:300]
    # MLflow's protocol answers 415 in plain text; V2 in its JSON error shape.
    plain = response.headers["content-type"].startswith("text/plain")
    message = response.text if plain else response.json()["error"]
    assert message == (
        f"Content-Encoding '{encoding}' is not supported: send the body uncompressed"
    )
