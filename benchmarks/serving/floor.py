"""The floor servers: the least our server's stack can do for a request.

    python benchmarks/serving/floor.py --port 8000
    python benchmarks/serving/floor.py --port 8000 --onnx model.onnx --rows rows.json

Starlette + uvicorn with the options our server uses (uvloop, httptools, access log off,
no proxy-header rewriting, log level warning), one route, `POST /invocations`, that reads
the body and answers a fixed JSON. With `--onnx`, it also runs `onnxruntime` `session.run`
(intra- and inter-op threads 1, as our server) on inputs parsed once at start-up from
`--rows` (`dataframe_split` JSON): the one-row inputs for a small body, the many-row inputs
for a body over `BATCH_BODY_BYTES`, so the 1,000-row figure also pays for the model.
Nothing is parsed or validated per request.
"""

from __future__ import annotations

import argparse
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


def model_runner(onnx_path: Path, rows_path: Path) -> Any:
    """A callable(body size) that scores the pre-parsed one-row or many-row inputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    payload = orjson.loads(rows_path.read_bytes())
    one_row = {"dataframe_split": {**payload["dataframe_split"]}}
    one_row["dataframe_split"]["data"] = payload["dataframe_split"]["data"][:1]
    small, large = onnx_inputs(session, one_row), onnx_inputs(session, payload)

    def run(body_bytes: int) -> None:
        session.run(None, large if body_bytes > BATCH_BODY_BYTES else small)

    return run


def floor_app(run_model: Any | None) -> Starlette:
    async def invocations(request: Request) -> Response:
        body = await request.body()
        if run_model is not None:
            run_model(len(body))
        return Response(FIXED_ANSWER, media_type="application/json")

    return Starlette(routes=[Route("/invocations", invocations, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--onnx", type=Path, help="also run this model on pre-parsed rows")
    parser.add_argument("--rows", type=Path, help="dataframe_split JSON of the rows (--onnx)")
    args = parser.parse_args()
    if args.onnx and not args.rows:
        parser.error("--onnx needs --rows")
    run_model = model_runner(args.onnx, args.rows) if args.onnx else None
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
