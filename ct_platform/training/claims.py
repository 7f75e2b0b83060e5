"""Who is training a data fingerprint right now: one claim per fingerprint, safe under kill -9.

Two runs started together on the same new data must not both register (and promote) a
version. The first run to claim the fingerprint trains it; the claim lasts from before the
registry lookup until the verdict is a rejection or the whole-window refit is promoted or
rejected (`training.refit`), across steps. A later run sees a live claim and trains nothing.

Why this shape:
- A plain O_EXCL lock file is never removed by a holder killed with -9, so the claim must be
  taken over when its holder is dead. Each claim (`<CT_HOME>/state/claims/<fingerprint>.json`)
  names its Dagster run and its worker process (host, pid, process start time).
- Reading a claim, judging its holder and writing ours happen under `fcntl.flock` on one lock
  file. The kernel drops that lock when its process dies, kill -9 included, so two runs never
  both take over a stale claim and a dead process never blocks the others.
- A holder is dead when its process is gone (or the pid now belongs to a process started at
  another time) or when its Dagster run has finished. The Dagster status alone is not enough:
  the default run launcher cannot check its run workers' health, so a run killed with -9
  stays STARTED until run monitoring's `max_runtime_seconds` fails it.
- A holder on another host cannot be probed; its claim stands until its Dagster run ends.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ct_platform.processes import process_exists, start_ticks

LOCK_FILE = ".lock"
# Dagster run status names of a run that may still be working (and writing).
IN_PROGRESS = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"})


@dataclass(frozen=True)
class Claim:
    fingerprint: str
    run_id: str
    # `<host>:<pid>:<process start time>` of the process that holds the claim.
    worker: str


def current_worker() -> str:
    """This process as `<host>:<pid>:<start time>`; the start time tells a reused pid apart."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{start_ticks(pid)}"


def worker_alive(worker: str) -> bool:
    """False when `worker` (from `current_worker`) is provably gone; True if alive or unknown."""
    host, _, rest = worker.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine (or a malformed entry): not ours to judge
    pid = int(pid_text)
    return process_exists(pid) and start_ticks(pid) == started


def claim_fingerprint(
    directory: Path, fingerprint: str, run_id: str, run_finished: Callable[[str], bool]
) -> Claim:
    """Claim `fingerprint` for `run_id` unless a live run holds it; return the claim in force.

    The result's `run_id` is ours when we hold the claim (newly, taken over from a dead
    holder, or already), another run's when that run is alive and still holds it.
    `run_finished(run_id)` says whether a Dagster run has ended (unknown runs count as ended).
    """
    mine = Claim(fingerprint, run_id, current_worker())
    with _locked(directory):
        held = _read(directory, fingerprint)
        if (
            held is not None
            and held.run_id != run_id
            and worker_alive(held.worker)
            and not run_finished(held.run_id)
        ):
            return held
        _write(directory, mine)
    return mine


def release_claim(directory: Path, fingerprint: str, run_id: str) -> None:
    """Drop `run_id`'s claim on `fingerprint`; a claim held by another run is left alone."""
    with _locked(directory):
        held = _read(directory, fingerprint)
        if held is not None and held.run_id == run_id:
            _claim_path(directory, fingerprint).unlink()


def _claim_path(directory: Path, fingerprint: str) -> Path:
    if not fingerprint.isalnum():
        raise ValueError(f"fingerprint must be alphanumeric: {fingerprint!r}")
    return directory / f"{fingerprint}.json"


def _read(directory: Path, fingerprint: str) -> Claim | None:
    try:
        return Claim(**json.loads(_claim_path(directory, fingerprint).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None  # torn by a crash mid-write (older writer): nobody holds it


def _write(directory: Path, claim: Claim) -> None:
    path = _claim_path(directory, claim.fingerprint)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(asdict(claim)))
    temporary.replace(path)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file releases the lock (and so does the process dying)
