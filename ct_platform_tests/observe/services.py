"""Start real service processes for the observe tests and wait on what they answer."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent
# Generous: on the shared, loaded 2-core box a code location can take minutes to load.
START_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_binary(name: str, package: str) -> str:
    """The binary's path, or a loud skip naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        message = (
            f"!!! {name} is not installed: this test is SKIPPED. "
            f"Install it with `apt-get install -y {package}` (.ci/run does). !!!"
        )
        print(message, file=sys.stderr)
        pytest.skip(message)
    return path


@contextmanager
def service(
    command: list[str], env: dict[str, str], ready: Callable[[], bool], log: Path
) -> Iterator[subprocess.Popen]:
    """Run `command` until the block ends; enter once `ready()` is true (polled, not slept
    for a fixed time). Its output goes to `log`, quoted when it dies or never gets ready.

    The command runs in its own process group, stopped whole at the end: `mlflow server`
    starts job consumers and `dagster-webserver` a code server, which outlive their parent."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                state = "exited" if process.poll() is not None else "never got ready"
                pytest.fail(f"{command[0]} {state}; its log:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL to what is left after 30 s."""
    group = process.pid  # a new session: its group id is its pid
    with suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    with suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def answers(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return httpx.get(url, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    return ready
