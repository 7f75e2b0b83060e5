"""Serving benchmark: our ONNX server vs `mlflow models serve`, same model, same machine.

    .venv/bin/python benchmarks/serving/run.py [--duration 15] [--connections 8]

In one run: fit the spec's HistGradientBoosting pipeline on bank data, log it to a
throwaway MLflow store (skops, explicit trusted types, signature: the platform's registry),
export a bundle from the same fitted pipeline, start both servers, then measure each with
`wrk` (single-row JSON POSTs, `-t2 -c<connections>`, `--latency`) and with one 1,000-row
request (median of several). Prints a table and the ratios; `--json` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import orjson
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ct_platform.data.contract import check_contract  # noqa: E402
from ct_platform.settings import Spec, load_spec  # noqa: E402
from ct_platform.training.bundling import build_bundle  # noqa: E402
from ct_platform.training.fit import fit_pipeline  # noqa: E402

VENV_BIN = Path(sys.executable).parent
TRAIN_ROWS, HOLDOUT_ROWS, BATCH_ROWS = 10_000, 2_000, 1_000
START_TIMEOUT = 180.0


@dataclass
class Result:
    server: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    batch_1000_ms: float


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="wrk seconds per server")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    spec = load_spec(REPO / "ct_platform.yaml")
    with tempfile.TemporaryDirectory(prefix="ct-serving-bench-") as folder:
        results = run(spec, Path(folder), args.duration, args.connections)
    report(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


def run(spec: Spec, work: Path, duration: int, connections: int) -> list[Result]:
    train, holdout = bank_frames(spec)
    pipeline = fit_pipeline(train, spec)
    mlflow_model = log_to_mlflow(pipeline, train, work)
    bundle = build_bundle(
        pipeline, spec, name="bank_marketing", version=1, fingerprint="bench", holdout=holdout,
        directory=work / "bundle",
    )  # fmt: skip
    row_body = orjson.dumps(split_payload(holdout, spec, 1))
    batch_body = orjson.dumps(split_payload(holdout, spec, BATCH_ROWS))
    lua = work / "post.lua"
    lua.write_text(wrk_script(row_body))

    servers = {
        "ct-platform (ONNX)": [
            sys.executable, "-m", "ct_platform.serving", "--bundle", str(bundle),
            "--host", "127.0.0.1",
        ],
        "mlflow models serve": [
            str(VENV_BIN / "mlflow"), "models", "serve", "-m", mlflow_model,
            "--env-manager", "local", "--host", "127.0.0.1",
        ],
    }  # fmt: skip
    env = {
        **os.environ,
        "CT_HOME": str(work / "ct_home"),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # mlflow runs `uvicorn`
    }
    return [
        measure(name, command, env, lua, batch_body, duration, connections)
        for name, command in servers.items()
    ]


def bank_frames(spec: Spec) -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = pd.read_csv(REPO / "data" / "bank_marketing.csv.gz", sep=spec.dataset.separator)
    clean = check_contract(raw.iloc[: TRAIN_ROWS + HOLDOUT_ROWS], spec.dataset).clean
    return clean.iloc[:TRAIN_ROWS], clean.iloc[TRAIN_ROWS:].reset_index(drop=True)


def log_to_mlflow(pipeline: object, train: pd.DataFrame, work: Path) -> str:
    """Log with the platform's registry; return the model's location for `mlflow serve`."""
    from mlflow import MlflowClient

    from ct_platform.registry.mlflow_registry import ModelRegistry

    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    registry = ModelRegistry(tracking_uri, model_name="bank_marketing", experiment="bench")
    info = registry.log_candidate(
        pipeline, train=train, params={}, metrics={}, fingerprint="bench", dagster_run_id=None
    )
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    # A file:// URI of the version's own folder (no registry lookup needed by the server).
    return client.get_model_version_download_uri(info.name, str(info.version))


def split_payload(frame: pd.DataFrame, spec: Spec, n_rows: int) -> dict:
    features = frame[spec.dataset.feature_columns].iloc[:n_rows]
    return {"dataframe_split": orjson.loads(features.to_json(orient="split", index=False))}


def wrk_script(body: bytes) -> str:
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
    )


def measure(
    name: str,
    command: list[str],
    env: dict[str, str],
    lua: Path,
    batch_body: bytes,
    duration: int,
    connections: int,
) -> Result:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"starting {name} on {url}", file=sys.stderr)
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"{url}/ping", process)
        batch_ms = batch_latency_ms(url, batch_body)
        wrk = subprocess.run(
            [
                "wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(lua),
                f"{url}/invocations",
            ],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=30)
    requests_per_s, p50_ms, p99_ms = parse_wrk(wrk.stdout)
    if "Non-2xx" in wrk.stdout or "Socket errors" in wrk.stdout:
        print(f"{name}: wrk saw errors:\n{wrk.stdout}", file=sys.stderr)
    return Result(name, requests_per_s, p50_ms, p99_ms, batch_ms)


def batch_latency_ms(url: str, body: bytes, repeats: int = 7) -> float:
    """Median wall time of one 1,000-row request (after one warm-up request)."""
    headers = {"content-type": "application/json"}
    timings = []
    with httpx.Client(timeout=120) as client:
        for attempt in range(repeats + 1):
            started = time.perf_counter()
            response = client.post(f"{url}/invocations", content=body, headers=headers)
            response.raise_for_status()
            if attempt:
                timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> tuple[float, float, float]:
    requests_per_s = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))

    def percentile(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()
        return float(value) * _UNITS_MS[unit]

    return requests_per_s, percentile("50%"), percentile("99%")


def report(results: list[Result]) -> None:
    ours, theirs = results
    print(f"\n{'server':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'1000 rows ms':>15}")
    for r in results:
        print(
            f"{r.server:<22}{r.requests_per_s:>10.0f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}"
            f"{r.batch_1000_ms:>15.1f}"
        )
    throughput = ours.requests_per_s / theirs.requests_per_s
    print(
        f"\nratios (ct-platform vs MLflow): throughput x{throughput:.1f}, "
        f"p50 /{theirs.p50_ms / ours.p50_ms:.1f}, p99 /{theirs.p99_ms / ours.p99_ms:.1f}, "
        f"1000-row request /{theirs.batch_1000_ms / ours.batch_1000_ms:.1f}"
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up within {START_TIMEOUT} s")


if __name__ == "__main__":
    sys.exit(main())
