"""Where a single-row request's CPU goes inside the server, without sockets or wrk.

    .venv/bin/python benchmarks/serving/profile_hot_path.py --bundle DIR --body row.json
        [--requests 20000] [--cprofile]

Drives the real ASGI app in-process (the same object uvicorn runs) with a minimal ASGI
`receive`/`send` pair, so the figures are the app's own CPU per request: routing, header
handling, parse + validation, building the ONNX inputs, `session.run`, rendering, the
prediction-log record. Then times each stage alone on the same body. Prints microseconds
per request (median of 5 rounds). `--cprofile` adds the top functions by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 5
SORT = "tottime"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--body", type=Path, required=True, help="an /invocations JSON body")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument(
        "--repo",
        type=Path,
        default=REPO,
        help="checkout whose server to profile (another one: whole app only, for before/after)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo))
    from ct_platform.serving.app import create_app
    from ct_platform.serving.config import ServerConfig

    body = args.body.read_bytes()
    with tempfile.TemporaryDirectory(prefix="ct-profile-") as home:
        app = create_app(ServerConfig(bundle=args.bundle, home=Path(home)))
        gc.collect()  # as `run_server` does after loading
        gc.freeze()
        report("whole app (ASGI, in-process)", asgi_loop(app, body), args.requests)
        if args.repo.resolve() != REPO:
            return 0
        for name, step in stages(args.bundle, body).items():
            report(name, step, args.requests)
        if args.cprofile:
            profile(asgi_loop(app, body), args.requests)
    return 0


def asgi_loop(
    app: Callable, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> Callable[[int], None]:
    """n POST /invocations through the ASGI app on one event loop; `headers`: extra ones."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/invocations",
        "raw_path": b"/invocations",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict:
        return message

    async def send(event: dict) -> None:
        if event["type"] == "http.response.start" and event["status"] != 200:
            raise RuntimeError(f"status {event['status']}")

    async def requests(n: int) -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)
            await asyncio.sleep(0)  # let the deferred log formatting run, as in a server

    loop = asyncio.new_event_loop()
    return lambda n: loop.run_until_complete(requests(n))


def stages(bundle: Path, body: bytes) -> dict[str, Callable[[int], None]]:
    from ct_platform.serving.bundle import load_bundle
    from ct_platform.serving.mlflow_protocol import parse_invocation, render_predictions
    from ct_platform.serving.prediction_log import ScoredBatch, jsonl
    from ct_platform.serving.slots import ServedModel

    served = ServedModel.of(load_bundle(bundle))
    parsed = parse_invocation(body, "application/json", served.schema)
    prediction = served.model.predict(parsed)
    batch = ScoredBatch(
        "id", 0.0, "stable", "1", served.schema.names, parsed.columns, prediction, 1.0
    )

    def repeat(step: Callable[[], object]) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                step()

        return run

    return {
        "parse + validate": repeat(
            lambda: parse_invocation(body, "application/json", served.schema)
        ),
        "model.predict (inputs + ORT)": repeat(lambda: served.model.predict(parsed)),
        "render": repeat(lambda: render_predictions(prediction)),
        "log records": repeat(lambda: jsonl(batch)),
    }


def report(name: str, run: Callable[[int], None], n: int) -> None:
    run(min(n, 1000))  # warm-up
    per_request = []
    for _ in range(ROUNDS):
        started = time.process_time()
        run(n)
        per_request.append((time.process_time() - started) / n * 1e6)
    print(f"{name:34s} {statistics.median(per_request):8.1f} µs CPU/request")


def profile(run: Callable[[int], None], n: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run(n)
    profiler.disable()
    pstats.Stats(profiler).sort_stats(SORT).print_stats(45)


if __name__ == "__main__":
    sys.exit(main())
