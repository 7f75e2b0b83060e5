"""Client for the server's admin API (bearer token), as far as deployment needs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from ct_platform.deployment.endpoint import DeploymentError

# Admin calls answer at once, except a load: an ONNX session, or a big skops fallback
# deserialized while the server answers traffic, can take minutes on a busy machine.
CALL_TIMEOUT_S = 60.0
LOAD_TIMEOUT_S = 600.0


class AdminAuthError(DeploymentError):
    """The server refused our admin token (or has its admin API switched off)."""


class AdminClient:
    def __init__(self, url: str, token: str) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"}

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self._url

    def slots(self) -> dict[str, Any]:
        return self._call("GET", "/admin/slots")

    def stable_version(self) -> str | None:
        """The version of the model in the stable slot; None when the server is unreachable."""
        try:
            return str(self.slots()["stable"]["version"])
        except (httpx.HTTPError, AdminAuthError, KeyError, TypeError):
            return None

    def swap_in(self, bundle_dir: Path) -> None:
        """Load `bundle_dir` as candidate, then promote it: one reference swap, no downtime.

        `bundle_dir` is a path as the server sees it (the same path for a local server).
        """
        self.load(bundle_dir)
        self.promote()

    def load(self, bundle: Path | str, slot: str = "candidate") -> dict[str, Any]:
        """Load `bundle` (a folder name under the server's $CT_HOME/bundles, or a path in
        it) into `slot`; a candidate gets no traffic until routed. Returns the new slots."""
        return self._call(
            "POST", f"/admin/slots/{slot}/load", {"bundle": str(bundle)}, timeout=LOAD_TIMEOUT_S
        )

    def unload_candidate(self) -> dict[str, Any]:
        return self._call("DELETE", "/admin/slots/candidate")

    def route(self, candidate_weight: float, *, shadow: bool = False) -> dict[str, Any]:
        """Send `candidate_weight` (0..1) of traffic to the candidate, or shadow copies."""
        return self._call(
            "POST", "/admin/routing", {"candidate_weight": candidate_weight, "shadow": shadow}
        )

    def promote(self) -> dict[str, Any]:
        return self._call("POST", "/admin/promote")

    def rollback(self) -> dict[str, Any]:
        return self._call("POST", "/admin/rollback")

    def stats(self) -> dict[str, Any]:
        """Per-slot running totals since the server started (see `serving.slot_stats`)."""
        return self._call("GET", "/admin/stats")

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float = CALL_TIMEOUT_S,
    ) -> dict[str, Any]:
        response = httpx.request(
            method, f"{self._url}{path}", json=body, headers=self._headers, timeout=timeout
        )
        if response.status_code in (401, 403):
            raise AdminAuthError(f"admin API at {self._url} refused us: {response.text[:300]}")
        if response.status_code != 200:
            raise DeploymentError(
                f"admin {method} {path} failed: HTTP {response.status_code}: {response.text[:500]}"
            )
        return response.json()
