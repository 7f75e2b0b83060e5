"""HTTP plumbing shared by every endpoint: bounded body reads, request ids, auth, errors."""

from __future__ import annotations

import hmac
import random
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Protocol

import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response

JSON = "application/json"
_MAX_REQUEST_ID_LENGTH = 128


class IncomingRequest(Protocol):
    """What these helpers read of a request: Starlette's `Request`, or `hot_routes.RawRequest`."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def receive(self) -> Callable[[], Awaitable[MutableMapping[str, Any]]]: ...


class HttpError(Exception):
    """An answer other than success: status, MLflow-style error code, message."""

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        violations: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        # A refused request's data-contract breaches by (column, rule), for /metrics.
        self.violations = violations or {}


class ModelFailure(HttpError):
    """The model raised on input that passed validation: answered 400 as MLflow does, but
    the fault is the server's (its model), not the client's."""


async def read_body(request: IncomingRequest, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it is known to exceed `limit` bytes,
    and (415) a body sent with a content coding (`Content-Encoding: gzip`): it would be
    read as plain bytes otherwise. Bodies are small; send them uncompressed."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise HttpError(
            415,
            "BAD_REQUEST",
            f"Content-Encoding {encoding!r} is not supported: send the body uncompressed",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    # The ASGI messages read straight from `receive`, not through an async generator
    # (`Request.stream()`): a generator's set-up and its two steps cost more than the rest
    # of this function for a body that comes in one message, as a row's does.
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:  # also covers chunked bodies without a length
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()  # the client left, or the HTTP layer answered (408)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if not message.get("more_body", False):
            return b"".join((*chunks, chunk)) if chunks else chunk
        chunks.append(chunk)


def _too_large(limit: int) -> HttpError:
    return HttpError(413, "BAD_REQUEST", f"request body exceeds the limit of {limit} bytes")


def request_id_of(request: IncomingRequest) -> str | None:
    """The client's `X-Request-ID`, validated; None when it sent none."""
    request_id = request.headers.get("x-request-id")
    if request_id is None:
        return None
    if not 0 < len(request_id) <= _MAX_REQUEST_ID_LENGTH or not request_id.isprintable():
        raise HttpError(
            400,
            "BAD_REQUEST",
            f"X-Request-ID must be 1-{_MAX_REQUEST_ID_LENGTH} printable characters",
        )
    return unreserved(request_id, "X-Request-ID")


def is_row_id(request_id: str) -> bool:
    """`<id>:<digits>`: the prediction log's id of a row of a multi-row request."""
    _, colon, tail = request_id.rpartition(":")
    return bool(colon) and tail.isdigit() and tail.isascii()


def unreserved(request_id: str, where: str) -> str:
    """`request_id` unless it has the form of a row id, `<id>:<i>`, which the prediction log
    gives row i of a multi-row request `<id>`: sent by a client it would be a second record
    with that id, and one label would join both. Refused (400), not rewritten: a label
    posted with the id the client chose must never join another request's row."""
    if is_row_id(request_id):
        head, _, tail = request_id.rpartition(":")
        raise HttpError(
            400,
            "BAD_REQUEST",
            f"{where} {request_id!r} ends in ':' and digits, the form of the ids the server "
            f"gives the rows of a multi-row request (<request id>:<row>; '{head}' row {tail}): "
            "send an id that does not end in ':<digits>'",
        )
    return request_id


def new_request_id() -> str:
    # uuid4's urandom syscall cost ~40 us a request on the benchmark VM; an id only needs
    # to be unique, not unpredictable, so a seeded PRNG in uuid4's hex form is enough.
    return f"{random.getrandbits(128):032x}"


def check_bearer(
    request: IncomingRequest, secret: str | None, *, allow_api_key_header: bool
) -> None:
    """401 unless the request carries `secret` (no secret configured: nothing to check)."""
    if secret is None:
        return
    presented = request.headers.get("x-api-key", "") if allow_api_key_header else ""
    if not presented:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" else ""
    # Constant-time comparison: response timing must not reveal how much of a guess matched.
    if not presented or not hmac.compare_digest(presented.encode(), secret.encode()):
        raise HttpError(401, "UNAUTHENTICATED", "missing or invalid credentials")


def json_response(
    payload: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON, headers=headers)


def mlflow_error(error: HttpError, headers: dict[str, str] | None = None) -> Response:
    """MLflow's scoring-server error shape; 415 is plain text there, so it is here too."""
    if error.status == 415:
        return Response(error.message, status_code=415, media_type="text/plain", headers=headers)
    return json_response(
        {"error_code": error.error_code, "message": error.message}, error.status, headers
    )


def v2_error(error: HttpError, headers: dict[str, str] | None = None) -> Response:
    """Open Inference Protocol error object."""
    return json_response({"error": error.message}, error.status, headers)
