"""The local target against real server processes on a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ct_platform.deployment import ensure_running, smoke_request, target_for
from ct_platform.deployment.admin import AdminClient
from ct_platform.deployment.endpoint import DeploymentError
from ct_platform.deployment.local import LocalTarget, _is_dying
from ct_platform.deployment.state import admin_token, read_json
from ct_platform.settings import Spec
from ct_platform_tests.deployment.conftest import (
    assert_still_held,
    free_port_pair,
    slowloris,
    with_port,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def local(serving_spec: Spec) -> Iterator[LocalTarget]:
    target = target_for(serving_spec)
    assert isinstance(target, LocalTarget)
    yield target
    target.stop()  # never leave a server behind, whatever the test did


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll for a condition with a deadline generous enough for a busy 2-core box."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.05)


def served_pid(target: LocalTarget) -> int:
    return int(target.pid_file.read_text())


def test_deploy_serves_records_and_stops(
    local: LocalTarget, bundles: dict[str, Path], sample_row: dict[str, Any]
) -> None:
    endpoint = local.deploy(bundles["1"])

    assert (endpoint.version, endpoint.target, endpoint.url) == ("1", "local", local.url)
    assert smoke_request(endpoint.url, sample_row) in (0, 1)
    pid = served_pid(local)
    os.kill(pid, 0)  # alive
    status = local.status()
    assert status is not None and status.healthy and status.endpoint == endpoint
    token_file = local.pid_file.parent / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text() not in local.log_file.read_text()

    local.stop()
    assert local.status() is None and not local.pid_file.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{endpoint.url}/ping", timeout=2)


def test_dead_server_is_found_and_restarted(
    local: LocalTarget, bundles: dict[str, Path], sample_row: dict[str, Any]
) -> None:
    local.deploy(bundles["1"])
    first_pid = served_pid(local)
    os.kill(first_pid, signal.SIGKILL)

    # At once, with no wait: kill returns before the process is gone (on a busy machine it
    # can still look alive for a while, SIGKILL pending), and it must read as gone already.
    status = local.status()
    assert status is not None and not status.healthy
    assert status.detail == "server process is gone"
    endpoint = ensure_running(local)

    assert endpoint is not None and endpoint.version == "1"
    assert served_pid(local) != first_pid
    assert smoke_request(endpoint.url, sample_row) in (0, 1)


def test_redeploy_hot_swaps_with_zero_failed_requests(
    local: LocalTarget, bundles: dict[str, Path], sample_row: dict[str, Any]
) -> None:
    local.deploy(bundles["1"])
    pid = served_pid(local)
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def hammer() -> None:
        # A slow answer on a busy box is not a failed request: only errors count as failures.
        with httpx.Client(base_url=local.url, timeout=60) as client:
            while not stop.is_set():
                try:
                    response = client.post("/invocations", json={"dataframe_records": [sample_row]})
                    ok = response.status_code == 200
                    outcomes[response.headers["x-model-version"] if ok else "failed"] += 1
                except httpx.HTTPError:
                    outcomes["failed"] += 1

    load = threading.Thread(target=hammer)
    load.start()
    try:
        wait_until(lambda: outcomes["1"] > 0 or outcomes["failed"] > 0, "a request to version 1")
        endpoint = local.deploy(bundles["2"])
        wait_until(lambda: outcomes["2"] > 0 or outcomes["failed"] > 0, "a request to version 2")
    finally:
        stop.set()
        load.join()

    assert endpoint.version == "2"
    assert served_pid(local) == pid  # swapped in place, not restarted
    assert outcomes["failed"] == 0, outcomes
    assert outcomes["1"] > 0 and outcomes["2"] > 0, outcomes


def test_a_shell_with_another_port_swaps_into_the_recorded_server(
    local: LocalTarget,
    bundles: dict[str, Path],
    serving_spec: Spec,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # `make demo` serves on its port; a shell without CT_SERVING_PORT has the spec's default.
    recorded = local.deploy(bundles["1"]).url
    pid = served_pid(local)
    other_port = free_port_pair()
    elsewhere = LocalTarget(with_port(serving_spec, other_port))

    endpoint = elsewhere.deploy(bundles["2"])

    assert (endpoint.url, endpoint.version) == (recorded, "2")
    assert served_pid(local) == pid  # the same process, hot-swapped, not killed as hung
    assert AdminClient(recorded, _token(serving_spec)).stable_version() == "2"
    assert (read_json(local.state_file) or {})["url"] == recorded
    assert not _answers(f"http://{serving_spec.serving.host}:{other_port}")
    assert (
        f"serving at the recorded {recorded}; this shell's port {other_port} differs "
        "(CT_SERVING_PORT)"
    ) in caplog.text


def test_a_hung_server_is_restarted_on_its_recorded_port(
    local: LocalTarget, bundles: dict[str, Path], serving_spec: Spec
) -> None:
    recorded = local.deploy(bundles["1"]).url
    hung_pid = served_pid(local)
    os.kill(hung_pid, signal.SIGSTOP)  # alive, /ping silent
    elsewhere_spec = with_port(serving_spec, free_port_pair())
    impatient = elsewhere_spec.serving.model_copy(update={"hung_after_s": 1.0})  # not 10 s
    elsewhere = LocalTarget(elsewhere_spec.model_copy(update={"serving": impatient}))
    try:
        endpoint = elsewhere.deploy(bundles["2"])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung_pid, signal.SIGCONT)

    assert (endpoint.url, endpoint.version) == (recorded, "2")
    assert served_pid(local) != hung_pid
    assert AdminClient(recorded, _token(serving_spec)).stable_version() == "2"
    assert (read_json(local.state_file) or {})["url"] == recorded


def _token(spec: Spec) -> str:
    return admin_token(spec.paths.deployments, spec.serving.admin_token_env)


def test_server_with_a_foreign_admin_token_is_restarted(
    local: LocalTarget,
    bundles: dict[str, Path],
    serving_spec: Spec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(serving_spec.serving.admin_token_env, "started-by-hand")
    local.deploy(bundles["1"])
    pid = served_pid(local)
    monkeypatch.setenv(serving_spec.serving.admin_token_env, "a-different-token")

    endpoint = local.deploy(bundles["2"])

    assert endpoint.version == "2" and served_pid(local) != pid
    assert AdminClient(endpoint.url, "a-different-token").stable_version() == "2"


def test_a_foreign_server_on_the_port_is_named_and_nothing_is_deployed(
    local: LocalTarget, bundles: dict[str, Path], serving_spec: Spec
) -> None:
    # Someone's `ct serve` of version 1 holds the spec's port; the platform never started it.
    port = serving_spec.serving.port
    command = [sys.executable, "-m", "ct_platform.serving", "--bundle", str(bundles["1"])]
    foreign = subprocess.Popen(
        [*command, "--host", serving_spec.serving.host, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _answers(local.url), "the foreign server's /ping")
        with pytest.raises(DeploymentError) as raised:
            local.deploy(bundles["2"])
    finally:
        foreign.terminate()
        foreign.wait(timeout=60)

    assert str(raised.value) == (
        f"{local.url} already answers, but not from a server this platform started: another "
        f"process holds port {port} (a `ct serve`?). Stop it, or set the spec's serving.port "
        "to a free port; nothing was deployed."
    )
    assert local.status() is None and not local.pid_file.exists()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ping", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_killed_process_reads_as_dying_at_once() -> None:
    """The kill -> exit window that made the test above flaky on a loaded box: right after
    kill(SIGKILL) returns, and as an unreaped zombie, the process reads as dying."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        proc = Path(f"/proc/{busy.pid}")
        assert not _is_dying((proc / "stat").read_text(), (proc / "status").read_text())
        os.kill(busy.pid, signal.SIGKILL)
        assert _is_dying((proc / "stat").read_text(), (proc / "status").read_text())
        state = lambda: (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]  # noqa: E731
        wait_until(lambda: state() == "Z", "zombie state after the kill")
        assert _is_dying((proc / "stat").read_text(), (proc / "status").read_text())
    finally:
        busy.kill()
        busy.wait()


def test_a_server_busy_at_its_connection_cap_is_swapped_into_never_restarted(
    serving_spec: Spec, bundles: dict[str, Path], sample_row: dict[str, Any]
) -> None:
    """The newcomer's finding: slow clients filled `serving.max_connections`, `/ping`
    answered uvicorn's 503, and a deploy killed and restarted the live server. Now the
    server at its cap is alive to status, ensure_running and deploy: a hot swap, same pid,
    and the held requests' connections are never dropped."""
    capped = serving_spec.model_copy(
        update={"serving": serving_spec.serving.model_copy(update={"max_connections": 2})}
    )
    local = target_for(capped)
    assert isinstance(local, LocalTarget)
    try:
        local.deploy(bundles["1"])
        pid = served_pid(local)
        held = slowloris(local.url, 2)
        try:
            # At the cap: scoring is refused (busy), the health check is not.
            wait_until(lambda: smoke_status(local.url, sample_row) == 503, "a 503 at the cap", 120)
            status = local.status()
            assert status is not None and status.healthy and status.busy, status
            assert status.detail == (
                f"pid {pid}, busy: holds its maximum of 2 connections "
                "(serving.max_connections) (alive, overloaded; not restarted)"
            )
            assert ensure_running(local) == status.endpoint
            endpoint = local.deploy(bundles["2"])
            assert endpoint.version == "2" and served_pid(local) == pid
            assert_still_held(held)  # by the same server
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: smoke_status(local.url, sample_row) == 200, "traffic served again")
    finally:
        local.stop()


def smoke_status(url: str, row: dict[str, Any]) -> int:
    body = {"dataframe_records": [row]}
    return httpx.post(f"{url}/invocations", json=body, timeout=60).status_code
