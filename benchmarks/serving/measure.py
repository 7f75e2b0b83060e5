"""Start one server, measure it, stop it: the figures of one row of the serving benchmark.

A server is started in its own process group and stopped with it, so worker processes
(MLServer's inference pool, BentoML's service worker, `mlflow`'s uvicorn) go too. CPU time
and RSS are summed over the whole process tree, read from /proc.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

START_TIMEOUT_S = 600.0
LOADING_GRACE_S = 90.0
# 1,000-row requests timed per server (after BATCH_WARM_UP untimed ones): seven gave
# medians 4x apart from one round to the next for the same server on a quiet box.
BATCH_REPEATS = 31
BATCH_WARM_UP = 3
WARM_UP_S = 2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Call:
    """One request the benchmark sends: a path and a JSON body."""

    path: str
    body: bytes


@dataclass(frozen=True)
class Server:
    """How to start one server and what to send it.

    `command` and the values of `env` may hold `{http}`, `{grpc}` and `{metrics}`: free
    ports filled in at each start. `family` groups the settings of one peer (its best setting
    is the one compared); `kind` is "ours", "peer" or "floor".
    """

    name: str
    kind: str
    family: str
    command: list[str]
    row: Call
    batch: Call
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass
class Measurement:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    batch_1000_ms: float
    # The benchmark client's own CPU time per 1,000-row request (sending the body, reading
    # the answer), included in batch_1000_ms: the part no server can remove.
    batch_client_ms: float
    rss_mb: float
    start_s: float
    cpu_us_per_request: float
    requests: int


class ServerFailed(RuntimeError):
    """The server did not start, or answered errors; the message says why."""


def measure(server: Server, lua: Path, log: Path, duration: int, connections: int) -> Measurement:
    """Start `server`, time its first 200, warm it up, measure it with wrk, stop it.

    Raises ServerFailed (with the end of the server's log) if it exits, does not answer
    200 within START_TIMEOUT_S, or wrk sees errors.
    """
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    command = [part.format(**ports) for part in server.command]
    env = {**os.environ, **{k: v.format(**ports) for k, v in server.env.items()}}
    base = f"http://127.0.0.1:{ports['http']}"
    with log.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, cwd=server.cwd, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        start_s = first_200(base + server.row.path, server.row.body, process, started)
        wrk(base + server.row.path, lua, WARM_UP_S, connections)
        batch_ms, client_ms = batch_latency_ms(ports["http"], server.batch)
        rss_mb = tree_rss_kb(process.pid) / 1024
        cpu_before = tree_cpu_ticks(process.pid)
        output = wrk(base + server.row.path, lua, duration, connections)
        cpu_s = (tree_cpu_ticks(process.pid) - cpu_before) / CLOCK_TICKS
        requests_per_s, p50_ms, p99_ms, requests = parse_wrk(output)
    except (ServerFailed, httpx.HTTPError, OSError, http.client.HTTPException) as error:
        raise ServerFailed(f"{error}; log: {log_tail(log)}") from error
    finally:
        stop(process)
    return Measurement(
        requests_per_s, p50_ms, p99_ms, batch_ms, client_ms, rss_mb, start_s,
        cpu_s / requests * 1e6, requests,
    )  # fmt: skip


def first_200(url: str, body: bytes, process: subprocess.Popen, started: float) -> float:
    """Seconds from `started` to the first 200 answer to `body` (polled every 0.1 s).

    Other answers are tolerated for LOADING_GRACE_S after the first one (a model still
    loading answers 400 or 503 on some servers), then the last one is the failure.
    """
    first_answer, answer = None, ""
    while (elapsed := time.perf_counter() - started) < START_TIMEOUT_S:
        if process.poll() is not None:
            raise ServerFailed(f"exited with {process.returncode} before answering 200")
        try:
            response = httpx.post(url, content=body, headers=JSON, timeout=5)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 200:
            return time.perf_counter() - started
        if response is not None:
            answer = f"{response.status_code} {response.text[:300]}"
            first_answer = first_answer or elapsed
            if elapsed - first_answer > LOADING_GRACE_S:
                raise ServerFailed(f"still answering {answer} after {LOADING_GRACE_S:.0f} s")
        time.sleep(0.1)
    raise ServerFailed(f"no 200 from {url} within {elapsed:.0f} s; last answer: {answer or '-'}")


def batch_latency_ms(port: int, call: Call) -> tuple[float, float]:
    """(median wall time, median client CPU time) in ms of BATCH_REPEATS 1,000-row requests.

    One kept-alive `http.client` connection (TCP_NODELAY; headers, then the body, each
    in one `send`) after
    BATCH_WARM_UP untimed requests: an httpx client spent 1-4 ms of its own on a 100 KB
    body and a request or answer (h11 + httpcore in Python), as much as the floor server's
    whole answer, and its cost swung with the box's load.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    walls, cpus = [], []
    try:
        for attempt in range(BATCH_WARM_UP + BATCH_REPEATS):
            started, cpu_started = time.perf_counter(), time.thread_time()
            connection.request("POST", call.path, body=call.body, headers=JSON)
            response = connection.getresponse()
            answer = response.read()
            wall, cpu = time.perf_counter() - started, time.thread_time() - cpu_started
            if response.status != 200:
                raise ServerFailed(f"1,000-row request: {response.status} {answer[:300]!r}")
            if attempt >= BATCH_WARM_UP:
                walls.append(wall * 1000)
                cpus.append(cpu * 1000)
    finally:
        connection.close()
    return statistics.median(walls), statistics.median(cpus)


def wrk(url: str, lua: Path, duration: int, connections: int) -> str:
    """wrk's output; ServerFailed if any answer was not 2xx or a socket failed."""
    done = subprocess.run(
        [
            "wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "30s", "--latency",
            "-s", str(lua), url,
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    errors = re.findall(r"^\s*(Non-2xx.*|Socket errors.*)$", done.stdout, re.M)
    if errors:
        raise ServerFailed(f"wrk saw {'; '.join(errors)}")
    return done.stdout


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """(req/s, p50 ms, p99 ms, requests completed) from `wrk --latency` output."""
    requests_per_s = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    if not requests:
        raise ServerFailed(f"wrk completed no request (each took longer than the run):\n{output}")

    def percentile(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()
        return float(value) * _UNITS_MS[unit]

    return requests_per_s, percentile("50%"), percentile("99%"), requests


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants alive now."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue  # the task ended meanwhile
    return tree


def tree_cpu_ticks(pid: int) -> int:
    """utime + stime (clock ticks) summed over the process tree of `pid`."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total


def tree_rss_kb(pid: int) -> int:
    """VmRSS (kB) summed over the process tree of `pid` (a shared page counts in each process)."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        if found := re.search(r"^VmRSS:\s+(\d+) kB", status, re.M):
            total += int(found.group(1))
    return total


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group; after 30 s, SIGKILL what is left of it.

    The leader is reaped only at the end: until then its pid, the group id, cannot be reused.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not exited(process.pid):
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)  # workers that outlive their parent, too
    process.wait()


def exited(pid: int) -> bool:
    """Whether child `pid` has exited, without reaping it."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def log_tail(log: Path, lines: int = 6) -> str:
    text = log.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "(empty)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
