"""Replay a dataset file, in time order, as batch files landing one after another.

This is the engine behind `ct simulate`: it stands in for an upstream system that drops a
new file every so often. It remembers its position in a small state file, so a restarted
simulation continues where the last one stopped instead of re-landing old rows.

Pacing follows the platform, not only the clock: with `max_pending`, the next batch waits
while more of this replay's batches than that are still in the landing folder un-ingested
(neither validated nor quarantined under CT_HOME), so a busy machine is not buried under a
backlog. A platform that never catches up does not stall the replay: after `max_wait`
seconds the batch lands anyway, and the replay says so.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ct_platform.data.ingest import find_valid_batch
from ct_platform.data.reader import read_batch
from ct_platform.settings import Paths, Spec

BATCH_NAME = "batch-{number:05d}.csv"


@dataclass
class ReplayState:
    source: str
    next_row: int = 0
    next_batch: int = 1

    @classmethod
    def load(cls, path: Path, source: Path, *, restart: bool) -> ReplayState:
        """The saved position for `source`; a fresh start if asked, absent or another source.

        Batch numbers keep counting up across restarts, so a replay never reuses a name.
        """
        try:
            saved = cls(**json.loads(path.read_text())) if path.exists() else None
        except (ValueError, TypeError) as exc:
            if not restart:
                raise ValueError(
                    f"{path}: not a valid simulation state ({exc}); use --restart"
                ) from None
            saved = None  # starting over anyway; existing batch names are still never reused
        if saved is None or restart or saved.source != str(source):
            return cls(source=str(source), next_batch=saved.next_batch if saved else 1)
        return saved

    def save(self, path: Path) -> None:
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(asdict(self)))
        os.replace(temporary, path)


@dataclass(frozen=True)
class ReplayOptions:
    source: Path
    landing_dir: Path
    state_path: Path
    batch_size: int = 4000
    interval: float = 60.0
    max_batches: int | None = None
    restart: bool = False
    # Land the next batch only while at most this many landed ones await ingestion.
    max_pending: int | None = None
    max_wait: float = 900.0  # seconds a batch waits on the platform before landing anyway


def load_source(source: Path, spec: Spec) -> pd.DataFrame:
    """The whole source file as raw strings, in time order when the spec names a time column."""
    frame = read_batch(source, spec.dataset)
    if spec.dataset.time_column is not None:
        frame = frame.sort_values(spec.dataset.time_column, kind="stable", ignore_index=True)
    return frame


def replay(
    options: ReplayOptions,
    spec: Spec,
    stop: threading.Event,
    *,
    frame: pd.DataFrame | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Land batches until the source is exhausted, `max_batches` are written or `stop` is set.

    `frame` is the source already loaded (`load_source`), to read it once. Returns how many
    batches were landed by this call.
    """
    if options.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {options.batch_size}")
    if options.max_pending is not None and options.max_pending < 0:
        raise ValueError(f"--max-pending must be 0 or more, got {options.max_pending}")
    frame = load_source(options.source, spec) if frame is None else frame
    state = ReplayState.load(options.state_path, options.source, restart=options.restart)
    options.landing_dir.mkdir(parents=True, exist_ok=True)
    if state.next_row:
        log(f"resuming {options.source.name} at row {state.next_row} (--restart starts over)")
    landed_names: list[str] = []
    while not stop.is_set() and (
        options.max_batches is None or len(landed_names) < options.max_batches
    ):
        if state.next_row >= len(frame):
            log(
                f"source exhausted: all {len(frame)} rows of {options.source.name} replayed. "
                "`ct simulate --restart` lands them again under new names (the platform sees "
                "them as duplicates and does not retrain); `make clean demo` starts over."
            )
            break
        if options.max_pending is not None:
            _wait_for_ingestion(options, landed_names, stop, log)
            if stop.is_set():
                break
        started = time.monotonic()
        rows = frame.iloc[state.next_row : state.next_row + options.batch_size]
        number, name = _free_batch_name(options.landing_dir, state.next_batch)
        path = write_atomically(rows, options.landing_dir / name, spec.dataset.separator)
        log(f"landed {path.name}: rows {state.next_row}-{state.next_row + len(rows) - 1}")
        state.next_row += len(rows)
        state.next_batch = number + 1
        state.save(options.state_path)
        landed_names.append(path.name)
        last = options.max_batches is not None and len(landed_names) >= options.max_batches
        if not last and state.next_row < len(frame):
            stop.wait(max(0.0, started + options.interval - time.monotonic()))
    return len(landed_names)


def awaiting_ingestion(landing_dir: Path, names: list[str], paths: Paths) -> list[str]:
    """Those of `names` still in `landing_dir` with no validated record yet.

    A quarantined batch has been moved out of the landing folder, so it no longer counts.
    """
    return [
        name
        for name in names
        if (landing_dir / name).exists() and find_valid_batch(paths, name) is None
    ]


def _wait_for_ingestion(
    options: ReplayOptions,
    landed_names: list[str],
    stop: threading.Event,
    log: Callable[[str], None],
    poll_seconds: float = 2.0,
) -> None:
    """Wait while more than `max_pending` batches landed by this replay await ingestion."""
    paths = Paths.from_env()
    deadline = time.monotonic() + options.max_wait
    said = False
    while not stop.is_set():
        waiting = awaiting_ingestion(options.landing_dir, landed_names, paths)
        if len(waiting) <= (options.max_pending or 0):
            return
        if time.monotonic() >= deadline:
            log(
                f"landing the next batch anyway: {len(waiting)} batch(es) still not ingested "
                f"after {options.max_wait:.0f} s ({', '.join(waiting)}); is the Dagster "
                "daemon running?"
            )
            return
        if not said:
            log(f"waiting for the platform to ingest {', '.join(waiting)} before the next batch")
            said = True
        stop.wait(poll_seconds)


def write_atomically(rows: pd.DataFrame, path: Path, separator: str) -> Path:
    """Write under a hidden temporary name, then rename: readers never see half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", newline="") as handle:
        rows.to_csv(handle, sep=separator, index=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def _free_batch_name(landing_dir: Path, number: int) -> tuple[int, str]:
    # Never overwrite: a file already there may be one the platform has trained on.
    while (landing_dir / BATCH_NAME.format(number=number)).exists():
        number += 1
    return number, BATCH_NAME.format(number=number)
