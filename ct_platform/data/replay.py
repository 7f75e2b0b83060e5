"""Replay a dataset file, in time order, as batch files landing one after another.

This is the engine behind `ct simulate`: it stands in for an upstream system that drops a
new file every so often. It remembers its position in a small state file, so a restarted
simulation continues where the last one stopped instead of re-landing old rows.
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

from ct_platform.data.reader import read_batch
from ct_platform.data.traffic import TrafficSender
from ct_platform.settings import Spec

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
    traffic: TrafficSender | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Land batches until the source is exhausted, `max_batches` are written or `stop` is set.

    Returns how many batches were landed by this call.
    """
    if options.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {options.batch_size}")
    frame = load_source(options.source, spec)
    state = ReplayState.load(options.state_path, options.source, restart=options.restart)
    options.landing_dir.mkdir(parents=True, exist_ok=True)
    if state.next_row:
        log(f"resuming {options.source.name} at row {state.next_row} (--restart starts over)")
    landed = 0
    while not stop.is_set() and (options.max_batches is None or landed < options.max_batches):
        if state.next_row >= len(frame):
            log(f"source exhausted: all {len(frame)} rows of {options.source.name} replayed")
            break
        started = time.monotonic()
        rows = frame.iloc[state.next_row : state.next_row + options.batch_size]
        number, name = _free_batch_name(options.landing_dir, state.next_batch)
        if traffic is not None:
            report = traffic.send_batch(rows, f"{number:05d}")
            if report.unreachable:
                log(f"{name}: endpoint {traffic.endpoint} unreachable ({report.unreachable})")
            else:
                log(f"{name}: traffic {report.summary()}")
            if stop.is_set():
                break  # interrupted mid-traffic: land nothing, resume with these rows
        path = write_atomically(rows, options.landing_dir / name, spec.dataset.separator)
        log(f"landed {path.name}: rows {state.next_row}-{state.next_row + len(rows) - 1}")
        state.next_row += len(rows)
        state.next_batch = number + 1
        state.save(options.state_path)
        landed += 1
        last = options.max_batches is not None and landed >= options.max_batches
        if not last and state.next_row < len(frame):
            stop.wait(max(0.0, started + options.interval - time.monotonic()))
    return landed


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
