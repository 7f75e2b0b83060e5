"""Admin API (bearer token): load bundles into slots, route traffic, promote, roll back.

    GET    /admin/slots                      current slots and routing
    POST   /admin/slots/{slot}/load          {"bundle": "<name or path>", "use_onnx": true}
    DELETE /admin/slots/candidate            unload the candidate
    POST   /admin/routing                    {"candidate_weight": 0.1, "shadow": false}
    POST   /admin/promote                    candidate -> stable (old stable kept as previous)
    POST   /admin/rollback                   previous <-> stable
    GET    /admin/stats                      per-slot running totals (see `slot_stats`)

Without a token configured (the env var named by `admin_token_env` unset) the admin API
is off: every call answers 403. `load` only takes bundles under `$CT_HOME/bundles` (a
bundle folder name, or a path inside that folder; symlinks are resolved first), verified
against their `manifest.json`; errors name the bundle as the client did, never a resolved
server path. Loading runs in a worker thread, so scoring continues
while a new model loads; the swap itself is one reference assignment.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ct_platform.serving.bundle import BundleError, load_bundle
from ct_platform.serving.slots import SLOT_NAMES, ServedModel, SlotError, SlotState
from ct_platform.serving.transport import (
    HttpError,
    check_bearer,
    json_response,
    mlflow_error,
    read_body,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ct_platform.serving.app import Server

_ADMIN_BODY_LIMIT = 64 * 1024
BUNDLES_DIR = "bundles"

logger = logging.getLogger("ct_platform.serving.admin")


def routes(server: Server) -> list[Route]:
    def guarded(handler: Callable[[Server, Request], Awaitable[SlotState]]) -> Callable:
        async def endpoint(request: Request) -> Response:
            try:
                _check_admin(server, request)
                async with server.admin_lock:
                    server.state = await handler(server, request)
            except HttpError as error:
                return mlflow_error(error)
            return json_response(server.state.describe())

        return endpoint

    async def stats(request: Request) -> Response:
        try:
            _check_admin(server, request)
        except HttpError as error:
            return mlflow_error(error)
        # Read on the loop, between two requests: one consistent set of totals.
        return json_response(
            {
                **server.slot_stats.snapshot(),
                "ignored_columns": server.metrics.ignored_by_column(),
                "routing": server.state.describe(),
            }
        )

    return [
        Route("/admin/slots", guarded(_current), methods=["GET"]),
        Route("/admin/slots/{slot}/load", guarded(_load), methods=["POST"]),
        Route("/admin/slots/candidate", guarded(_unload_candidate), methods=["DELETE"]),
        Route("/admin/routing", guarded(_routing), methods=["POST"]),
        Route("/admin/promote", guarded(_promote), methods=["POST"]),
        Route("/admin/rollback", guarded(_rollback), methods=["POST"]),
        Route("/admin/stats", stats, methods=["GET"]),
    ]


def _check_admin(server: Server, request: Request) -> None:
    if server.admin_token is None:
        raise HttpError(
            403,
            "PERMISSION_DENIED",
            f"admin API disabled: set ${server.config.admin_token_env} to enable it",
        )
    check_bearer(request, server.admin_token, allow_api_key_header=False)


async def _current(server: Server, request: Request) -> SlotState:
    return server.state


async def _load(server: Server, request: Request) -> SlotState:
    slot = request.path_params["slot"]
    if slot not in SLOT_NAMES:
        raise HttpError(404, "RESOURCE_DOES_NOT_EXIST", f"unknown slot '{slot}': use {SLOT_NAMES}")
    body = await _json_body(request)
    bundle = body.get("bundle")
    if not isinstance(bundle, str) or not bundle:
        raise HttpError(400, "BAD_REQUEST", "'bundle' must be the name of a bundle directory")
    use_onnx = body.get("use_onnx", server.config.use_onnx)
    if not isinstance(use_onnx, bool):
        raise HttpError(400, "BAD_REQUEST", "'use_onnx' must be true or false")
    directory = allowed_bundle_dir(server.config.home / BUNDLES_DIR, bundle)
    threads = server.config.batch_threads
    try:
        model = await anyio.to_thread.run_sync(
            lambda: load_bundle(directory, use_onnx=use_onnx, batch_threads=threads)
        )
    except BundleError as error:
        message = str(error).replace(str(directory), bundle)
        raise HttpError(400, "BAD_REQUEST", f"cannot load bundle '{bundle}': {message}") from None
    except Exception:  # a corrupt file can make onnxruntime or skops raise anything
        logger.exception("loading bundle %s failed", directory)
        raise HttpError(
            400, "BAD_REQUEST", f"cannot load bundle '{bundle}': a bundle file is unreadable"
        ) from None
    config = server.config
    return server.state.load(
        slot, ServedModel.of(model, config.out_of_contract, config.unknown_columns, config.max_rows)
    )


def allowed_bundle_dir(root: Path, bundle: str) -> Path:
    """The bundle folder `bundle` names (a name under `root`, or a path inside it).

    Raises `HttpError` 403 for anything resolving outside `root` (`..`, absolute paths
    elsewhere, symlinks out), 404 for a folder that does not exist.
    """
    root = root.resolve()
    directory = (root / bundle).resolve()
    if directory == root or not directory.is_relative_to(root):
        raise HttpError(
            403,
            "PERMISSION_DENIED",
            f"bundle '{bundle}' is outside the bundles folder: only bundles under "
            "$CT_HOME/bundles can be loaded",
        )
    if not directory.is_dir():
        raise HttpError(
            404, "RESOURCE_DOES_NOT_EXIST", f"no bundle '{bundle}' under $CT_HOME/bundles"
        )
    return directory


async def _unload_candidate(server: Server, request: Request) -> SlotState:
    return server.state.unload_candidate()


async def _routing(server: Server, request: Request) -> SlotState:
    body = await _json_body(request)
    state = server.state
    weight = body.get("candidate_weight", state.candidate_weight)
    shadow = body.get("shadow", state.shadow)
    if type(weight) not in (int, float) or not isinstance(shadow, bool):
        raise HttpError(400, "BAD_REQUEST", "'candidate_weight' must be a number, 'shadow' a bool")
    return _apply(lambda: state.set_routing(candidate_weight=float(weight), shadow=shadow))


async def _promote(server: Server, request: Request) -> SlotState:
    return _apply(server.state.promote)


async def _rollback(server: Server, request: Request) -> SlotState:
    return _apply(server.state.rollback)


def _apply(change: Callable[[], SlotState]) -> SlotState:
    try:
        return change()
    except SlotError as error:
        raise HttpError(409, "INVALID_STATE", str(error)) from None


async def _json_body(request: Request) -> dict[str, Any]:
    body = await read_body(request, _ADMIN_BODY_LIMIT)
    try:
        payload = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as error:
        raise HttpError(400, "BAD_REQUEST", f"request body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise HttpError(400, "BAD_REQUEST", "request body must be a JSON object")
    return payload
