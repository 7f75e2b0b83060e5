"""`ct simulate`: replay the dataset as batches into the landing folder (and as live traffic).

The demo runs it beside a platform that is still starting: `--wait-for` holds the first
batch until the platform answers, `--max-pending` paces batches by what it has ingested,
and traffic (`--endpoint`) starts whenever a model is served and goes on after the last
batch has landed, until Ctrl-C.

Imports stay inside `run` so that `ct simulate --help` does not pay for pandas or httpx.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: the real imports wait until the command runs
    import pandas as pd

    from ct_platform.data.replay import ReplayOptions
    from ct_platform.data.traffic import TrafficSender
    from ct_platform.settings import Spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        type=Path,
        help="dataset file to replay (default: the spec's dataset.source)",
    )
    parser.add_argument("--batch-size", type=int, default=4000, help="rows per batch file")
    parser.add_argument(
        "--interval", type=float, default=60.0, help="seconds from one batch to the next"
    )
    parser.add_argument("--max-batches", type=int, help="stop after landing this many batches")
    parser.add_argument("--once", action="store_true", help="land one batch and exit")
    parser.add_argument(
        "--restart", action="store_true", help="start from the first row, not the saved position"
    )
    parser.add_argument(
        "--wait-for",
        metavar="URL",
        help="land nothing until GET URL answers (e.g. the Dagster webserver's /server_info)",
    )
    parser.add_argument(
        "--max-pending",
        type=int,
        help="land the next batch only while at most this many landed ones await ingestion",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=900.0,
        help="seconds a batch waits on --max-pending before it lands anyway (default 900)",
    )
    traffic = parser.add_argument_group("live traffic (production monitoring)")
    traffic.add_argument(
        "--endpoint",
        help="model server URL: rows are sent as single-row requests from when it answers "
        "until Ctrl-C (or --traffic-rows)",
    )
    traffic.add_argument("--traffic-rows", type=int, help="stop the traffic after this many rows")
    traffic.add_argument("--rps", type=float, default=20.0, help="requests per second")
    traffic.add_argument(
        "--label-delay",
        type=float,
        default=30.0,
        help="seconds before the true labels are posted to /feedback",
    )
    traffic.add_argument(
        "--api-key", help="bearer token for the server (default: the spec's api_key_env variable)"
    )


def run(args: argparse.Namespace) -> int:
    from ct_platform.cli.where import load_platform
    from ct_platform.data.reader import BatchReadError
    from ct_platform.data.replay import ReplayOptions, load_source, replay
    from ct_platform.data.traffic import wait_until_answers

    try:
        platform = load_platform()  # the running platform's spec, refused when invalid
    except ValueError as exc:  # SpecError, OtherPlatformError
        print(f"ct simulate: {exc}")
        return 2
    spec = platform.spec
    source, problem = _source(args.source, spec, platform.spec_file)
    if problem:
        print(f"ct simulate: {problem}")
        return 2
    options = ReplayOptions(
        source=source,
        landing_dir=spec.landing_dir,
        state_path=platform.paths.state / "simulate.json",
        batch_size=args.batch_size,
        interval=args.interval,
        max_batches=1 if args.once else args.max_batches,
        restart=args.restart,
        max_pending=args.max_pending,
        max_wait=args.max_wait,
    )
    stop = threading.Event()
    with _stop_on_signals(stop):
        try:
            frame = load_source(options.source, spec)
            traffic = _start_traffic(args, spec, frame, options, stop) if args.endpoint else None
            if args.wait_for and not wait_until_answers(
                args.wait_for, stop, what="the platform", log=_say
            ):
                landed = 0  # stopped while waiting
            else:
                landed = replay(options, spec, stop, frame=frame, log=_say)
        except (BatchReadError, ValueError) as exc:
            stop.set()  # a traffic thread already started ends too
            print(f"ct simulate: {exc}")
            return 1
        if traffic is not None:
            _finish_traffic(*traffic, stop)
    ending = "stopped" if stop.is_set() else "done"
    print(f"{ending}: {landed} batches landed in {options.landing_dir}")
    return 0


def _source(given: Path | None, spec: Spec, spec_file: Path) -> tuple[Path, str | None]:
    """The file to replay (absolute) and, when it cannot be used, why and how to name one."""
    how = f"give the file with --source FILE, or set dataset.source in {spec_file}"
    if given is not None:
        source, origin = given.resolve(), "--source"
    elif spec.source_file is not None:
        source, origin = spec.source_file, f"dataset.source of {spec_file}"
    else:
        return Path(), f"no dataset file to replay: {how}"
    if not source.is_file():
        return source, f"dataset file {source} (from {origin}) does not exist: {how}"
    return source, None


def _start_traffic(
    args: argparse.Namespace,
    spec: Spec,
    frame: pd.DataFrame,
    options: ReplayOptions,
    stop: threading.Event,
) -> tuple[TrafficSender, threading.Thread]:
    """Start live traffic in the background, from the rows the replay is about to land."""
    from ct_platform.data.replay import ReplayState
    from ct_platform.data.traffic import TrafficSender, stream_traffic

    sender = TrafficSender(
        args.endpoint,
        spec.dataset,
        rps=args.rps,
        label_delay=args.label_delay,
        api_key=args.api_key or os.environ.get(spec.serving.api_key_env),
        stop=stop,
        log=_say,
    )
    position = ReplayState.load(options.state_path, options.source, restart=options.restart)
    thread = threading.Thread(
        target=stream_traffic,
        args=(sender, frame),
        kwargs={"start_row": position.next_row, "max_rows": args.traffic_rows, "log": _say},
        name="traffic",
        daemon=True,
    )
    thread.start()
    return sender, thread


def _finish_traffic(sender: TrafficSender, thread: threading.Thread, stop: threading.Event) -> None:
    """Let the traffic run its course (until Ctrl-C without --traffic-rows), then the labels."""
    if thread.is_alive() and not stop.is_set():
        print(f"live traffic to {sender.endpoint} goes on; Ctrl-C stops it")
    while thread.is_alive():
        thread.join(0.5)  # short joins: the main thread keeps handling Ctrl-C
    sender.wait_for_feedback()
    dropped = sender.cancel_feedback()
    if dropped:
        print(f"stopped before {dropped} labels were due; they were not posted")


def _say(line: str) -> None:
    """One line in one write: the replay and the traffic threads never splice their lines."""
    sys.stdout.write(f"{line}\n")


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C / SIGTERM set `stop`, so the current batch finishes or is skipped cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
