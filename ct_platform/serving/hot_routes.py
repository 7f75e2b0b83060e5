"""The two scoring routes straight from ASGI; every other request goes through Starlette.

Measured in-process on a single-row `/invocations` (benchmarks/serving/profile_hot_path.py):
Starlette's middleware stack, router (a regex per route) and `Request` object cost more
per request than parsing the row. `POST /invocations` and `POST /v2/models/{name}/infer`
(and its versioned form, `.../{name}/versions/{version}/infer`) are therefore matched here by
plain string comparison and handed a `RawRequest`, which offers what the endpoints read
(`headers`, `path_params`, `receive`); the endpoints and their answers are the same objects
Starlette would call, so both paths behave alike.
Everything else (other methods on these paths included: 405 from Starlette) is Starlette's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import ClientDisconnect

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# An endpoint: request -> an ASGI-callable answer.
Endpoint = Callable[[Any], Awaitable[AsgiApp]]

_V2_MODELS = "/v2/models/"
_INFER = "/infer"
_VERSIONS = "versions"


class RawRequest:
    """The parts of a Starlette `Request` the scoring endpoints use, without its machinery:
    `headers`, `path_params` and `receive` (the body is read from it by `read_body`)."""

    __slots__ = ("headers", "path_params", "receive")

    def __init__(self, scope: Scope, receive: Receive, path_params: dict[str, str]) -> None:
        # Header names arrive lower-cased; the first of repeated headers wins, as in Starlette.
        self.headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in reversed(scope["headers"])
        }
        self.path_params = path_params
        self.receive = receive


class HotRoutes:
    """ASGI app: the scoring routes answered directly, the rest by `fallback` (Starlette).

    `count` is called with the status of every HTTP answer (an unexpected exception in a
    scoring route: 500, which uvicorn sends); `refused` is the HTTP layer's counterpart,
    for answers given before any route (see `http_limits`).
    """

    def __init__(
        self,
        *,
        invocations: Endpoint,
        v2_infer: Endpoint,
        fallback: AsgiApp,
        count: Callable[[int], None],
        refused: Callable[[int], None],
    ) -> None:
        self._invocations = invocations
        self._v2_infer = v2_infer
        self.fallback = fallback
        self._count = count
        self.refused = refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.fallback(scope, receive, send)
        if scope["method"] == "POST":
            path = scope["path"]
            if path == "/invocations":
                return await self._answer(self._invocations, {}, scope, receive, send)
            params = _v2_infer_params(path)
            if params is not None:
                return await self._answer(self._v2_infer, params, scope, receive, send)

        gone = False  # the client left (or the HTTP layer answered it, e.g. 408) mid-body

        async def watched_receive() -> Message:
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not gone:
                self._count(message["status"])
            await send(message)

        try:
            await self.fallback(scope, watched_receive, counted_send)
        except ClientDisconnect:
            if not gone:
                raise

    async def _answer(
        self,
        endpoint: Endpoint,
        path_params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        try:
            answer = await endpoint(RawRequest(scope, receive, path_params))
        except ClientDisconnect:
            return  # no one to answer: the client left, or the HTTP layer answered (408)
        except Exception:
            self._count(500)  # uvicorn answers it
            raise
        self._count(answer.status_code)
        await answer(scope, receive, send)


def _v2_infer_params(path: str) -> dict[str, str] | None:
    """`{"name"}` of `/v2/models/{name}/infer`, `{"name", "version"}` of
    `/v2/models/{name}/versions/{version}/infer` (non-empty path segments, as Starlette's);
    None for another path."""
    if not (path.startswith(_V2_MODELS) and path.endswith(_INFER)):
        return None
    segments = path[len(_V2_MODELS) : -len(_INFER)].split("/")
    if len(segments) == 1 and segments[0]:
        return {"name": segments[0]}
    if len(segments) == 3 and segments[1] == _VERSIONS and segments[0] and segments[2]:
        return {"name": segments[0], "version": segments[2]}
    return None
