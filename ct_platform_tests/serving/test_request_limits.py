"""Work and header limits per request, and small requests kept fast beside big ones.

No absolute timings: what is asserted is order (a small request sent late in a big one's
scoring still completes before it) and status codes, which hold on a loaded machine.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pandas as pd
import pytest
import uvicorn
from uvicorn.server import ServerState

from ct_platform.serving.http_limits import bounded_http_protocol
from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import (
    ThreadedServer,
    raw_rows,
    server_config,
    split_payload,
)

BIG_ROWS = 50_000


@pytest.fixture(scope="module")
def limits_server(bundle_dir: Path, tmp_path_factory) -> Iterator[ThreadedServer]:
    config = server_config(
        bundle_dir,
        tmp_path_factory.mktemp("limits_home"),
        max_body_bytes=16 * 1024 * 1024,
        max_rows=BIG_ROWS,
        header_timeout_s=1.0,
    )
    with ThreadedServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def small_body(holdout: pd.DataFrame, bank_spec: Spec) -> dict:
    return {"dataframe_records": raw_rows(holdout, bank_spec, 1)}


def _big_csv(holdout: pd.DataFrame, bank_spec: Spec, rows: int) -> bytes:
    features = holdout[bank_spec.dataset.feature_columns]
    repeated = pd.concat([features] * (rows // len(features) + 1)).iloc[:rows]
    buffer = io.StringIO()
    repeated.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def test_small_requests_are_answered_while_a_big_one_is_scored(
    limits_server: ThreadedServer, holdout: pd.DataFrame, bank_spec: Spec, small_body: dict
) -> None:
    """The issue's example: a 12,000-row CSV stalled a single-row request for 1.6 s."""
    big = _big_csv(holdout, bank_spec, BIG_ROWS)
    url = f"{limits_server.url}/invocations"
    big_window: dict[str, float] = {}
    big_status: list[int] = []

    def post_big() -> None:
        big_window["start"] = time.monotonic()
        response = httpx.post(url, content=big, headers={"content-type": "text/csv"}, timeout=600)
        big_window["end"] = time.monotonic()
        big_status.append(response.status_code)

    thread = threading.Thread(target=post_big)
    thread.start()
    smalls: list[tuple[float, float]] = []  # (sent, answered)
    with httpx.Client(timeout=600) as client:
        while thread.is_alive():
            sent = time.monotonic()
            assert client.post(url, json=small_body).status_code == 200
            smalls.append((sent, time.monotonic()))
    thread.join()
    assert big_status == [200]
    start, end = big_window["start"], big_window["end"]
    # Sent in the second half of the big request's life (it is scoring by then, not
    # uploading), answered before it: the loop was not blocked by the big one.
    late = [answered for sent, answered in smalls if sent > start + (end - start) / 2]
    assert any(answered < end for answered in late), (end - start, smalls[-5:])


def test_rows_per_request_are_bounded(
    limits_server: ThreadedServer, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    body = _big_csv(holdout, bank_spec, BIG_ROWS + 1)
    response = httpx.post(
        f"{limits_server.url}/invocations",
        content=body,
        headers={"content-type": "text/csv"},
        timeout=600,
    )
    assert response.status_code == 413
    assert response.json()["message"] == (
        f"request has {BIG_ROWS + 1} rows; the limit is {BIG_ROWS} rows a request: split it"
    )


def _over_the_limit(rows: list[dict], spec: Spec) -> dict[str, tuple[str, bytes, str]]:
    """The same rows as each protocol and shape takes them: name -> (path, body, type)."""
    columns = list(rows[0])
    as_columns = {name: [row[name] for row in rows] for name in columns}
    numeric = {name for name, column in spec.dataset.columns.items() if column.type != "category"}
    tensors = [
        {
            "name": name,
            "shape": [len(rows)],
            "datatype": "FP64" if name in numeric else "BYTES",
            "data": values,
        }
        for name, values in as_columns.items()
    ]
    table = {
        "name": "table",
        "shape": [len(rows), len(columns)],
        "datatype": "BYTES",
        "data": [[str(row[name]) for name in columns] for row in rows],
    }
    csv = io.StringIO()
    pd.DataFrame(rows).to_csv(csv, index=False)
    json_bodies = {
        "dataframe_split": ("/invocations", split_payload(rows)),
        "dataframe_records": ("/invocations", {"dataframe_records": rows}),
        "inputs columns": ("/invocations", {"inputs": as_columns}),
        "instances records": ("/invocations", {"instances": rows}),
        "v2 column tensors": (f"/v2/models/{spec.model.name}/infer", {"inputs": tensors}),
        "v2 table tensor": (f"/v2/models/{spec.model.name}/infer", {"inputs": [table]}),
    }
    return {
        "csv": ("/invocations", csv.getvalue().encode(), "text/csv"),
        **{
            name: (path, orjson.dumps(body), "application/json")
            for name, (path, body) in json_bodies.items()
        },
    }


@pytest.mark.parametrize("values", ["valid", "out of contract"])
def test_the_row_limit_is_judged_before_the_values_on_every_path(
    limits_server: ThreadedServer, holdout: pd.DataFrame, bank_spec: Spec, values: str
) -> None:
    """A newcomer's 50,001 rows with out-of-contract values got 422, valid ones 413."""
    base = raw_rows(holdout, bank_spec, 500)
    rows = [dict(base[i % len(base)]) for i in range(BIG_ROWS + 1)]
    if values == "out of contract":
        for row in rows[::1000]:
            row["age"], row["job"] = 250, "astronaut"  # past max 100; not a listed job
    for shape, (path, body, content_type) in _over_the_limit(rows, bank_spec).items():
        response = httpx.post(
            limits_server.url + path,
            content=body,
            headers={"content-type": content_type},
            timeout=600,
        )
        assert response.status_code == 413, (shape, response.text[:500])
        said = response.json().get("message") or response.json().get("error")
        assert said == (
            f"request has {BIG_ROWS + 1} rows; the limit is {BIG_ROWS} rows a request: split it"
        ), shape


def _raw_exchange(server: ThreadedServer, head: bytes, filler: int = 0) -> bytes:
    """Send `head` (+ `filler` bytes of one header's value) on a raw socket; read the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        sock.sendall(head)
        sent = 0
        chunk = b"a" * 65536
        try:
            while sent < filler:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer is waiting
        return _read_to_close(sock)


def _read_to_close(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while data := sock.recv(65536):
            answer += data
    except ConnectionResetError:
        pass  # closed with unread bytes: the answer was read first
    return answer


def test_oversized_headers_get_431_and_the_server_keeps_serving(
    limits_server: ThreadedServer, small_body: dict
) -> None:
    head = b"POST /invocations HTTP/1.1\r\nHost: test\r\nX-Filler: "
    answer = _raw_exchange(limits_server, head, filler=8 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"exceed 32768 bytes" in answer
    assert httpx.post(f"{limits_server.url}/invocations", json=small_body).status_code == 200


def test_a_whole_oversized_header_in_one_send_gets_431(limits_server: ThreadedServer) -> None:
    """The newcomer's case: 100 KB of header sent complete at once (not trickled) used to be
    parsed whole before the size was checked, and got 200."""
    head = b"GET /ping HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    answer = _raw_exchange(limits_server, head)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_an_oversized_header_on_a_kept_alive_connection_gets_431(
    limits_server: ThreadedServer,
) -> None:
    small = b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n"
    big = b"GET /ping HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", limits_server.port), timeout=120) as sock:
        sock.sendall(small)
        first = sock.recv(65536)
        sock.sendall(big)
        second = _read_to_close(sock)
    assert first.startswith(b"HTTP/1.1 200 "), first[:200]
    assert second.startswith(b"HTTP/1.1 431 "), second[:200]


def test_headers_within_the_limit_are_accepted(
    limits_server: ThreadedServer, small_body: dict
) -> None:
    headers = {"x-note": "n" * 16_000}
    response = httpx.post(f"{limits_server.url}/invocations", json=small_body, headers=headers)
    assert response.status_code == 200


def test_headers_sent_too_slowly_get_408_and_the_connection_closes(
    limits_server: ThreadedServer,
) -> None:
    """A client that never finishes its headers (slowloris) does not hold a connection."""
    answer = _raw_exchange(limits_server, b"POST /invocations HTTP/1.1\r\nHost: test\r\n")
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    idle = _raw_exchange(limits_server, b"")  # connected, sent nothing
    assert idle.startswith(b"HTTP/1.1 408 "), idle[:200]


def _read_one_answer(sock: socket.socket) -> tuple[int, bytes]:
    """(status, body) of one answer with a Content-Length, read off a kept-alive socket."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = sock.recv(65536)
        assert data, answer
        answer += data
    head, _, content = answer.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])
    while len(content) < length:
        data = sock.recv(65536)
        assert data, answer
        content += data
    return int(head.split()[1]), content


def test_a_kept_alive_connection_s_next_request_is_timed_from_its_first_byte(
    limits_server: ThreadedServer, small_body: dict
) -> None:
    """A request that arrives whole sets no timer; the next one on the connection, whose
    headers stop half way, still gets its 408 (its timer armed once its first read is
    parsed), and the connection closes."""
    body = httpx.Request("POST", "/", json=small_body).content
    whole = (
        b"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", limits_server.port), timeout=120) as sock:
        sock.sendall(whole)
        first = sock.recv(65536)
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: te")
        second = _read_to_close(sock)
    assert first.startswith(b"HTTP/1.1 200 "), first[:200]
    assert second.startswith(b"HTTP/1.1 408 "), second[:200]
    assert second.endswith(b"headers not received within 1 s"), second[-200:]


def test_a_request_in_many_reads_within_the_limits_is_answered(
    limits_server: ThreadedServer, small_body: dict
) -> None:
    """Headers and body each in pieces, paused between (each pause well within the 1 s
    header timeout and the body's gap timeout): answered 200 with the row's prediction,
    the same as the request sent whole, twice on one kept-alive connection."""
    head, body, answer = _row_exchange(limits_server, small_body)
    request = head + body
    with socket.create_connection(("127.0.0.1", limits_server.port), timeout=120) as sock:
        for _ in range(2):
            for start in range(0, len(request), 40):
                sock.sendall(request[start : start + 40])
                time.sleep(0.01)
            status, content = _read_one_answer(sock)
            assert (status, content) == (200, answer)


def _row_exchange(
    server: ThreadedServer, body_json: dict, extra_header: bytes = b""
) -> tuple[bytes, bytes, bytes]:
    """(request head with `extra_header`, body, the answer's body when sent whole) of a
    `POST /invocations` of `body_json`."""
    body = httpx.Request("POST", "/", json=body_json).content
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"%sContent-Length: %d\r\n\r\n" % (extra_header, len(body))
    )
    whole = httpx.post(f"{server.url}/invocations", content=body, headers={
        "content-type": "application/json"})  # fmt: skip
    assert whole.status_code == 200, whole.text
    return head, body, whole.content


def test_an_expect_100_continue_request_gets_its_interim_answer_before_the_body(
    limits_server: ThreadedServer, small_body: dict
) -> None:
    """The `100 Continue` goes out at once (the client sends the body only once it has it),
    though each answer's head waits for its body to leave in one write; then the answer."""
    head, body, answer = _row_exchange(limits_server, small_body, b"Expect: 100-continue\r\n")
    with socket.create_connection(("127.0.0.1", limits_server.port), timeout=10) as sock:
        sock.sendall(head)
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            data = sock.recv(1)
            assert data, interim
            interim += data
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert _read_one_answer(sock) == (200, answer)


class _RecordingTransport(asyncio.Transport):
    """The socket's side of a connection: every `write` kept as it was made."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        addresses = {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}
        return addresses.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _answers_written(app: object, requests: int, method: bytes = b"POST") -> _RecordingTransport:
    """The server's protocol (limits as `ct serve` sets them) answering `requests` requests
    of `method` on one kept-alive connection with `app`: what it wrote, write by write."""
    config = uvicorn.Config(app, http="httptools", access_log=False, log_level="warning")
    config.load()
    protocol_class = bounded_http_protocol(65536, 10.0, 60.0, body_time_limit_s=60.0)
    loop = asyncio.new_event_loop()
    try:
        state = ServerState()
        protocol = protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
        transport = _RecordingTransport()
        protocol.connection_made(transport)
        request = b"%s /invocations HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\n{}" % method

        async def exchange() -> None:
            for _ in range(requests):
                protocol.data_received(request)
                await asyncio.gather(*state.tasks, return_exceptions=True)

        loop.run_until_complete(exchange())
        return transport
    finally:
        loop.close()


_ANSWER = b'{"predictions": ["no"]}'


async def _fixed_answer(scope: dict, receive: object, send: object) -> None:
    headers = [(b"content-length", b"%d" % len(_ANSWER))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _ANSWER})


def test_an_answer_s_head_and_body_leave_in_one_write() -> None:
    """uvicorn writes an answer's status line and headers, then its body: two system calls
    a request. Each answer is one write here, whole, on a kept-alive connection too."""
    transport = _answers_written(_fixed_answer, 2)
    assert len(transport.writes) == 2 and not transport.closed
    for written in transport.writes:
        head, _, body = written.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 23" in head
        assert body == _ANSWER


def test_a_head_request_s_answer_is_written_without_a_body() -> None:
    """uvicorn writes no body for a HEAD request: its head is written as it comes (held, it
    would never leave), each time on a kept-alive connection."""
    transport = _answers_written(_fixed_answer, 2, method=b"HEAD")
    assert len(transport.writes) == 2 and not transport.closed
    for written in transport.writes:
        assert written.startswith(b"HTTP/1.1 200 OK\r\n")
        assert written.endswith(b"content-length: 23\r\n\r\n")


def test_an_answer_broken_off_after_its_head_still_writes_the_head_then_closes() -> None:
    """An app that fails once its headers are sent: the head goes out before the close,
    as uvicorn's own protocol writes it (nothing held back is lost)."""

    async def app(scope: dict, receive: object, send: object) -> None:
        headers = [(b"content-length", b"10")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        raise RuntimeError("the app failed mid-answer")

    transport = _answers_written(app, 1)
    assert len(transport.writes) == 1 and transport.closed
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"content-length: 10\r\n\r\n")


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("Application/JSON", 200),
        ("application/json; charset=UTF-8", 200),
        ('APPLICATION/JSON;charset="utf-8"', 200),
        ("application/json ; Charset=utf-8", 200),
        ("application/json; charset=latin-1", 415),
        ("application/jsonx", 415),
    ],
)
def test_content_type_is_matched_as_http_says(
    limits_server: ThreadedServer, small_body: dict, content_type: str, status: int
) -> None:
    response = httpx.post(
        f"{limits_server.url}/invocations",
        content=httpx.Request("POST", "/", json=small_body).content,
        headers={"content-type": content_type},
    )
    assert response.status_code == status, response.text


def test_csv_content_type_is_case_insensitive(
    limits_server: ThreadedServer, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    response = httpx.post(
        f"{limits_server.url}/invocations",
        content=_big_csv(holdout, bank_spec, 3),
        headers={"content-type": "Text/CSV; charset=utf-8"},
    )
    assert response.status_code == 200 and len(response.json()["predictions"]) == 3


def test_every_answer_is_counted_with_its_status_408_and_431_included(
    bundle_dir: Path, tmp_path: Path, small_body: dict
) -> None:
    """The newcomer's finding: 408 and 431 (given by the HTTP layer, before any route) were
    missing from /metrics. Every answer is in `ct_http_responses_total` by status; the HTTP
    layer's own are also errors of endpoint `http`."""
    config = server_config(bundle_dir, tmp_path, header_timeout_s=1.0)
    with ThreadedServer(config) as server:
        head = b"GET /ping HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        assert _raw_exchange(server, head).startswith(b"HTTP/1.1 431 ")
        assert _raw_exchange(server, b"").startswith(b"HTTP/1.1 408 ")
        assert _raw_exchange(server, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert httpx.get(f"{server.url}/nowhere").status_code == 404
        assert httpx.get(f"{server.url}/invocations").status_code == 405
        assert httpx.post(f"{server.url}/invocations", json={}).status_code == 400
        assert httpx.post(f"{server.url}/invocations", json=small_body).status_code == 200
        metrics = httpx.get(f"{server.url}/metrics").text
    counted = dict(re.findall(r'^ct_http_responses_total\{status="(\d+)"\} (\d+)$', metrics, re.M))
    # 200: the scored request plus the start-up probes of /ping.
    assert {status: count for status, count in counted.items() if status != "200"} == {
        "431": "1",
        "408": "1",
        "400": "2",
        "404": "1",
        "405": "1",
    }
    assert int(counted["200"]) >= 2
    for status in ("400", "408", "431"):
        line = f'ct_request_errors_total{{endpoint="http",status="{status}"}} 1'
        assert line in metrics.splitlines(), metrics
