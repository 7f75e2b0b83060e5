"""Small files under `$CT_HOME/deployments/`: target state (JSON) and the admin token.

State files are replaced atomically (write a temp file, then rename), so a reader — another
Dagster run, the CLI — sees either the old deployment or the new one, never half of each.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ADMIN_TOKEN_FILE = "admin-token"


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` for the block (waits for the current holder).

    Two deploys at once (two Dagster runs, a run and the CLI) would otherwise both find no
    server and start two, or both swap; the kernel drops the lock if the holder dies.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class OwnServer:
    """`stop` and `halt` of a target that runs its own server (a process, a container),
    recorded in `state_file` and changed under `lock_file`; `_halt` stops the server."""

    lock_file: Path
    state_file: Path

    def stop(self) -> None:
        """Stop the server and forget the deployment (its record)."""
        with exclusive(self.lock_file):
            self._halt()
            self.state_file.unlink(missing_ok=True)

    def halt(self) -> None:
        """Stop the server, keep its record: the next deploy restarts what it served."""
        with exclusive(self.lock_file):
            self._halt()

    def _halt(self) -> None:
        raise NotImplementedError


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """The file's object, or None when it is absent or unreadable (treated as no state)."""
    try:
        payload = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def admin_token(deployments_dir: Path, env_var: str) -> str:
    """The server's admin bearer token: from `env_var` if set, else a generated one.

    The generated token lives in a 0600 file so that every later deploy (another process,
    another Dagster run) can talk to the server this one started. It is never logged.
    """
    from_env = os.environ.get(env_var)
    if from_env:
        return from_env
    path = deployments_dir / ADMIN_TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    deployments_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        # O_EXCL: when two deploys race, exactly one token wins and both read it back.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token
