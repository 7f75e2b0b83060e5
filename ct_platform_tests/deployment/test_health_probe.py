"""What GET /ping says of a server: ready, busy (alive: never restarted) or down.

A real HTTP server (the standard library's) answers /ping with each status a proxy or an
older model server gives: 429/503 is "busy" (the newcomer's deployer read uvicorn's 503 at
its connection cap as "not ready" and restarted a live server), and so is a 200 carrying
`x-ct-busy` (our server at its cap); anything else not 200 is "down", as is no answer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ct_platform.deployment.endpoint import Endpoint, Health, is_healthy, probe, probed_status
from ct_platform.serving.config import BUSY_HEADER


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        for name, value in getattr(self.server, "headers", {}).items():
            self.send_header(name, value)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[tuple[ThreadingHTTPServer, str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "health"),
    [(200, Health.READY), (503, Health.BUSY), (429, Health.BUSY), (404, Health.DOWN)],
)
def test_ping_statuses_read_as_ready_busy_or_down(
    answering: tuple[ThreadingHTTPServer, str], status: int, health: Health
) -> None:
    server, url = answering
    server.status = status  # type: ignore[attr-defined]
    assert probe(url, timeout=30) is health
    endpoint = Endpoint(url, "4", "local", "2026-11-30T00:00:00+00:00", "/b")
    found = probed_status(endpoint, "pid 42")
    # Busy is alive (healthy: never restarted), and said so.
    assert (found.healthy, found.busy) == (health.alive, health is Health.BUSY)
    if health is Health.BUSY:
        assert found.detail == (
            f"pid 42, busy: /ping answered {status} (alive, overloaded; not restarted)"
        )


def test_a_200_saying_busy_is_busy_in_the_servers_words(
    answering: tuple[ThreadingHTTPServer, str],
) -> None:
    server, url = answering
    note = "holds its maximum of 5 connections (serving.max_connections)"
    server.status, server.headers = 200, {BUSY_HEADER: note}  # type: ignore[attr-defined]
    assert probe(url, timeout=30) is Health.BUSY
    assert is_healthy(url, timeout=30)  # a 200: up, a model loaded
    endpoint = Endpoint(url, "4", "local", "2026-11-30T00:00:00+00:00", "/b")
    found = probed_status(endpoint, "pid 42")
    assert (found.healthy, found.busy) == (True, True)
    assert found.detail == f"pid 42, busy: {note} (alive, overloaded; not restarted)"


def test_no_answer_is_down(answering: tuple[ThreadingHTTPServer, str]) -> None:
    server, url = answering
    server.shutdown()
    server.server_close()
    assert probe(url, timeout=5) is Health.DOWN
