"""What a deployment target returns, and the HTTP checks every target runs on a server.

Both targets speak to the server only through its public HTTP surface (MLflow scoring
protocol + admin API, see docs/architecture.md), so the checks here are target-agnostic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import httpx

from ct_platform.serving.config import BUSY_HEADER
from ct_platform.settings import ServingSpec


class DeploymentError(RuntimeError):
    """A deployment step failed; the message says which, with the server's own words."""


@dataclass(frozen=True)
class Endpoint:
    url: str
    version: str
    target: str
    deployed_at: str
    bundle: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Endpoint:
        """The endpoint recorded in a target's state file (which holds more keys)."""
        return cls(**{key: str(state[key]) for key in cls.__dataclass_fields__})


@dataclass(frozen=True)
class EndpointStatus:
    endpoint: Endpoint
    # The server is alive: it answers /ping, ready or busy. Never restart a healthy one.
    healthy: bool
    # Target-specific, human-readable: "pid 4242", "container 1a2b3c (healthy)".
    detail: str
    # Alive but at its limit (`Health.BUSY`): shown, never restarted.
    busy: bool = False


def server_arguments(serving: ServingSpec, bundle: str, host: str, port: int) -> list[str]:
    """Arguments of `python -m ct_platform.serving`: where to listen, what the spec says."""
    return [
        "--bundle",
        bundle,
        "--host",
        host,
        "--port",
        str(port),
        "--max-body-bytes",
        str(serving.max_body_bytes),
        "--api-key-env",
        serving.api_key_env,
        "--admin-token-env",
        serving.admin_token_env,
        "--out-of-contract",
        serving.out_of_contract,
        "--unknown-columns",
        serving.unknown_columns,
        "--body-time-limit",
        str(serving.body_time_limit_s),
        "--max-connections",
        str(serving.max_connections),
        "--batch-threads",
        str(serving.batch_threads),
    ]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Health(Enum):
    """What GET /ping says of a server."""

    READY = "ready"  # 200: up, a model loaded
    # Alive but at its limit: our server at its connection cap (200 with `BUSY_HEADER`),
    # or 429/503 (a proxy's, an older server's cap). A restart would drop what it holds.
    BUSY = "busy"
    DOWN = "down"  # no answer, or another answer: not a server of ours that is up

    @property
    def alive(self) -> bool:
        return self is not Health.DOWN


# Statuses that mean "overloaded, retry later" (RFC 9110 503, RFC 6585 429).
BUSY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Ping:
    """One GET /ping: its HTTP status (None: no answer), the health read from it and, when
    busy, why (the server's words, or the status)."""

    status: int | None
    health: Health
    busy_because: str = ""


def ping(url: str, *, timeout: float = 2.0) -> Ping:
    """GET /ping, read as ready (200), busy (200 with `BUSY_HEADER`, or 429/503) or down
    (no answer within `timeout` seconds, anything else)."""
    try:
        response = httpx.get(f"{url}/ping", timeout=timeout)
    except httpx.HTTPError:
        return Ping(None, Health.DOWN)
    status = response.status_code
    if status in BUSY_STATUSES:
        return Ping(status, Health.BUSY, f"/ping answered {status}")
    if status != 200:
        return Ping(status, Health.DOWN)
    note = response.headers.get(BUSY_HEADER)
    return Ping(status, Health.BUSY, note) if note else Ping(status, Health.READY)


def probe(url: str, *, timeout: float = 2.0) -> Health:
    """The health one GET /ping reads (`ping`)."""
    return ping(url, timeout=timeout).health


def is_healthy(url: str, *, timeout: float = 2.0) -> bool:
    """GET /ping answers 200: the server is up and has a model loaded (busy at its cap,
    too: it says so on a 200)."""
    return ping(url, timeout=timeout).status == 200


def probed_status(endpoint: Endpoint, where: str) -> EndpointStatus:
    """`endpoint`'s status from one /ping; `where` names the server ("pid 4242")."""
    answer = ping(endpoint.url)
    words = {
        Health.READY: "ready",
        Health.BUSY: f"busy: {answer.busy_because} (alive, overloaded; not restarted)",
        Health.DOWN: "not ready",
    }
    health = answer.health
    return EndpointStatus(
        endpoint, health.alive, f"{where}, {words[health]}", busy=health is Health.BUSY
    )


def wait_healthy(
    url: str, timeout: float, *, still_starting: Callable[[], bool] = lambda: True
) -> None:
    """Poll until GET /ping answers 200, or raise `DeploymentError` after `timeout` seconds.

    `still_starting` returns False once the server can no longer come up (its process
    exited, its container stopped): we fail at once instead of waiting out the timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_healthy(url):
            return
        if not still_starting():
            raise DeploymentError(f"server at {url} stopped while starting")
        time.sleep(0.2)
    raise DeploymentError(f"server at {url} not ready within {timeout:.0f}s")


def smoke_request(
    url: str, sample_row: Mapping[str, Any], *, api_key: str | None = None, timeout: float = 10.0
) -> Any:
    """POST one row to /invocations; return its prediction or raise `DeploymentError`.

    `api_key`: the server's API key, when it requires one (the spec's `api_key_env`).
    """
    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        response = httpx.post(
            f"{url}/invocations",
            json={"dataframe_records": [dict(sample_row)]},
            headers=headers,
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise DeploymentError(f"smoke request to {url} failed: {exc}") from None
    if response.status_code != 200:
        raise DeploymentError(
            f"smoke request to {url}: HTTP {response.status_code}: {response.text[:500]}"
        )
    predictions = response.json().get("predictions")
    if not isinstance(predictions, list) or len(predictions) != 1:
        raise DeploymentError(f"smoke request to {url}: no prediction in {response.text[:500]}")
    return predictions[0]
