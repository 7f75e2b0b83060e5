"""Slow clients cannot hold the server: a whole-body time limit, and a cap on connections.

The newcomer's finding: `--body-timeout` bounds only the gap between two reads, so a body
trickled a byte at a time within it kept its connection for ever. Now a body not complete
within `body_time_limit_s` of its headers gets a 408; and the server holds at most
`max_connections` requests (its own cap in `http_limits`): a request beyond is answered 503
at once, so many slow clients cannot exhaust it, and traffic is served again once they go.
The cap means what it says (5 holds 5; uvicorn's `limit_concurrency` held 4), and a server
at its cap still answers `/ping`, metadata and its admin API: busy is not dead (the
deployer once restarted a live server whose `/ping` got uvicorn's 503).
Real sockets; small limits; nothing asserted about how fast an answer comes.
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from ct_platform.deployment.endpoint import Health, probe
from ct_platform.serving.config import BUSY_HEADER
from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import (
    MODEL_NAME,
    ThreadedServer,
    raw_rows,
    server_config,
)

ADMIN_TOKEN = "slow-clients-admin-token"


@pytest.fixture(scope="module")
def body(holdout: pd.DataFrame, bank_spec: Spec) -> bytes:
    return httpx.Request(
        "POST", "/", json={"dataframe_records": raw_rows(holdout, bank_spec, 1)}
    ).content


def _head(length: int) -> bytes:
    return (
        f"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


def _read_answer(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while data := sock.recv(65536):
            answer += data
    except (ConnectionResetError, TimeoutError):
        pass
    return answer


def _answers_of_all_but(socks: list[socket.socket], held: int) -> dict[int, bytes]:
    """The answers (read to the server's close) of all but at most `held` of `socks`."""
    answers: dict[int, bytes] = {}
    pending = dict(enumerate(socks))
    deadline = time.monotonic() + 120
    while len(pending) > held and time.monotonic() < deadline:
        readable, _, _ = select.select(list(pending.values()), [], [], 1.0)
        for sock in readable:
            index = socks.index(sock)
            answers[index] = _read_answer(sock)
            del pending[index]
    return answers


def _count(server: ThreadedServer, name: str, labels: str) -> int:
    metrics = httpx.get(f"{server.url}/metrics", timeout=60).text
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\d+)$", metrics, re.M)
    return int(found[1]) if found else 0


def test_a_body_trickled_within_the_gap_timeout_is_cut_at_the_body_time_limit(
    bundle_dir: Path, tmp_path: Path, body: bytes
) -> None:
    """The issue's example, scaled down: a byte every 0.05 s never trips the 60 s gap
    timeout; the body's 1 s time limit ends it with a 408, and the server serves on."""
    config = server_config(bundle_dir, tmp_path, body_timeout_s=60.0, body_time_limit_s=1.0)
    with ThreadedServer(config) as server:
        stop = threading.Event()
        with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
            sock.sendall(_head(100_000))

            def trickle() -> None:
                try:
                    while not stop.wait(0.05):
                        sock.sendall(b" ")
                except OSError:
                    pass  # closed by the server: the answer is waiting

            sender = threading.Thread(target=trickle, daemon=True)
            sender.start()
            answer = _read_answer(sock)
            stop.set()
            sender.join(timeout=60)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert answer.endswith(
            b"request body not complete within 1 s of its headers (the server's limit for a "
            b"whole body)"
        ), answer[-300:]
        assert _count(server, "ct_http_responses_total", 'status="408"') == 1
        ok = httpx.post(
            f"{server.url}/invocations",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert ok.status_code == 200, ok.text


@pytest.fixture
def capped_server(bundle_dir: Path, tmp_path: Path) -> Iterator[ThreadedServer]:
    config = server_config(bundle_dir, tmp_path, max_connections=6, body_time_limit_s=600.0)
    with ThreadedServer(config, env={config.admin_token_env: ADMIN_TOKEN}) as server:
        yield server


def test_connections_beyond_the_cap_get_503_and_traffic_is_served_once_slow_clients_go(
    capped_server: ThreadedServer, body: bytes
) -> None:
    server = capped_server
    url = f"{server.url}/invocations"
    headers = {"content-type": "application/json"}
    # Three slowloris clients: headers and one byte of a body they never finish.
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=120) for _ in range(3)]
    try:
        for sock in slow:
            sock.sendall(_head(len(body)) + body[:1])
        # Below the cap, traffic is served beside them.
        assert httpx.post(url, content=body, headers=headers, timeout=60).status_code == 200

        # Twenty more slowloris clients, far beyond the cap: the server holds 3 more (6 at
        # once under a cap of 6), and answers every other one 503 at once and closes it.
        flood = [
            socket.create_connection(("127.0.0.1", server.port), timeout=120) for _ in range(20)
        ]
        slow += flood
        for sock in flood:
            sock.sendall(_head(len(body)) + body[:1])
        answers = _answers_of_all_but(flood, held=3)
        statuses = [answer[9:12] for answer in answers.values()]
        assert statuses == [b"503"] * len(statuses) and len(statuses) == 17, answers
        assert next(iter(answers.values())).endswith(
            b"server busy: it holds its maximum of 6 connections (serving.max_connections); "
            b"retry later"
        )
        refused = len(statuses)
        # At its cap, the server is busy, not dead: health, metadata, metrics and the admin
        # API answer (the deployer's and the watchdog's checks), /ping says it is at its
        # cap, and probe() reads it as busy.
        ping = httpx.get(f"{server.url}/ping", timeout=60)
        assert ping.status_code == 200
        assert ping.headers[BUSY_HEADER] == (
            "holds its maximum of 6 connections (serving.max_connections)"
        )
        assert probe(server.url, timeout=60) is Health.BUSY
        assert httpx.get(f"{server.url}/v2/models/{MODEL_NAME}", timeout=60).status_code == 200
        admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        slots = httpx.get(f"{server.url}/admin/slots", headers=admin, timeout=60)
        assert slots.status_code == 200, slots.text
        routing = {"candidate_weight": 0.0, "shadow": False}
        admin_post = httpx.post(
            f"{server.url}/admin/routing", json=routing, headers=admin, timeout=60
        )
        assert admin_post.status_code == 200, admin_post.text
        assert httpx.post(url, content=body, headers=headers, timeout=60).status_code == 503
        refused += 1
    finally:
        for sock in slow:
            sock.close()
    # The slow clients gone, traffic is served again (the server sees them close soon after).
    deadline = time.monotonic() + 120
    status = 0
    while status != 200 and time.monotonic() < deadline:
        status = httpx.post(url, content=body, headers=headers, timeout=60).status_code
        refused += status == 503
    assert status == 200
    assert probe(server.url, timeout=60) is Health.READY  # below its cap: no longer busy
    # Every 503 is counted, as an answer and as an error of the HTTP layer (the 3 clients
    # whose answer was not read may have had one too).
    assert refused <= _count(server, "ct_http_responses_total", 'status="503"') <= refused + 3
    assert _count(server, "ct_http_responses_total", 'status="503"') == _count(
        server, "ct_request_errors_total", 'endpoint="http",status="503"'
    )


def test_max_connections_5_holds_5_slow_clients_and_refuses_the_sixth(
    bundle_dir: Path, tmp_path: Path, body: bytes
) -> None:
    """The newcomer's `--max-connections 5` held only 4 (uvicorn's `>=` counted the
    request's own connection): six slow clients, exactly one 503, five held; one of them
    gone, a request is served."""
    config = server_config(bundle_dir, tmp_path, max_connections=5, body_time_limit_s=600.0)
    with ThreadedServer(config) as server:
        socks = [
            socket.create_connection(("127.0.0.1", server.port), timeout=120) for _ in "123456"
        ]
        try:
            for sock in socks:
                sock.sendall(_head(len(body)) + body[:1])
            answers = _answers_of_all_but(socks, held=5)
            assert [answer[9:12] for answer in answers.values()] == [b"503"], answers
            # Whatever order the server read them in, the other five are held: one 503 only.
            assert _count(server, "ct_http_responses_total", 'status="503"') == 1
            held = [sock for index, sock in enumerate(socks) if index not in answers]
            held[0].close()
            url, headers = f"{server.url}/invocations", {"content-type": "application/json"}
            deadline, status = time.monotonic() + 120, 0
            while status != 200 and time.monotonic() < deadline:
                status = httpx.post(url, content=body, headers=headers, timeout=60).status_code
            assert status == 200
        finally:
            for sock in socks:
                sock.close()
