"""`python -m ct_platform.serving --bundle DIR [--host H] [--port P] [--candidate DIR]`.

Every option also has an environment variable (for containers); arguments win.
"""

from __future__ import annotations

import argparse
import errno
import gc
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import uvicorn

from ct_platform.serving.app import create_app
from ct_platform.serving.config import (
    DEFAULT_ADMIN_TOKEN_ENV,
    DEFAULT_API_KEY_ENV,
    DEFAULT_BATCH_THREADS,
    DEFAULT_BODY_TIME_LIMIT_S,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_ROWS,
    OUT_OF_CONTRACT_POLICIES,
    UNKNOWN_COLUMNS_POLICIES,
    ServerConfig,
)
from ct_platform.serving.hot_routes import HotRoutes
from ct_platform.serving.http_limits import bounded_http_protocol

# Every option also reads $CT_SERVING_<OPTION> (upper case, dashes as underscores: for
# containers); an argument wins. (option, type, default, choices, help)
OPTIONS: tuple[tuple[str, Callable[[str], object], object, tuple[str, ...] | None, str], ...] = (
    ("--bundle", Path, None, None, "bundle directory to serve"),
    ("--host", str, "127.0.0.1", None, "address to listen on"),
    ("--port", int, 8080, None, "port to listen on"),
    ("--candidate", Path, None, None, "bundle directory to load into the candidate slot"),
    ("--max-body-bytes", int, DEFAULT_MAX_BODY_BYTES, None, "request body size (413 beyond)"),
    ("--max-rows", int, DEFAULT_MAX_ROWS, None, "rows a request may hold (413 beyond)"),
    (
        "--max-header-bytes",
        int,
        DEFAULT_MAX_HEADER_BYTES,
        None,
        "size of request line + headers (431 beyond)",
    ),
    (
        "--header-timeout",
        float,
        DEFAULT_HEADER_TIMEOUT_S,
        None,
        "seconds a client has to send its headers (408 and close after)",
    ),
    (
        "--body-timeout",
        float,
        DEFAULT_BODY_TIMEOUT_S,
        None,
        "seconds a request body may go without a byte (408 and close after)",
    ),
    (
        "--body-time-limit",
        float,
        DEFAULT_BODY_TIME_LIMIT_S,
        None,
        "seconds a whole request body may take after its headers (408 and close after)",
    ),
    (
        "--max-connections",
        int,
        DEFAULT_MAX_CONNECTIONS,
        None,
        "connections held at once; a request beyond them is answered 503",
    ),
    (
        "--batch-threads",
        int,
        DEFAULT_BATCH_THREADS,
        None,
        "intra-op threads of the ONNX session scoring requests of 512 rows or more "
        "(1: one thread a run for every request, such a request scored as two halves at "
        "once on two cores or more; at most the cores the process may use)",
    ),
    (
        "--api-key-env",
        str,
        DEFAULT_API_KEY_ENV,
        None,
        "name of the env var holding the predict API key (unset var: no key needed)",
    ),
    (
        "--admin-token-env",
        str,
        DEFAULT_ADMIN_TOKEN_ENV,
        None,
        "name of the env var holding the admin bearer token (unset var: admin off)",
    ),
    (
        "--out-of-contract",
        str,
        "reject",
        OUT_OF_CONTRACT_POLICIES,
        "a value outside the data contract: refuse the request (422) or score it",
    ),
    (
        "--unknown-columns",
        str,
        "ignore",
        UNKNOWN_COLUMNS_POLICIES,
        "a request column the model does not have: score without it and name it in "
        "the x-ignored-columns header (ignore), or refuse the request (400)",
    ),
)


def option_env_var(option: str) -> str:
    """`--max-rows` -> `CT_SERVING_MAX_ROWS`."""
    return "CT_SERVING_" + option.removeprefix("--").replace("-", "_").upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ct_platform.serving", description=__doc__)
    for option, kind, default, choices, about in OPTIONS:
        # argparse converts a string default with `type`, as it does an argument.
        from_env = os.environ.get(option_env_var(option))
        parser.add_argument(
            option,
            type=kind,
            default=default if from_env is None else from_env,
            choices=choices,
            help=about,
        )
    parser.add_argument(
        "--no-onnx",
        action="store_true",
        default=os.environ.get("CT_SERVING_ONNX", "1") == "0",
        help="score with the sklearn fallback even when the bundle has an ONNX graph "
        "(environment: CT_SERVING_ONNX=0)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        bundle=args.bundle,
        candidate=Path(args.candidate) if args.candidate else None,
        host=args.host,
        port=args.port,
        max_body_bytes=args.max_body_bytes,
        max_rows=args.max_rows,
        max_header_bytes=args.max_header_bytes,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        body_time_limit_s=args.body_time_limit,
        max_connections=args.max_connections,
        api_key_env=args.api_key_env,
        admin_token_env=args.admin_token_env,
        use_onnx=not args.no_onnx,
        batch_threads=args.batch_threads,
        out_of_contract=args.out_of_contract,
        unknown_columns=args.unknown_columns,
    )


class BindError(OSError):
    """The server cannot listen on its address (the message names it and why)."""


def run_server(config: ServerConfig, on_listening: Callable[[], None] | None = None) -> None:
    """Serve until interrupted: one process, uvloop + httptools, no access log.

    The port is bound first, before the bundle loads, so a taken port fails at once;
    `on_listening` is called once the server accepts requests.
    One worker on purpose: slots and routing are in-process state that admin calls
    change, and one ONNX worker already saturates a core. Scale out with replicas.

    Raises:
        BindError: the address cannot be bound (port in use, no such interface...).
        BundleError: the bundle cannot be loaded.
    """
    listener = listening_socket(config.host, config.port)
    try:
        app = create_app(config)
    except BaseException:
        listener.close()
        raise
    # Move everything loaded so far (models, libraries) out of the garbage collector's
    # sight: full collections then only scan per-request garbage, which keeps pauses short.
    gc.collect()
    gc.freeze()
    _AnnouncingServer(uvicorn_config(app, config), on_listening).run(sockets=[listener])


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host`:`port` (uvicorn listens on it), or a `BindError`."""
    where = f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {where}: unknown host ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = f"port {port} is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BindError(f"cannot listen on {where}: {reason}") from None
    return sock


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server, calling `on_listening` once it accepts requests."""

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_listening = on_listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._on_listening is not None and not self.should_exit:
            self._on_listening()


def uvicorn_config(app: HotRoutes, config: ServerConfig, **overrides: object) -> uvicorn.Config:
    """uvloop + httptools with the header limits, no access log; `overrides` for tests."""
    options: dict[str, object] = {
        "host": config.host,
        "port": config.port,
        "loop": "uvloop",
        "http": bounded_http_protocol(
            config.max_header_bytes,
            config.header_timeout_s,
            config.body_timeout_s,
            app.refused,
            body_time_limit_s=config.body_time_limit_s,
            # Not uvicorn's `limit_concurrency`: that refuses /ping and the admin API too,
            # and a busy server then looks dead to its deployer (see `http_limits`).
            max_connections=config.max_connections,
        ),
        "access_log": False,
        # uvicorn's X-Forwarded-* rewriting of the client address and scheme is one more
        # ASGI layer and a pass over the headers per request; nothing here reads either.
        "proxy_headers": False,
        "log_level": "warning",
        "timeout_graceful_shutdown": 10,
    }
    return uvicorn.Config(app, **{**options, **overrides})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bundle is None:
        parser.error("--bundle (or CT_SERVING_BUNDLE) is required")
    config = config_from_args(args)
    try:
        run_server(config, lambda: print(f"listening on {config.url}", file=sys.stderr))
    except BindError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
