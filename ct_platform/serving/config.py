"""Server configuration: plain values from arguments or the environment, never secrets.

The API key and admin token are read from environment variables whose *names* are
configured (the spec's `serving.api_key_env` / `serving.admin_token_env`), so the server
works in a container without the spec file and no secret ever sits in a config or a log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# The spec's `serving.batch_threads` default too (settings cannot be imported here).
# One: on this 2-core box a second thread for big requests took the event loop's core,
# cutting single-row throughput while batches ran (benchmarks/serving/batch_threads.py).
DEFAULT_BATCH_THREADS = 1
DEFAULT_MAX_ROWS = 50_000
# nginx's defaults are 4 x 8 KiB header buffers and a 60 s client_header_timeout.
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_HEADER_TIMEOUT_S = 30.0
# nginx's client_body_timeout: the longest wait between two reads of a request body.
DEFAULT_BODY_TIMEOUT_S = 60.0
DEFAULT_API_KEY_ENV = "CT_API_KEY"
DEFAULT_ADMIN_TOKEN_ENV = "CT_ADMIN_TOKEN"
# A request value outside the data contract: refused with a 422, or scored as sent
# (`serving.schema`); counted in /metrics either way.
OutOfContract = Literal["reject", "score"]
OUT_OF_CONTRACT_POLICIES: tuple[OutOfContract, ...] = ("reject", "score")
# A request column that is no contract column (and no near-duplicate of one, always
# refused): kept out of scoring and reported (`x-ignored-columns`, counted), as MLflow's
# scoring server ignores it; or refused with a 400 naming it.
UnknownColumns = Literal["ignore", "refuse"]
UNKNOWN_COLUMNS_POLICIES: tuple[UnknownColumns, ...] = ("ignore", "refuse")
# nginx's `client_body_timeout` bounds only the gap between two reads; this bounds the
# whole body (from the end of the headers), so a byte every 59 s cannot hold a connection.
DEFAULT_BODY_TIME_LIMIT_S = 60.0
# Open connections the server holds at once; beyond, a request is answered 503 (see
# `http_limits`: GET/HEAD and the admin API exempt), so slow clients cannot exhaust it.
DEFAULT_MAX_CONNECTIONS = 512
# On `/ping`'s 200 (exempt from the cap) while the server holds `max_connections` requests:
# the server's words ("holds its maximum of 5 connections ..."). Deployers and the watchdog
# read it as busy, alive: an orchestrator's health check still sees 200 and keeps it.
BUSY_HEADER = "x-ct-busy"


def ct_home() -> Path:
    # Same rule as ct_platform.settings.Paths, which serving cannot import (pydantic, yaml).
    return Path(os.environ.get("CT_HOME", ".ct")).resolve()


@dataclass(frozen=True)
class ServerConfig:
    bundle: Path
    candidate: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Rows a request may hold (413 beyond): bounds the work one request can ask for.
    max_rows: int = DEFAULT_MAX_ROWS
    # Bodies up to this size are scored on the event loop; bigger ones in a worker thread.
    inline_body_bytes: int = 16 * 1024
    big_request_threads: int = 2
    # Intra-op threads of the ONNX session scoring requests of `bundle.WIDE_ROWS` rows or
    # more (1: one session, one thread, for every request, which scores those of
    # `bundle.SPLIT_ROWS` rows or more as two halves at once on two cores; 2 suits a
    # server whose cores serve big requests mostly).
    batch_threads: int = DEFAULT_BATCH_THREADS
    # Request line + headers: 431 beyond this size; closed when not complete in time.
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    # A request body with no bytes for this long: 408 and close (slowloris).
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    # A request body not complete this long after its headers: 408 and close.
    body_time_limit_s: float = DEFAULT_BODY_TIME_LIMIT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    api_key_env: str = DEFAULT_API_KEY_ENV
    admin_token_env: str = DEFAULT_ADMIN_TOKEN_ENV
    # False: score with the sklearn fallback even when the bundle has an ONNX graph.
    use_onnx: bool = True
    out_of_contract: OutOfContract = "reject"
    unknown_columns: UnknownColumns = "ignore"
    home: Path = field(default_factory=ct_home)
    log_segment_bytes: int = 64 * 1024 * 1024
    log_segment_seconds: float = 3600.0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def predictions_dir(self) -> Path:
        return self.home / "predictions"

    @property
    def feedback_dir(self) -> Path:
        return self.home / "feedback"

    def secret(self, env_name: str) -> str | None:
        """The secret held by the named variable; unset or empty means "not required"."""
        return os.environ.get(env_name) or None
