"""Request limits for uvicorn's httptools protocol, as nginx sets them.

uvicorn bounds neither the size of a request's headers (httptools buffers a 64 MiB header
as happily as a 64-byte one) nor the time a client takes to send them or its body (a client
trickling one byte every few seconds holds a connection for ever: slowloris).
`bounded_http_protocol` returns the same protocol with these limits: past
`max_header_bytes` of request line + headers the answer is 431 and the connection closes;
headers not complete within `header_timeout_s` of the connection opening (or of the
request's first byte, on a kept-alive connection) get a 408 and the connection closes; a
body with no bytes for `body_timeout_s` (between two reads, as nginx's
`client_body_timeout`; time while the server itself paused reading is not counted) gets a
408 and the connection closes, and so does a body not complete within `body_time_limit_s`
of its headers (a byte every 59 s keeps the gap timeout happy for ever).

Connection cap (`max_connections`, enforced here, not by uvicorn's `limit_concurrency`): the
server holds at most `max_connections` requests at once (a connection is held from its
request's headers to its answer; a slow client's body holds it); one more is answered 503
(`retry-after: 1`, the body names the cap) and its connection closed, so many slow clients
cannot exhaust the server. `--max-connections 5` holds 5 (uvicorn's test counted the
request's own connection with `>=`, and idle keep-alive ones: it held 4 or fewer).
Exempt: GET and HEAD requests (health, metadata, metrics: no body to trickle, answered at
once) and the admin API (`/admin/...`, token-guarded): a server busy at its cap still
answers `/ping` 200 and takes a hot swap, so no deployer, watchdog or rollout mistakes
"busy" for "dead" and restarts it. Each request's ASGI `state` carries the requests held
when its headers arrived (`HELD_STATE`), so `/ping` can say the server is at its cap
(`capacity_note`, sent as `config.BUSY_HEADER`).

One write per answer: uvicorn writes an answer's status line and headers, then its body, two
`write` system calls (and two TCP segments for the client to read); each request's cycle
here writes them together (`_HeadWithBody`), one system call fewer per request.
Everything else is uvicorn's own code path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Requests the connection cap never refuses (see the module docstring).
UNCAPPED_METHODS = (b"GET", b"HEAD")
UNCAPPED_PREFIX = b"/admin/"
# Key in a request's ASGI `state` (set while a cap applies): the requests held before it.
HELD_STATE = "ct_requests_held"
# uvicorn's interim answer to `Expect: 100-continue`, written as the app first reads the body.
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _HeadWithBody:
    """The connection's transport as one request's cycle sees it: the answer's status line
    and headers (the cycle's first write but a `100 Continue`, which the client awaits
    before it sends the body) are held and written with the next write, the first body
    bytes, or before a close: one `write` system call per answer where uvicorn makes two.
    What else the cycle calls of its transport (`is_closing`) is passed on. Not for a
    HEAD request: uvicorn writes no body for it, the head alone is the answer."""

    __slots__ = ("_head", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if self._started:
            head = self._head
            if head is not None:
                self._head = None
                data = head + data
            self._transport.write(data)
        elif data == _CONTINUE:
            self._transport.write(data)
        else:
            self._started = True
            self._head = data

    def close(self) -> None:
        if self._head is not None:  # an answer broken off after its headers: as uvicorn's
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class _BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    body_time_limit_s: float
    max_connections: int | None
    # Told the status of every answer this layer gives itself (the app never sees them).
    on_refused: Callable[[int], None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._reading_headers = True
        # A request begun whose headers are not complete; one whose body is not complete.
        self._in_headers = False
        self._in_body = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_body_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Counted before the parser sees the chunk: a whole oversized header often arrives in
        # one read, and the parser would complete it (resetting the count) before any check.
        if self._reading_headers:
            end = data.find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else end + 4
            if self._header_bytes > self.max_header_bytes:
                self._refuse(
                    431,
                    "Request Header Fields Too Large",
                    f"request line and headers exceed {self.max_header_bytes} bytes",
                )
                return
        super().data_received(data)
        if self._in_headers or self._in_body:
            self._arm_waiting_timers()

    def _arm_waiting_timers(self) -> None:
        """The timers of a request this read left incomplete, armed once the read is
        parsed rather than in the parser's callbacks: a request that arrives in one read
        (a row's does) sets and cancels no timer, where arming in the callbacks set four
        and cancelled four per request (this layer cost 5.7 µs a request above uvicorn's
        own protocol, now 2.3: benchmarks/serving/README.md). The same deadlines: the
        loop's clock is read once per iteration, so a timer armed here runs from the same
        instant as one armed in a callback."""
        if self.transport.is_closing():
            return  # refused or answered already
        if self._in_headers:
            if self._header_timer is None:  # from the request's first byte (or connection)
                self._arm_header_timer()
            return
        self._arm_body_timer()  # the gap counts from this read
        if self._body_deadline is None:  # the whole body's, from its headers
            self._body_deadline = self.loop.call_later(self.body_time_limit_s, self._body_overdue)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_headers = True
        self._in_headers = True
        # The first request's headers are timed from its first byte, not the connection's
        # opening (armed again once this read is parsed, if they are still incomplete).
        self._cancel_header_timer()

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._in_headers = False
        self._in_body = True
        self._header_bytes = 0
        self._cancel_header_timer()
        if self.max_connections is not None:
            self.scope["state"][HELD_STATE] = len(self.tasks)
        cycle = self.cycle
        if self._over_connection_cap():
            self.on_refused(503)  # answered by `_at_capacity`, unseen by the app
            self._start_request(_at_capacity(self.max_connections or 0))
        else:
            super().on_headers_complete()
        # This request's cycle (an upgrade makes none); a HEAD answer has no body write.
        if self.cycle is not cycle and self.scope["method"] != "HEAD":
            self.cycle.transport = _HeadWithBody(self.transport)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._in_body = False
        self._cancel_body_timers()
        super().on_message_complete()
        # On a kept-alive connection the next bytes are the next request's headers.
        self._reading_headers = True

    def _over_connection_cap(self) -> bool:
        """`max_connections` requests held already (their ASGI tasks), for a request the
        cap applies to."""
        cap = self.max_connections
        return cap is not None and len(self.tasks) >= cap and not self._uncapped()

    def _uncapped(self) -> bool:
        return self.parser.get_method() in UNCAPPED_METHODS or self.url.startswith(UNCAPPED_PREFIX)

    def _start_request(self, app: Any) -> None:
        """uvicorn's `on_headers_complete` with `app` answering this one request: uvicorn
        reads `self.app` there (this is synchronous, so no other request sees the swap)."""
        served, self.app = self.app, app
        try:
            super().on_headers_complete()
        finally:
            self.app = served

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._reading_headers:
            self._refuse(
                408, "Request Timeout", f"headers not received within {self.header_timeout_s:g} s"
            )

    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_timeout)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_body_timers(self) -> None:
        """The body is read (or refused, or the connection gone): cancel the gap timer and
        the whole body's deadline."""
        self._cancel_body_timer()
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.flow.read_paused:  # the server is not reading (its buffer is full): wait
            self._arm_body_timer()
            return
        self._end_slow_body(f"request body: no bytes received for {self.body_timeout_s:g} s")

    def _body_overdue(self) -> None:
        self._body_deadline = None
        if self.flow.read_paused:  # the server's own pause is not the client's time: wait
            self._body_deadline = self.loop.call_later(self.body_timeout_s, self._body_overdue)
            return
        self._end_slow_body(
            f"request body not complete within {self.body_time_limit_s:g} s of its headers "
            "(the server's limit for a whole body)"
        )

    def _end_slow_body(self, message: str) -> None:
        if self.cycle is None or self.cycle.response_started:
            self.transport.close()  # answered already (without reading the body): just close
            return
        self._refuse(408, "Request Timeout", message)

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own answer to bytes that are not HTTP.
        self.on_refused(400)
        super().send_400_response(msg)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._reading_headers = self._in_headers = self._in_body = False
        self._cancel_header_timer()
        self._cancel_body_timers()
        if self.transport.is_closing():
            return
        self.on_refused(status)
        body = message.encode()
        self.transport.write(
            b"".join(
                [
                    f"HTTP/1.1 {status} {reason}\r\n".encode(),
                    b"content-type: text/plain; charset=utf-8\r\n",
                    f"content-length: {len(body)}\r\n".encode(),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()


def bounded_http_protocol(
    max_header_bytes: int,
    header_timeout_s: float,
    body_timeout_s: float,
    on_refused: Callable[[int], None] = lambda status: None,
    *,
    body_time_limit_s: float,
    max_connections: int | None = None,
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class with these limits (pass as `http=`): bytes and
    seconds for the headers, seconds between two reads of a body and for the whole body;
    `on_refused(status)` is called for each answer it gives itself (400, 408, 431, and 503
    beyond `max_connections`; None: no cap)."""
    return type(
        "BoundedHttpToolsProtocol",
        (_BoundedHttpToolsProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
            "body_time_limit_s": body_time_limit_s,
            "max_connections": max_connections,
            # staticmethod: a plain function stored on the class would bind as a method.
            "on_refused": staticmethod(on_refused),
        },
    )


def capacity_note(state: dict[str, Any], cap: int) -> str | None:
    """For an exempt request (`/ping`), from its ASGI `state`: the server's words when it
    held `cap` requests as this one arrived (a capped request would have been refused 503),
    else None."""
    held = state.get(HELD_STATE)
    if held is None or held < cap:
        return None
    return f"holds its maximum of {cap} connections (serving.max_connections)"


def _at_capacity(cap: int) -> Any:
    """The ASGI answer to a request beyond the connection cap: 503, closed, named."""
    body = (
        f"server busy: it holds its maximum of {cap} connections (serving.max_connections); "
        "retry later"
    ).encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return answer
