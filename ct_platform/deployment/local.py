"""The `local` target: the model server as a detached process on this machine.

The server is started in its own session (`start_new_session=True`), so it outlives the
Dagster run (or CLI call) that started it and does not get its terminal's signals. What a
later deploy needs to find it again lives in `$CT_HOME/deployments/`: `local.pid`,
`local.json` (pid, url, version, bundle) and `local-server.log` (the server's output).

A deploy onto a live, healthy server hot-swaps through the admin API (load the new bundle
as candidate, then promote it): the port never closes and no request fails. A server that
is gone (pid dead, a zombie, or killed and not yet exited) or hung (pid alive, /ping silent
for `serving.hung_after_s`) is replaced by a fresh process; so is one whose admin API refuses our
token (started by hand with another one). A server at its connection cap (/ping 200 with
`x-ct-busy`) or answering /ping 429/503 is busy, alive:
swapped into, never restarted (a restart would drop every request it holds).

A server recorded as running (live pid) keeps its address: every deploy talks to the URL in
`local.json`, not to the port of the caller's spec, and a hung one is restarted on it. A `ct`
command from a shell whose spec names another port (no `CT_SERVING_PORT`) must neither miss
the live server and kill it as hung, nor move it: the caller's port is only logged as differing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from ct_platform.deployment.admin import AdminAuthError, AdminClient
from ct_platform.deployment.endpoint import (
    DeploymentError,
    Endpoint,
    EndpointStatus,
    probe,
    probed_status,
    server_arguments,
    utc_now,
    wait_healthy,
)
from ct_platform.deployment.state import (
    OwnServer,
    admin_token,
    exclusive,
    read_json,
    write_json_atomic,
)
from ct_platform.serving.bundle import read_meta
from ct_platform.settings import Spec

# Generous: importing scikit-learn + onnxruntime takes seconds on a busy 2-core machine.
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0
SERVER_MODULE = "ct_platform.serving"
# include/linux/sched.h: the task is getting shut down.
PF_EXITING = 0x4
# Bit of SIGKILL in the /proc/<pid>/status signal masks (signal n is bit n - 1).
SIGKILL_MASK = 1 << (signal.SIGKILL - 1)

logger = logging.getLogger(__name__)


class LocalTarget(OwnServer):
    name = "local"

    def __init__(self, spec: Spec) -> None:
        self._serving = spec.serving
        self._home = spec.paths.home
        self._dir = spec.paths.deployments
        self.state_file = self._dir / "local.json"
        self.pid_file = self._dir / "local.pid"
        self.log_file = self._dir / "local-server.log"
        self.lock_file = self._dir / "local.lock"

    @property
    def url(self) -> str:
        """Where the server answers: the recorded URL while the recorded server runs, else
        the spec's `serving.host`/`serving.port` (where a fresh server will listen)."""
        return self._served_url(self._running_pid())

    def _served_url(self, pid: int | None) -> str:
        """The recorded URL when `pid` (the recorded server) is alive, even hung; else the
        spec's address. Read before a hung server is terminated: it restarts on its port."""
        state = read_json(self.state_file)
        if pid is None or state is None or "url" not in state:
            return self._spec_url
        return str(state["url"])

    @property
    def _spec_url(self) -> str:
        return f"http://{self._serving.host}:{self._serving.port}"

    def deploy(self, bundle_dir: Path) -> Endpoint:
        with exclusive(self.lock_file):
            return self._deploy(bundle_dir.resolve())

    def _deploy(self, bundle_dir: Path) -> Endpoint:
        """Serve `bundle_dir`: hot swap into a healthy server, else (re)start one."""
        version = read_meta(bundle_dir).version
        pid = self._running_pid()
        url = self._served_url(pid)
        if url != self._spec_url:
            logger.warning(
                "serving at the recorded %s; this shell's port %s differs (CT_SERVING_PORT)",
                url,
                self._serving.port,
            )
        if pid is not None and _alive(url, self._serving.hung_after_s):
            try:
                self._admin(url).swap_in(bundle_dir)
            except AdminAuthError:
                self._terminate(pid)
                pid = self._start(bundle_dir, url)
        else:
            if pid is not None:
                self._terminate(pid)  # alive but not answering at its URL: hung
            pid = self._start(bundle_dir, url)
        served = self._admin(url).stable_version()
        if served != version:
            # Someone else's server on our port would answer /ping just as well.
            raise DeploymentError(f"{url} serves version {served}, expected {version}")
        endpoint = self._endpoint(bundle_dir, url)
        write_json_atomic(
            self.state_file, {**endpoint.to_dict(), "pid": pid, "log": str(self.log_file)}
        )
        return endpoint

    def status(self) -> EndpointStatus | None:
        state = read_json(self.state_file)
        if state is None:
            return None
        endpoint = Endpoint.from_state(state)
        pid = self._running_pid()
        if pid is None:
            return EndpointStatus(endpoint, healthy=False, detail="server process is gone")
        return probed_status(endpoint, f"pid {pid}")

    def adopt(self, bundle_dir: Path) -> Endpoint:
        """Record `bundle_dir` as the served bundle (promoted through the admin API): a server
        found dead is restarted with it (`ensure_running`), not with the one it started on."""
        with exclusive(self.lock_file):
            state = read_json(self.state_file)
            if state is None:
                raise DeploymentError("nothing is deployed: no server serves a bundle to adopt")
            # The server keeps the address it was started on, whatever port the caller's
            # spec names (a `ct` command run with another spec must not move the record).
            endpoint = self._endpoint(bundle_dir.resolve(), state["url"])
            write_json_atomic(self.state_file, {**state, **endpoint.to_dict()})
            return endpoint

    def outdated(self) -> str | None:
        """None: a process cannot tell which sources it was started from (an upgrade of the
        platform reaches it when the next version is deployed or it is restarted)."""
        return None

    def _halt(self) -> None:
        pid = self._running_pid()
        if pid is not None:
            self._terminate(pid)
        self.pid_file.unlink(missing_ok=True)

    def _endpoint(self, bundle_dir: Path, url: str) -> Endpoint:
        return Endpoint(url, read_meta(bundle_dir).version, self.name, utc_now(), str(bundle_dir))

    # --- process handling -------------------------------------------------------------

    def _start(self, bundle_dir: Path, url: str) -> int:
        """Start a server listening at `url` (its host and port) and wait until it is ready."""
        address = urlsplit(url)
        host, port = address.hostname or self._serving.host, address.port or self._serving.port
        if probe(url).alive:
            # Not our server (we have no live pid for it): it would answer our health checks
            # while ours fails to bind, and the deploy would judge the wrong server.
            raise DeploymentError(
                f"{url} already answers, but not from a server this platform started: "
                f"another process holds port {port} (a `ct serve`?). Stop it, "
                "or set the spec's serving.port to a free port; nothing was deployed."
            )
        env = {
            **os.environ,
            "CT_HOME": str(self._home),
            self._serving.admin_token_env: admin_token(self._dir, self._serving.admin_token_env),
        }
        command = [
            sys.executable,
            "-m",
            SERVER_MODULE,
            *server_arguments(self._serving, str(bundle_dir), host, port),
        ]
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        try:
            wait_healthy(url, START_TIMEOUT_S, still_starting=lambda: process.poll() is None)
        except DeploymentError as exc:
            self._terminate(process.pid)
            raise DeploymentError(
                f"{exc}\n--- {self.log_file} (tail) ---\n{self._log_tail()}"
            ) from None
        return process.pid

    def _running_pid(self) -> int | None:
        """The pid in the pidfile if that process is alive and is our server."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _is_server_process(pid) else None

    def _terminate(self, pid: int) -> None:
        """SIGTERM (uvicorn drains in-flight requests), then SIGKILL after a grace period."""
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            if not _is_server_process(pid):
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        _reap(pid)

    def _admin(self, url: str) -> AdminClient:
        token = admin_token(self._dir, self._serving.admin_token_env)
        return AdminClient(url, token)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _is_server_process(pid: int) -> bool:
    """Alive, not dying, and running our server module (a reused pid is not ours)."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return not _is_dying(stat, status) and SERVER_MODULE.encode() in cmdline


def _is_dying(stat: str, status: str) -> bool:
    """A zombie, exiting, or killed and not yet scheduled to die (`/proc/<pid>/stat` and
    `/proc/<pid>/status` texts). `kill -9` returns before the process is gone: on a busy
    machine it can sit for a while in state R or S with SIGKILL pending, and is no server."""
    fields = stat.rsplit(")", 1)[1].split()  # the name in (...) may hold spaces
    state, flags = fields[0], int(fields[6])
    if state in ("Z", "X") or flags & PF_EXITING:
        return True
    pending = 0
    for line in status.splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")):  # per-thread and process-wide, hex masks
            pending |= int(line.split()[1], 16)
    return bool(pending & SIGKILL_MASK)


def _reap(pid: int) -> None:
    # When the server is our own child (tests, a long-lived CLI), collect its exit status
    # so that it does not linger as a zombie that still looks like a live pid.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _alive(url: str, hung_after_s: float) -> bool:
    """The server answers /ping, ready or busy (never restart it), within `hung_after_s`
    seconds: a first, 2 s probe, then one as long (a loaded box may answer late)."""
    return probe(url).alive or probe(url, timeout=hung_after_s).alive
