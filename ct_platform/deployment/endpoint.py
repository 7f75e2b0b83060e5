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
    # Alive but refusing for load (/ping answered 429 or 503): shown, never restarted.
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
    # 429 or 503: alive but refusing for load (a proxy's, an older server's connection cap;
    # ours exempts /ping). Alive: a restart would drop every request it holds.
    BUSY = "busy"
    DOWN = "down"  # no answer, or another answer: not a server of ours that is up

    @property
    def alive(self) -> bool:
        return self is not Health.DOWN


# Statuses that mean "overloaded, retry later" (RFC 9110 503, RFC 6585 429).
BUSY_STATUSES = frozenset({429, 503})


def probe(url: str, *, timeout: float = 2.0) -> Health:
    """GET /ping, read as ready (200), busy (429/503) or down (no answer, anything else)."""
    try:
        status = httpx.get(f"{url}/ping", timeout=timeout).status_code
    except httpx.HTTPError:
        return Health.DOWN
    if status == 200:
        return Health.READY
    return Health.BUSY if status in BUSY_STATUSES else Health.DOWN


def is_healthy(url: str, *, timeout: float = 2.0) -> bool:
    """GET /ping answers 200: the server is up and has a model loaded."""
    return probe(url, timeout=timeout) is Health.READY


def probed_status(endpoint: Endpoint, where: str) -> EndpointStatus:
    """`endpoint`'s status from one /ping; `where` names the server ("pid 4242")."""
    health = probe(endpoint.url)
    words = {
        Health.READY: "ready",
        Health.BUSY: "busy: /ping answered 429/503 (alive, overloaded; not restarted)",
        Health.DOWN: "not ready",
    }
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
