"""`wrk` in the background against a model server: single-row POSTs cycling through rows.

Used by the delivery proofs (tests) and benchmarks/delivery/run.py. wrk stops on SIGINT and
its Lua `done` hook prints the totals as one JSON line: requests, non-2xx answers, and the
socket errors (connect, read, write, timeout). A failed request is either kind.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Generous: the proofs count lost answers, not slow ones, and a shared 2-core box running a
# slow candidate's scikit-learn trees can take seconds per request. A request that takes
# longer still counts as failed (wrk's "timeout").
TIMEOUT_S = 60
# The longest a run may last; it is normally ended earlier with `stop()`.
MAX_DURATION_S = 1800

_DONE_HOOK = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "non2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, '
    .. '"seconds": %.3f, "p99_ms": %.3f}\\n',
    summary.requests, e.status, e.connect, e.read, e.write, e.timeout,
    summary.duration / 1e6, latency:percentile(99) / 1e3))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    non2xx: int
    connect: int
    read: int
    write: int
    timeout: int
    seconds: float
    p99_ms: float

    @property
    def socket_errors(self) -> int:
        return self.connect + self.read + self.write + self.timeout

    @property
    def failed(self) -> int:
        return self.non2xx + self.socket_errors


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def lua_script(rows: list[dict[str, Any]]) -> str:
    """POST each row in turn as its own request (MLflow `dataframe_records`, one row)."""
    bodies = [json.dumps({"dataframe_records": [row]}) for row in rows]
    # A JSON string literal reads as the same Lua string: with ensure_ascii off, json.dumps
    # escapes only quotes, backslashes and control characters (none in table rows).
    table = ",\n".join(json.dumps(body, ensure_ascii=False) for body in bodies)
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"local bodies = {{\n{table}\n}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\n"
        "end\n" + _DONE_HOOK
    )


class WrkLoad:
    """`with WrkLoad(url, rows) as load: ...`, then `load.result` (a `WrkResult`)."""

    def __init__(
        self, url: str, rows: list[dict[str, Any]], *, connections: int = 8, threads: int = 2
    ) -> None:
        binary = wrk_binary()
        if binary is None:
            raise RuntimeError("wrk is not installed (apt-get install wrk)")
        self._folder = Path(tempfile.mkdtemp(prefix="ct-wrk-"))
        script = self._folder / "rows.lua"
        script.write_text(lua_script(rows))
        self._command = [
            binary,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{MAX_DURATION_S}s",
            f"--timeout={TIMEOUT_S}s",
            "-s",
            str(script),
            f"{url}/invocations",
        ]
        self._process: subprocess.Popen[str] | None = None
        self.result: WrkResult | None = None
        self.output = ""

    def __enter__(self) -> WrkLoad:
        self._process = subprocess.Popen(
            self._command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> WrkResult:
        """Stop wrk (SIGINT: it finishes and prints its totals) and return them."""
        if self.result is not None:
            return self.result
        assert self._process is not None, "wrk was never started"
        self._process.send_signal(signal.SIGINT)
        self.output, _ = self._process.communicate(timeout=60)
        shutil.rmtree(self._folder, ignore_errors=True)
        totals = [line for line in self.output.splitlines() if line.startswith('{"requests"')]
        if not totals:
            raise RuntimeError(f"wrk printed no totals:\n{self.output[-2000:]}")
        self.result = WrkResult(**json.loads(totals[-1]))
        return self.result
