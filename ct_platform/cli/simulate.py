"""`ct simulate`: replay the dataset as batches into the landing folder (and as live traffic).

Imports stay inside `run` so that `ct simulate --help` does not pay for pandas or httpx.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: the real imports wait until the command runs
    from ct_platform.data.traffic import TrafficSender
    from ct_platform.settings import Spec

DEFAULT_SOURCE = Path("data") / "bank_marketing.csv.gz"  # relative to the spec's folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        type=Path,
        help=f"dataset file to replay (default: {DEFAULT_SOURCE} next to the spec)",
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
    traffic = parser.add_argument_group("live traffic (production monitoring)")
    traffic.add_argument(
        "--endpoint", help="model server URL; each batch is first sent as single-row requests"
    )
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
    from ct_platform.data.reader import BatchReadError
    from ct_platform.data.replay import ReplayOptions, replay
    from ct_platform.settings import Paths, SpecError, load_spec

    try:
        spec = load_spec()
    except SpecError as exc:
        print(f"ct simulate: {exc}")
        return 2
    options = ReplayOptions(
        source=(args.source or spec.base_dir / DEFAULT_SOURCE).resolve(),
        landing_dir=spec.landing_dir,
        state_path=Paths.from_env().state / "simulate.json",
        batch_size=args.batch_size,
        interval=args.interval,
        max_batches=1 if args.once else args.max_batches,
        restart=args.restart,
    )
    stop = threading.Event()
    with _stop_on_signals(stop):
        try:
            traffic = _traffic_sender(args, spec, stop) if args.endpoint else None
            landed = replay(options, spec, stop, traffic=traffic)
        except (BatchReadError, ValueError) as exc:
            print(f"ct simulate: {exc}")
            return 1
        if traffic is not None:
            traffic.wait_for_feedback()
            dropped = traffic.cancel_feedback()
            if dropped:
                print(f"stopped before {dropped} labels were due; they were not posted")
    ending = "stopped" if stop.is_set() else "done"
    print(f"{ending}: {landed} batches landed in {options.landing_dir}")
    return 0


def _traffic_sender(args: argparse.Namespace, spec: Spec, stop: threading.Event) -> TrafficSender:
    from ct_platform.data.traffic import TrafficSender

    return TrafficSender(
        args.endpoint,
        spec.dataset,
        rps=args.rps,
        label_delay=args.label_delay,
        api_key=args.api_key or os.environ.get(spec.serving.api_key_env),
        stop=stop,
    )


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
