"""CPU per request of the HTTP layer alone: uvicorn's httptools protocol against the server's
bounded one (`serving.http_limits`), in-process, on one uvloop loop.

    .venv/bin/python benchmarks/serving/http_layer.py --work DIR [--repo CHECKOUT ...]
        [--requests 5000] [--rounds 7]

The in-process instruction count (`count_instructions.py`) drives the ASGI app directly, so
what the server's own protocol class adds per request (its timers, its parser callbacks)
is not in it. Here each protocol gets a fake transport (no sockets, no kernel) and a minimal
ASGI app that reads the body and answers a fixed JSON, and is fed the single-row request
(`DIR/row.json`, as `count_instructions.py --work DIR` makes it) whole, one after the
other: the request's bytes in one `data_received`, then its ASGI task awaited. Variants
alternate within each round; prints the median and fastest CPU µs per request of each.
`--repo`: one bounded protocol per checkout (default this one), for before/after.
Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

REPO = Path(__file__).resolve().parents[2]
ANSWER = b'{"predictions":["no"]}'
WARM_UP = 2000


async def fixed_answer(scope: Any, receive: Callable, send: Callable) -> None:
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


class FakeTransport(asyncio.Transport):
    """What the protocol asks of a transport: addresses, writes (counted), close."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        addresses = {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}
        return addresses.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def bounded_protocol(repo: Path) -> type[HttpToolsProtocol]:
    """`repo`'s bounded protocol class with the server's default limits."""
    path = repo / "ct_platform" / "serving" / "http_limits.py"
    spec = importlib.util.spec_from_file_location(f"http_limits_{abs(hash(repo))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.bounded_http_protocol(
        65536, 10.0, 60.0, lambda status: None, body_time_limit_s=60.0, max_connections=512
    )


def driver(protocol_class: type, raw: bytes, loop: asyncio.AbstractEventLoop) -> Callable:
    """A callable(n) feeding `raw` n times to one connection of `protocol_class`."""
    config = uvicorn.Config(
        fixed_answer, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )
    config.load()
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
    protocol.connection_made(FakeTransport())

    async def requests(n: int) -> None:
        for _ in range(n):
            protocol.data_received(raw)
            for task in list(state.tasks):
                await task

    return lambda n: loop.run_until_complete(requests(n))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="holds row.json")
    parser.add_argument("--repo", type=Path, nargs="*", default=[REPO])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    body = (args.work / "row.json").read_bytes()
    raw = (
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    classes = {"uvicorn's HttpToolsProtocol": HttpToolsProtocol}
    classes |= {f"bounded ({repo})": bounded_protocol(repo.resolve()) for repo in args.repo}
    drivers = {name: driver(cls, raw, loop) for name, cls in classes.items()}
    for run in drivers.values():
        run(WARM_UP)
    gc.collect()
    gc.freeze()
    timings: dict[str, list[float]] = {name: [] for name in drivers}
    for _ in range(args.rounds):
        for name, run in drivers.items():
            started = time.process_time()
            run(args.requests)
            timings[name].append((time.process_time() - started) / args.requests * 1e6)
    for name, values in timings.items():
        print(f"{name:50s} median {statistics.median(values):6.2f} µs, fastest {min(values):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
