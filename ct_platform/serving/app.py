"""The ASGI app: MLflow scoring protocol, Open Inference Protocol v2, metrics, feedback.

Small requests to an ONNX graph are scored inline on the event loop: a single-row call takes
tens of microseconds, far less than a hop to a worker thread. Bodies over `inline_body_bytes`,
and every request to a bundle scored by scikit-learn (milliseconds to seconds a row for a big
ensemble), are parsed, scored and rendered in a worker thread (at most `big_request_threads`
at once), their log record's features formatted meanwhile in a formatter thread, so one
slow request never stalls the others: a slow canary candidate must not hold up stable's
answers; a request over `max_rows` rows is refused with a 413 before any of its values is
read (`InputSchema.bound_rows`). Every prediction path reads
the slot state once, so an admin swap never splits a request between two models (see
`slots`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import orjson
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.routing import Route as HttpRoute

from ct_platform.serving import admin, mlflow_protocol, v2_protocol
from ct_platform.serving.bundle import Prediction, load_bundle
from ct_platform.serving.card import card_response
from ct_platform.serving.config import BUSY_HEADER, ServerConfig
from ct_platform.serving.feedback import FeedbackLog, LabelJudge, LabelRule, parse_feedback
from ct_platform.serving.hot_routes import HotRoutes, Receive, Scope, Send
from ct_platform.serving.http_limits import capacity_note
from ct_platform.serving.metrics import Metrics
from ct_platform.serving.openapi import openapi_document
from ct_platform.serving.platform_figures import platform_gauges
from ct_platform.serving.prediction_log import PredictionLog, ScoredBatch, features_json
from ct_platform.serving.schema import (
    IGNORED_COLUMNS_HEADER,
    ContractError,
    InputError,
    ParsedRows,
    ignored_columns_header,
)
from ct_platform.serving.slot_stats import SlotStats
from ct_platform.serving.slots import Route, ServedModel, SlotState
from ct_platform.serving.transport import (
    JSON,
    HttpError,
    IncomingRequest,
    ModelFailure,
    check_bearer,
    json_response,
    mlflow_error,
    new_request_id,
    read_body,
    request_id_of,
    unreserved,
    v2_error,
)
from ct_platform.serving.v2_protocol import InferAsks

logger = logging.getLogger("ct_platform.serving")

SERVER_NAME = "ct-platform"
SERVER_VERSION = "1"
# MLflow's /version reports the MLflow version; ours reports the protocol it mirrors.
MLFLOW_PROTOCOL_VERSION = "3.17.2"

_JSON_BYTES = JSON.encode()

# (body, content type, schema) -> (rows, what a V2 body asks besides them; None for MLflow's)
Parser = Callable[[bytes, str | None, ServedModel], tuple[ParsedRows, InferAsks | None]]
# (prediction, model that produced it, request id, what the body asked) -> response body
Renderer = Callable[[Prediction, ServedModel, str, InferAsks | None], bytes]
ErrorResponder = Callable[[HttpError, dict[str, str]], Response]


class ScoredAnswer:
    """A 200 with a JSON body; once the body has been written, the request's log record
    (`log(batch)`), then the shadow scoring (if any).

    What Starlette's `Response` + `BackgroundTask` do, minus their per-request header work.
    The record is formatted here, after the write, rather than in a `loop.call_soon`
    callback: the same order, without a handle per request and without
    `asyncio.get_running_loop()`, which makes a getpid system call on every call.
    """

    __slots__ = ("background", "batch", "body", "headers", "log")
    status_code = 200

    def __init__(
        self,
        body: bytes,
        headers: dict[str, str],
        log: Callable[[ScoredBatch], None],
        batch: ScoredBatch,
        background: BackgroundTask | None,
    ) -> None:
        self.body = body
        self.headers = headers
        self.log = log
        self.batch = batch
        self.background = background

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = [
            (b"content-type", _JSON_BYTES),
            (b"content-length", str(len(self.body)).encode()),
            *((name.encode(), value.encode("latin-1")) for name, value in self.headers.items()),
        ]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
            await send({"type": "http.response.body", "body": self.body})
        finally:  # the request was scored: logged even if the write failed
            self.log(self.batch)
        if self.background is not None:
            await self.background()


class Scored(NamedTuple):
    """A request parsed, scored and rendered (a `NamedTuple`: a frozen dataclass sets each
    field through `object.__setattr__`, on every request)."""

    parsed: ParsedRows
    prediction: Prediction
    content: bytes
    request_id: str
    # The log record's "features" of many rows, formatted while the model scored them.
    features: orjson.Fragment | None = None


class Server:
    """Holds the slots, metrics and logs, and implements the endpoints."""

    def __init__(self, config: ServerConfig, state: SlotState) -> None:
        self.config = config
        self.state = state
        self.metrics = Metrics()
        self.slot_stats = SlotStats(regression=state.stable.model.meta.task == "regression")
        self.prediction_log = PredictionLog(
            config.predictions_dir,
            max_segment_bytes=config.log_segment_bytes,
            max_segment_seconds=config.log_segment_seconds,
        )
        self.feedback_log = FeedbackLog(config.feedback_dir)
        # Which version answered each recent request: its rule judges that request's label.
        self.labels = LabelJudge(self._served_label_rules)
        self.api_key = config.secret(config.api_key_env)
        self.admin_token = config.secret(config.admin_token_env)
        # Serializes admin read-modify-write of `state`; predictions never take it.
        self.admin_lock = anyio.Lock()
        # Big requests scored at once (each in a worker thread); the others queue.
        self.big_requests = anyio.CapacityLimiter(config.big_request_threads)
        # Formats a big request's log features while its worker thread waits for the model.
        self.features_formatter = ThreadPoolExecutor(1, thread_name_prefix="log-features")

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.prediction_log.start()
        try:
            yield
        finally:
            self.features_formatter.shutdown()
            self.prediction_log.close()

    # -- MLflow scoring protocol -------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        # MLflow answers a bare newline as JSON; some health checkers compare bodies. At its
        # cap the answer stays 200 (alive) and says it is busy, for deployers to leave it be.
        note = capacity_note(request.scope.get("state", {}), self.config.max_connections)
        headers = {BUSY_HEADER: note} if note else None
        return Response("\n", media_type=JSON, headers=headers)

    async def version(self, request: Request) -> Response:
        return Response(MLFLOW_PROTOCOL_VERSION, media_type=JSON)

    async def invocations(self, request: IncomingRequest) -> Response | ScoredAnswer:
        return await self._predict(
            request, "invocations", _parse_invocation, _render_invocation, mlflow_error
        )

    # -- Open Inference Protocol v2 ------------------------------------------------------

    async def v2_server_metadata(self, request: Request) -> Response:
        return json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": []})

    async def v2_live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        return json_response({"ready": True})

    async def v2_model_metadata(self, request: Request) -> Response:
        served = self._v2_model(request)
        if isinstance(served, Response):
            return served
        return json_response(
            v2_protocol.model_metadata(served.model.meta, served.model.backend_name)
        )

    async def v2_model_ready(self, request: Request) -> Response:
        served = self._v2_model(request)
        if isinstance(served, Response):
            return served
        return json_response({"name": served.model.meta.name, "ready": True})

    async def v2_model_card(self, request: Request) -> Response:
        served = self._v2_model(request)
        if isinstance(served, Response):
            return served
        try:
            return card_response(served.model.directory, served.version, request)
        except HttpError as error:
            return v2_error(error)

    async def v2_infer(self, request: IncomingRequest) -> Response | ScoredAnswer:
        served = self._v2_model(request)
        if isinstance(served, Response):
            return served
        return await self._predict(request, "v2_infer", _parse_v2, _render_v2, v2_error)

    def _v2_model(self, request: IncomingRequest) -> ServedModel | Response:
        """The model a `/v2/models/{name}[/versions/{version}]/...` route names: the stable
        one, or the answering slot serving `version`; a 404 naming what is served else."""
        name = request.path_params["name"]
        state = self.state
        if name != state.stable.model.meta.name:
            served = state.stable.model.meta.name
            unknown = f"unknown model '{name}': this server serves '{served}'"
            return v2_error(HttpError(404, "NOT_FOUND", unknown))
        version = request.path_params.get("version")
        try:
            return state.stable if version is None else _pinned(state, name, version).served
        except HttpError as error:
            return v2_error(error)

    # -- prediction core -----------------------------------------------------------------

    async def _predict(
        self,
        request: IncomingRequest,
        endpoint: str,
        parse: Parser,
        render: Renderer,
        error_response: ErrorResponder,
    ) -> Response | ScoredAnswer:
        started = time.perf_counter()
        headers: dict[str, str] = {}
        route = None
        try:
            client_id = request_id_of(request)
            request_id = client_id or new_request_id()
            headers["x-request-id"] = request_id
            check_bearer(request, self.api_key, allow_api_key_header=True)
            body = await read_body(request, self.config.max_body_bytes)
            state = self.state  # read once: a concurrent swap cannot split this request
            routing_key = request.headers.get("x-routing-key")
            version = request.path_params.get("version")  # a versioned V2 route's
            route = (
                state.route(routing_key or request_id)
                if version is None
                else _pinned(state, request.path_params["name"], version)
            )
            content_type = request.headers.get("content-type")
            scored = await self._scored(
                route.served, parse, render, body, content_type, client_id, request_id
            )
        except HttpError as error:
            self.metrics.error(endpoint, error.status)
            self.metrics.contract_violations(error.violations, "rejected")
            if route is not None:  # the slot's model (or its schema) refused the request
                self.slot_stats.error(route.slot, error)
                self.slot_stats.clients.error(route.slot, routing_key, error)
                _add_slot_headers(headers, route)
            return error_response(error, headers)
        request_id = scored.request_id
        headers["x-request-id"] = request_id
        _add_slot_headers(headers, route)
        seconds = time.perf_counter() - started
        batch = self._record(
            endpoint, route.slot, route.served, request_id, scored, seconds, routing_key
        )
        self.labels.answered(request_id, route.served.label_rule)
        if scored.parsed.violations:  # out-of-contract values scored (policy `score`)
            self.metrics.contract_violations(scored.parsed.violations, "scored")
        if scored.parsed.ignored_columns:  # said to the client, counted for the operator
            headers[IGNORED_COLUMNS_HEADER] = ignored_columns_header(scored.parsed.ignored_columns)
            self.metrics.ignored_columns(scored.parsed.ignored_columns)
        shadow = None
        if route.shadow is not None:
            shadow = BackgroundTask(
                self._shadow,
                route.shadow,
                endpoint,
                parse,
                body,
                content_type,
                request_id,
                scored.prediction,
            )
        return ScoredAnswer(scored.content, headers, self.prediction_log.submit, batch, shadow)

    async def _scored(
        self,
        served: ServedModel,
        parse: Parser,
        render: Renderer,
        body: bytes,
        content_type: str | None,
        client_id: str | None,
        new_id: str,
    ) -> Scored:
        score = partial(self._score, served, parse, render, body, content_type, client_id, new_id)
        if len(body) <= self.config.inline_body_bytes and served.model.backend_name == "onnx":
            # A row or a few on a graph: scoring takes microseconds, less than a thread hop.
            return score()
        # Many rows, or a scikit-learn model (a 4,000-tree forest takes 100-200 ms a row),
        # take milliseconds to seconds: in a worker thread the loop keeps answering the
        # other requests meanwhile (ONNX Runtime and the trees' Cython loops release the
        # GIL, the Python parts share it in 5 ms slices). Few at once: they share the cores.
        async with self.big_requests:
            return await anyio.to_thread.run_sync(partial(score, features_beside=True))

    def _score(
        self,
        served: ServedModel,
        parse: Parser,
        render: Renderer,
        body: bytes,
        content_type: str | None,
        client_id: str | None,
        new_id: str,
        *,
        features_beside: bool = False,
    ) -> Scored:
        """Parse, bound, score and render one request (on the loop or in a worker thread).

        The request id: the client's header id, else the body's own (v2 "id"), else `new_id`.
        `features_beside`: the log record's features of many rows are formatted in the
        formatter thread while the model scores them (a worker thread's request: ~0.25 ms
        for 1,000 bank rows, that the loop would spend after the answer otherwise).
        """
        parsed, asks = parse(body, content_type, served)  # 413 over max_rows, first
        body_id = asks and asks.id
        request_id = client_id or (body_id and unreserved(body_id, "the body's id")) or new_id
        features = self._format_features(served, parsed) if features_beside else None
        prediction = _run_model(served, parsed)
        content = render(prediction, served, request_id, asks)
        formatted = None if features is None else features.result()
        return Scored(parsed, prediction, content, request_id, formatted)

    def _format_features(self, served: ServedModel, parsed: ParsedRows) -> Future | None:
        """The log features of many rows being formatted in the formatter thread; None
        for a row (logged from its plain values, `ScoredBatch.row`)."""
        if parsed.values is not None or parsed.n_rows == 1:
            return None
        return self.features_formatter.submit(features_json, served.schema.names, parsed.columns)

    async def _shadow(
        self,
        served: ServedModel,
        endpoint: str,
        parse: Parser,
        body: bytes,
        content_type: str | None,
        request_id: str,
        answered: Prediction,
    ) -> None:
        """Score a copy with the shadow model after the answer went out; only log it and
        count how often it agrees with `answered`, the prediction the client got."""
        started = time.perf_counter()
        try:
            scored = await self._scored(
                served, parse, _render_nothing, body, content_type, request_id, request_id
            )
        except HttpError as error:
            self.metrics.error(endpoint, error.status, slot="shadow")
            self.slot_stats.error("shadow", error)
            return
        seconds = time.perf_counter() - started
        # The client's answer has gone out: the record can be formatted now.
        self.prediction_log.submit(
            self._record(endpoint, "shadow", served, request_id, scored, seconds)
        )
        self.slot_stats.compared(answered, scored.prediction)

    def _record(
        self,
        endpoint: str,
        slot: str,
        served: ServedModel,
        request_id: str,
        scored: Scored,
        seconds: float,
        routing_key: str | None = None,
    ) -> ScoredBatch:
        """Count the answer (metrics, slot and client statistics); its log record's batch,
        for the caller to submit once the response has been written (on the loop whatever
        the rows: 1,000 rows take ~0.2 ms, one orjson call; a worker thread would share the
        GIL with the next requests). `routing_key`: the client's, counted per client."""
        self.metrics.prediction(endpoint, slot, served.version, scored.parsed.n_rows, seconds)
        self.slot_stats.scored(slot, request_id, seconds, scored.prediction, routing_key)
        parsed = scored.parsed
        row = parsed.logged_values  # one row: logged from its plain values, no column arrays
        return ScoredBatch(
            request_id,
            time.time(),
            slot,
            served.version,
            served.schema.names,
            parsed.columns if row is None else [],
            scored.prediction,
            seconds * 1000.0,
            row,
            scored.features,
        )

    # -- feedback, metrics, OpenAPI --------------------------------------------------------

    async def feedback(self, request: Request) -> Response:
        try:
            check_bearer(request, self.api_key, allow_api_key_header=True)
            body = await read_body(request, self.config.max_body_bytes)
            records = parse_feedback(body, self.labels)
        except InputError as error:
            return mlflow_error(HttpError(error.status, error.error_code, str(error)))
        except HttpError as error:
            return mlflow_error(error)
        await anyio.to_thread.run_sync(self.feedback_log.append, records)
        self.slot_stats.feedback(records)
        return json_response({"recorded": len(records)})

    def _served_label_rules(self) -> list[LabelRule]:
        """The rules of the versions loaded now, stable first, each version once."""
        state = self.state
        rules: dict[str, LabelRule] = {}
        for served in (state.stable, state.candidate, state.previous):
            if served is not None:
                rules.setdefault(served.version, served.label_rule)
        return list(rules.values())

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(self._gauges()), media_type="text/plain; version=0.0.4")

    def _gauges(self) -> dict[str, tuple[str, list[tuple[Any, float]]]]:
        state = self.state
        loaded = [
            ("stable", state.stable),
            ("candidate", state.candidate),
            ("previous", state.previous),
        ]
        models = [
            (
                (
                    ("slot", slot),
                    ("model_version", served.version),
                    ("backend", served.model.backend_name),
                ),
                1.0,
            )
            for slot, served in loaded
            if served is not None
        ]
        log = self.prediction_log
        return {
            "ct_model_loaded": ("Loaded models by slot, version and backend.", models),
            "ct_candidate_weight": (
                "Share of traffic answered by the candidate.",
                [((), state.candidate_weight)],
            ),
            "ct_shadow_mode": (
                "1 when the candidate scores shadow copies.",
                [((), float(state.shadow))],
            ),
            "ct_prediction_log_rows_written": (
                "Prediction-log rows written.",
                [((), float(log.written))],
            ),
            "ct_prediction_log_dropped_batches": (
                "Batches dropped: log backlog full.",
                [((), float(log.dropped))],
            ),
            "ct_prediction_log_pending_batches": (
                "Batches waiting for the log writer.",
                [((), float(log.pending))],
            ),
            **platform_gauges(self.config.home),
        }

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document(self.state.stable.model.meta))


def _add_slot_headers(headers: dict[str, str], route: Route) -> None:
    """Which slot and version answered: on every answer once a slot was chosen (refusals
    included), so a client or a canary analysis can tell the two versions' answers apart."""
    headers["x-model-slot"] = route.slot
    headers["x-model-version"] = route.served.version


def _parse_invocation(
    body: bytes, content_type: str | None, served: ServedModel
) -> tuple[ParsedRows, None]:
    try:
        return mlflow_protocol.parse_invocation(body, content_type, served.schema), None
    except mlflow_protocol.UnsupportedMediaType as error:
        raise HttpError(415, "BAD_REQUEST", str(error)) from None
    except InputError as error:
        raise _refusal(error) from None


def _parse_v2(
    body: bytes, content_type: str | None, served: ServedModel
) -> tuple[ParsedRows, InferAsks]:
    outputs = v2_protocol.output_names(served.model.meta)
    try:
        return v2_protocol.parse_infer_request(body, served.schema, outputs)
    except InputError as error:
        raise _refusal(error) from None


def _pinned(state: SlotState, name: str, version: str) -> Route:
    """The route of the slot answering with `version` of model `name`; a 404 naming the
    versions served, and the unversioned route, when none does."""
    try:
        return state.route_to_version(version)
    except LookupError as error:
        raise HttpError(
            404,
            "NOT_FOUND",
            f"model '{name}' {error}; POST /v2/models/{name}/infer answers with what is served",
        ) from None


def _refusal(error: InputError) -> HttpError:
    """400 for a value the rule refuses, 422 for one outside the data contract."""
    violations = error.violations if isinstance(error, ContractError) else None
    return HttpError(error.status, error.error_code, str(error), violations)


def _render_invocation(
    prediction: Prediction, served: ServedModel, request_id: str, asks: InferAsks | None
) -> bytes:
    return mlflow_protocol.render_predictions(prediction)


def _render_nothing(
    prediction: Prediction, served: ServedModel, request_id: str, asks: InferAsks | None
) -> bytes:
    return b""  # a shadow answer is only logged


def _render_v2(
    prediction: Prediction, served: ServedModel, request_id: str, asks: InferAsks
) -> bytes:
    return v2_protocol.render_infer_response(
        prediction, served.model.meta, request_id, asks.outputs
    )


def _run_model(served: ServedModel, parsed: ParsedRows) -> Prediction:
    try:
        return served.model.predict(parsed)
    except Exception:
        # Input was validated, so this is a model problem; MLflow answers it with a 400 too.
        logger.exception("model %s failed to score %d rows", served.version, parsed.n_rows)
        raise ModelFailure(
            400,
            "BAD_REQUEST",
            "Encountered an unexpected error while evaluating the model. Verify that the "
            "input is compatible with the model for inference.",
        ) from None


def create_app(config: ServerConfig) -> HotRoutes:
    """Load the bundle(s) named by `config` and build the ASGI app (slow: loads models)."""

    def served(bundle: Path) -> ServedModel:
        model = load_bundle(bundle, use_onnx=config.use_onnx, batch_threads=config.batch_threads)
        return ServedModel.of(
            model, config.out_of_contract, config.unknown_columns, config.max_rows
        )

    stable = served(config.bundle)
    candidate = served(config.candidate) if config.candidate is not None else None
    server = Server(config, SlotState(stable=stable, candidate=candidate))
    starlette = Starlette(routes=_routes(server), lifespan=server.lifespan)
    return HotRoutes(
        invocations=server.invocations,
        v2_infer=server.v2_infer,
        fallback=starlette,
        count=server.metrics.response,
        refused=server.metrics.refused,
    )


def _routes(server: Server) -> list[BaseRoute]:
    # The two scoring routes are also here: for other methods (405) and for one route list.
    return [
        HttpRoute("/ping", server.ping, methods=["GET"]),
        HttpRoute("/health", server.ping, methods=["GET"]),
        HttpRoute("/version", server.version, methods=["GET"]),
        HttpRoute("/invocations", server.invocations, methods=["POST"]),
        HttpRoute("/v2", server.v2_server_metadata, methods=["GET"]),
        HttpRoute("/v2/health/live", server.v2_live, methods=["GET"]),
        HttpRoute("/v2/health/ready", server.v2_ready, methods=["GET"]),
        HttpRoute("/v2/models/{name}", server.v2_model_metadata, methods=["GET"]),
        HttpRoute("/v2/models/{name}/ready", server.v2_model_ready, methods=["GET"]),
        HttpRoute("/v2/models/{name}/card", server.v2_model_card, methods=["GET"]),
        HttpRoute("/v2/models/{name}/infer", server.v2_infer, methods=["POST"]),
        # The protocol's versioned routes: only a version this server answers with.
        HttpRoute(
            "/v2/models/{name}/versions/{version}", server.v2_model_metadata, methods=["GET"]
        ),
        HttpRoute(
            "/v2/models/{name}/versions/{version}/ready", server.v2_model_ready, methods=["GET"]
        ),
        HttpRoute("/v2/models/{name}/versions/{version}/infer", server.v2_infer, methods=["POST"]),
        HttpRoute("/feedback", server.feedback, methods=["POST"]),
        HttpRoute("/metrics", server.prometheus, methods=["GET"]),
        HttpRoute("/openapi.json", server.openapi, methods=["GET"]),
        *admin.routes(server),
    ]
