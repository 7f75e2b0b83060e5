"""A real PostgreSQL server for the tests, and a fresh database per test on it.

`.ci/run` starts one (deploy/postgres.sh, installing Debian's package when missing) and
exports `CT_TEST_POSTGRES_URL`; run outside it, the session fixture starts its own with the
same script when PostgreSQL is installed (it never installs it) and stops it at the end. When
neither works the PostgreSQL-backed tests skip, with the reason in the skip summary (-ra).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

SERVER_URL_VARIABLE = "CT_TEST_POSTGRES_URL"
START_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "postgres.sh"


@dataclass
class PostgresServer:
    """A PostgreSQL server reachable at `url` as a role allowed to create databases."""

    url: str
    created: list[str] = field(default_factory=list)

    def new_database(self, prefix: str, driver: str = "postgresql") -> str:
        """Create an empty database `<prefix>_<random>`; its URL (`<driver>://...`)."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self._execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        url = make_url(self.url).set(drivername=driver, database=name)
        return url.render_as_string(hide_password=False)

    def drop_created(self) -> None:
        """Drop every database made by `new_database` (FORCE: a test may leave connections)."""
        while self.created:
            self._execute(f'DROP DATABASE IF EXISTS "{self.created.pop()}" WITH (FORCE)')

    def _execute(self, statement: str) -> None:
        import psycopg

        # autocommit: CREATE/DROP DATABASE cannot run inside a transaction
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(statement)


def start_own_server() -> tuple[str, str]:
    """Start a throw-away server with deploy/postgres.sh: `(url, folder)`.

    Raises RuntimeError with the script's banner when it cannot start one.
    """
    started = subprocess.run(
        ["bash", str(START_SCRIPT), "start"],
        env={**os.environ, "CT_POSTGRES_INSTALL": "0"},  # a test never installs packages
        capture_output=True,
        text=True,
        timeout=300,
    )
    values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    if started.returncode != 0 or SERVER_URL_VARIABLE not in values:
        raise RuntimeError(started.stderr.strip()[-2000:] or "deploy/postgres.sh start failed")
    return values[SERVER_URL_VARIABLE], values["CT_TEST_POSTGRES_DIR"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The CI's server (`CT_TEST_POSTGRES_URL`), else one started for this session."""
    configured = os.environ.get(SERVER_URL_VARIABLE)
    folder = None
    if configured:
        url = configured
    else:
        try:
            url, folder = start_own_server()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            message = f"NO POSTGRESQL: PostgreSQL-backed tests SKIPPED: {exc}"
            print(f"\n!!! {message}", file=sys.stderr)
            pytest.skip(message)
    server = PostgresServer(url)
    try:
        yield server
    finally:
        server.drop_created()
        if folder is not None:
            subprocess.run(["bash", str(START_SCRIPT), "stop", folder], capture_output=True)
