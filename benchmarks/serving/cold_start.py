"""Cold start: process start to the first 200 on a scoring request, and RSS at that moment.

    .venv/bin/python benchmarks/serving/cold_start.py [--bundle DIR] [--runs 5]

Two servers on the same ONNX bundle, started alternately `--runs` times each:

- ct-platform: `python -m ct_platform.serving --bundle DIR` (manifest check, schema, slots,
  prediction log, every route);
- floor: Starlette + uvicorn (uvloop, httptools) + onnxruntime loading the same `model.onnx`,
  answering `POST /invocations` with `session.run` on one pre-parsed row: the least a Python
  ONNX server does before it can answer.

The clock starts just before the process is spawned and stops at the first 200 answer to a
single-row `POST /invocations` (polled every 10 ms); RSS is read from /proc at that moment.
Prints the median of each, and our figure over the floor's. Without `--bundle` a bundle is
built first (the spec's pipeline fitted on 10,000 bank rows, about a minute).
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAIN_ROWS, HOLDOUT_ROWS = 10_000, 2_000
START_TIMEOUT_S = 300.0

FLOOR_SERVER = """
import sys
import numpy as np
import onnxruntime as ort
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
feeds = {
    graph_input.name: (
        np.zeros((1, 1), dtype=np.float32)
        if graph_input.type == "tensor(float)"
        else np.array([[""]], dtype=object)
    )
    for graph_input in session.get_inputs()
}

async def invocations(request):
    await request.body()
    label = session.run(None, feeds)[0]
    return Response(b'{"predictions": [%d]}' % int(label[0]), media_type="application/json")

app = Starlette(routes=[Route("/invocations", invocations, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), loop="uvloop", http="httptools",
            access_log=False, log_level="warning")
"""


@dataclass
class Start:
    seconds: float
    rss_mb: float


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="an ONNX bundle (built when omitted)")
    parser.add_argument("--runs", type=int, default=5, help="starts per server, alternated")
    parser.add_argument(
        "--baseline-repo",
        type=Path,
        help="also start the server of another checkout (e.g. main) for a before/after",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ct-cold-start-") as folder:
        work = Path(folder)
        bundle = args.bundle or build_bench_bundle(work / "bundle")
        row = single_row_body(bundle)
        floor_script = work / "floor_server.py"
        floor_script.write_text(FLOOR_SERVER)
        ours = [sys.executable, "-m", "ct_platform.serving", "--bundle", str(bundle)]
        floor = [sys.executable, str(floor_script), str(bundle / "model.onnx")]
        # name -> (command without the port, working directory: `-m` imports from there)
        commands = {
            "ct-platform": ([*ours, "--port"], REPO),
            "floor (starlette+uvicorn+ORT)": (floor, REPO),
        }
        if args.baseline_repo:
            commands[f"ct-platform @ {args.baseline_repo}"] = (
                [*ours, "--port"],
                args.baseline_repo,
            )
        starts: dict[str, list[Start]] = {name: [] for name in commands}
        for run in range(args.runs):
            for name, (command, cwd) in commands.items():
                start = cold_start(command, cwd, row, work / f"home-{run}")
                starts[name].append(start)
                print(f"run {run + 1}: {name}: {start.seconds:.2f} s, {start.rss_mb:.0f} MB")
    report(starts)
    return 0


def build_bench_bundle(directory: Path) -> Path:
    sys.path.insert(0, str(REPO))
    import pandas as pd

    from ct_platform.data.contract import check_contract
    from ct_platform.settings import load_spec
    from ct_platform.training.bundling import build_bundle
    from ct_platform.training.fit import fit_pipeline

    spec = load_spec(REPO / "ct_platform.yaml")
    frame = pd.read_csv(REPO / "data" / "bank_marketing.csv.gz", sep=spec.dataset.separator)
    frame = frame.iloc[: TRAIN_ROWS + HOLDOUT_ROWS]
    clean = check_contract(frame, spec.dataset).clean
    pipeline = fit_pipeline(clean.iloc[:TRAIN_ROWS], spec)
    holdout = clean.iloc[TRAIN_ROWS:].reset_index(drop=True)
    return build_bundle(
        pipeline, spec, name="bank_marketing", version=1, fingerprint="cold-start",
        holdout=holdout, directory=directory,
    )  # fmt: skip


def single_row_body(bundle: Path) -> bytes:
    """One valid row for the bundle's schema: the first category; for a number, the
    contract's min (the server refuses values outside it with a 422), else 1."""
    import json

    columns = json.loads((bundle / "bundle.json").read_text())["columns"]
    values = [
        (c["categories"] or ["x"])[0] if c["type"] == "category" else _number_in_contract(c)
        for c in columns
    ]
    split = {"columns": [c["name"] for c in columns], "data": [values]}
    return json.dumps({"dataframe_split": split}).encode()


def _number_in_contract(column: dict) -> float:
    return 1 if column.get("min") is None else column["min"]


def cold_start(command: list[str], cwd: Path, row: bytes, home: Path) -> Start:
    """Start `command` + a free port in `cwd`; time to the first 200 and RSS then."""
    port = free_port()
    command = [*command, str(port)]
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, "CT_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while not answers_200(port, row):
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited: {process.stderr.read()[-2000:]!r}")
            if time.perf_counter() - started > START_TIMEOUT_S:
                raise TimeoutError(f"no 200 within {START_TIMEOUT_S} s")
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        return Start(seconds=seconds, rss_mb=rss_mb(process.pid))
    finally:
        process.terminate()
        process.wait(timeout=30)


def answers_200(port: int, body: bytes) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(
            "POST", "/invocations", body=body, headers={"Content-Type": "application/json"}
        )
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def report(starts: dict[str, list[Start]]) -> None:
    medians = {
        name: (
            statistics.median(s.seconds for s in runs),
            statistics.median(s.rss_mb for s in runs),
        )
        for name, runs in starts.items()
    }
    runs = len(next(iter(starts.values())))
    print(f"\n{'server':32s} {'first 200':>10s} {'RSS':>8s}   (median of {runs} starts)")
    for name, (seconds, rss) in medians.items():
        print(f"{name:32s} {seconds:9.2f}s {rss:6.0f}MB")
    floor_s, floor_mb = medians.pop("floor (starlette+uvicorn+ORT)")
    for name, (seconds, rss) in medians.items():
        print(f"{f'ratio {name} / floor':32s} {seconds / floor_s:9.2f}x {rss / floor_mb:6.2f}x")


if __name__ == "__main__":
    sys.exit(main())
