"""The floor servers: the least our server's stack can do for a request.

    python benchmarks/serving/floor.py --port 8000
    python benchmarks/serving/floor.py --port 8000 --onnx model.onnx --rows rows.json \
        [--batch-threads 2]
    python benchmarks/serving/floor.py --parts --onnx model.onnx --rows rows.json

Starlette + uvicorn with the options our server uses (uvloop, httptools, access log off,
no proxy-header rewriting, log level warning), one route, `POST /invocations`, that reads
the body and answers a fixed JSON. With `--onnx`, it also runs `onnxruntime` `session.run`
on inputs parsed once at start-up from `--rows` (`dataframe_split` JSON): the one-row
inputs for a small body, with a one-thread session as our server; the many-row inputs for
a body over `BATCH_BODY_BYTES`, with a session of `--batch-threads` intra-op threads as our
server's for big requests (its `--batch-threads`, same default), answering the model's
labels (`{"predictions": [...]}`, as ours), so the 1,000-row figure pays for the model and
for encoding its answer. Nothing is parsed or validated per request.

`--parts` prints, in-process, the floor + ORT's 1,000-row parts instead of serving:
`session.run` with one thread and with `--batch-threads`, and encoding the answer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FIXED_ANSWER = orjson.dumps({"predictions": [{"label": "no", "probabilities": [0.95, 0.05]}]})
BATCH_BODY_BYTES = 16_384
PARTS_REPEATS = 200

_NUMPY_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64"}


def onnx_inputs(session: Any, payload: dict) -> dict[str, Any]:
    """ONNX inputs ([n, 1] per column, in the graph's input order) from `dataframe_split`."""
    import numpy as np

    split = payload["dataframe_split"]
    graph_inputs = session.get_inputs()
    if len(graph_inputs) != len(split["columns"]):
        raise ValueError(f"{len(graph_inputs)} ONNX inputs for {len(split['columns'])} columns")
    feeds = {}
    for position, graph_input in enumerate(graph_inputs):
        values = [row[position] for row in split["data"]]
        if graph_input.type == "tensor(string)":
            column = np.array([str(v) for v in values], dtype=object)
        else:
            numbers = [np.nan if v is None else v for v in values]
            column = np.array(numbers, dtype=_NUMPY_TYPES[graph_input.type])
        feeds[graph_input.name] = column.reshape(-1, 1)
    return feeds


def session(onnx_path: Path, threads: int) -> Any:
    """A CPU session of `onnx_path` with `threads` intra-op threads, set up as our server's
    (`serving.bundle._onnx_session`: sequential, pool threads spinning only during a run)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def pre_parsed(session: Any, rows_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(one-row inputs, all-rows inputs) of `rows_path`, parsed once."""
    payload = orjson.loads(rows_path.read_bytes())
    one_row = {"dataframe_split": {**payload["dataframe_split"]}}
    one_row["dataframe_split"]["data"] = payload["dataframe_split"]["data"][:1]
    return onnx_inputs(session, one_row), onnx_inputs(session, payload)


def answer(outputs: list[Any]) -> bytes:
    """The model's labels as our server answers a `dataframe_split` request."""
    return orjson.dumps({"predictions": outputs[0].ravel()}, option=orjson.OPT_SERIALIZE_NUMPY)


def model_runner(onnx_path: Path, rows_path: Path, batch_threads: int) -> Callable[[int], bytes]:
    """A callable(body size) -> answer: the pre-parsed one-row inputs scored by a one-thread
    session (the fixed answer), or the many-row inputs by a `batch_threads` one (labels)."""
    small_session = session(onnx_path, 1)
    big_session = session(onnx_path, batch_threads) if batch_threads > 1 else small_session
    small, large = pre_parsed(small_session, rows_path)

    def run(body_bytes: int) -> bytes:
        if body_bytes > BATCH_BODY_BYTES:
            return answer(big_session.run(None, large))
        small_session.run(None, small)
        return FIXED_ANSWER

    return run


def print_parts(onnx_path: Path, rows_path: Path, batch_threads: int) -> None:
    """Median and fastest ms of the floor + ORT's 1,000-row parts, alternated, in-process."""
    sessions = {threads: session(onnx_path, threads) for threads in sorted({1, batch_threads})}
    _, large = pre_parsed(sessions[1], rows_path)
    outputs = sessions[1].run(None, large)
    parts: dict[str, Callable[[], object]] = {
        f"session.run, {threads} thread(s)": lambda s=s: s.run(None, large)
        for threads, s in sessions.items()
    }
    parts["encoding the answer"] = lambda: answer(outputs)
    timings: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(PARTS_REPEATS):
        for name, part in parts.items():
            started = time.perf_counter()
            part()
            timings[name].append((time.perf_counter() - started) * 1000)
    rows = len(next(iter(large.values())))
    for name, values in timings.items():
        print(
            f"{rows} rows, {name:28s} median {statistics.median(values):6.3f} ms, "
            f"fastest {min(values):6.3f} ms"
        )


def floor_app(run_model: Any | None) -> Starlette:
    async def invocations(request: Request) -> Response:
        body = await request.body()
        content = FIXED_ANSWER if run_model is None else run_model(len(body))
        return Response(content, media_type="application/json")

    return Starlette(routes=[Route("/invocations", invocations, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--onnx", type=Path, help="also run this model on pre-parsed rows")
    parser.add_argument("--rows", type=Path, help="dataframe_split JSON of the rows (--onnx)")
    parser.add_argument(
        "--batch-threads", type=int, default=1, help="intra-op threads for many rows (--onnx)"
    )
    parser.add_argument("--parts", action="store_true", help="print the 1,000-row parts")
    args = parser.parse_args()
    if (args.onnx or args.parts) and not (args.rows and args.onnx):
        parser.error("--onnx and --parts need --onnx and --rows")
    if args.parts:
        print_parts(args.onnx, args.rows, args.batch_threads)
        sys.exit(0)
    if args.port is None:
        parser.error("--port is required to serve")
    run_model = model_runner(args.onnx, args.rows, args.batch_threads) if args.onnx else None
    uvicorn.run(
        floor_app(run_model),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        proxy_headers=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
