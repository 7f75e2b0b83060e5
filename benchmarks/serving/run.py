"""Serving benchmark: our ONNX server against its peers and its floor, same model, same run.

    .venv/bin/python benchmarks/serving/run.py [--repeats 3] [--duration 15] [--connections 8]
        [--only NAME ...] [--json out.json]

In one run: fit the spec's HistGradientBoosting pipeline on bank data; log it to a
throwaway MLflow store (skops, explicit trusted types, signature: the platform's registry);
export a bundle from the same fitted pipeline; hand the same fitted pipeline (without the
platform's input preparation) to MLServer 1.7 and BentoML 1.4, each in its own venv
(`peers.py`), each with its default settings and with one thread (OMP_NUM_THREADS=1 ...).
Two floor servers (`floor.py`) bound what our stack can do: starlette + uvicorn answering a
fixed JSON, and the same plus `onnxruntime` on a pre-parsed row.

The servers are measured one after the other, in a rotated order on each repeat: start
(time to the first 200 on a one-row request), 2 s of wrk warm-up, the median of 31
1,000-row requests on one kept-alive `http.client` connection (with the client's own CPU
time per request, part of that figure), RSS of the process tree, then `wrk -t2
-c<connections> --latency` on one-row POSTs with the CPU time of the process tree over
that run. A server that cannot be installed or started keeps its row, with the reason.
Prints each run, the medians, and the ratios: ours against each peer at its best setting,
ours as a share of each floor.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

import peers  # noqa: E402
from measure import Call, Measurement, Server, measure  # noqa: E402

from ct_platform.data.contract import check_contract  # noqa: E402
from ct_platform.serving.config import DEFAULT_BATCH_THREADS  # noqa: E402
from ct_platform.settings import Spec, load_spec  # noqa: E402
from ct_platform.training.bundling import build_bundle  # noqa: E402
from ct_platform.training.fit import fit_pipeline  # noqa: E402
from ct_platform.training.preparation import raw_like, without_preparation  # noqa: E402

VENV_BIN = Path(sys.executable).parent
TRAIN_ROWS, HOLDOUT_ROWS, BATCH_ROWS = 10_000, 2_000, 1_000
OURS, MLFLOW = "ct-platform (ONNX)", "mlflow models serve"
MLSERVER, BENTOML = "MLServer 1.7", "BentoML 1.4"
PEER_SETTINGS = ("defaults", "1 thread")
FLOOR, FLOOR_ORT = "floor: starlette+uvicorn", "floor + ORT session.run"


@dataclass
class Row:
    """A server's runs: a Measurement, or the reason it failed, per repeat."""

    server: Server
    runs: list[Measurement | str] = field(default_factory=list)

    @property
    def measured(self) -> list[Measurement]:
        return [run for run in self.runs if isinstance(run, Measurement)]

    def median(self, figure: str) -> float | None:
        values = [getattr(run, figure) for run in self.measured]
        return statistics.median(values) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all servers")
    parser.add_argument("--duration", type=int, default=15, help="wrk seconds per server")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--only", nargs="*", help="servers whose name contains one of these")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument(
        "--batch-threads",
        type=int,
        default=DEFAULT_BATCH_THREADS,
        help="intra-op threads for 1,000 rows: ours (--batch-threads) and floor + ORT alike",
    )
    args = parser.parse_args()

    spec = load_spec(REPO / "ct_platform.yaml")
    with tempfile.TemporaryDirectory(prefix="ct-serving-bench-") as folder:
        work = Path(folder)
        wanted = lambda name: selected(name, args.only)  # noqa: E731
        rows, unavailable = prepare(spec, work, wanted, args.batch_threads)
        rows = [row for row in rows if selected(row.server.name, args.only)]
        try:
            run_rounds(rows, work, args.repeats, args.duration, args.connections)
        except KeyboardInterrupt:  # a cut run still reports what it measured
            print("interrupted: the report covers the runs done so far", file=sys.stderr)
    report(rows, unavailable)
    if args.json:
        args.json.write_text(json.dumps(as_json(rows, unavailable), indent=2))
    return 0


def selected(name: str, only: list[str] | None) -> bool:
    return not only or any(part in name for part in only)


def prepare(
    spec: Spec, work: Path, wanted: Callable[[str], bool], batch_threads: int
) -> tuple[list[Row], dict[str, str]]:
    """Fit, log, bundle; the servers to measure, and the peers that could not be set up.

    MLflow logging and the peers' set-up are skipped when `wanted` excludes all their rows.
    """
    train, holdout = bank_frames(spec)
    pipeline = fit_pipeline(train, spec)
    mlflow_model = log_to_mlflow(pipeline, train, work) if wanted(MLFLOW) else None
    bundle = build_bundle(
        pipeline, spec, name="bank_marketing", version=1, fingerprint="bench", holdout=holdout,
        directory=work / "bundle",
    )  # fmt: skip
    features = holdout[spec.dataset.feature_columns].iloc[:BATCH_ROWS]
    model_joblib = work / "model.joblib"
    import joblib  # the peers' native format; only inside this throwaway folder

    joblib.dump(without_preparation(pipeline), model_joblib)
    # The floor + ORT server's pre-parsed rows: prepared values, as the ONNX graph takes them.
    (work / "rows.json").write_bytes(orjson.dumps(split_payload(features)))

    servers = own_servers(raw_like(features, pipeline), mlflow_model, bundle, work, batch_threads)
    unavailable: dict[str, str] = {}
    for family, build in ((MLSERVER, mlserver_servers), (BENTOML, bentoml_servers)):
        if not any(wanted(f"{family} ({setting})") for setting in PEER_SETTINGS):
            continue
        try:
            servers += build(features, model_joblib, work)
        except peers.PeerUnavailable as error:
            print(f"{family}: not measured: {error}", file=sys.stderr)
            unavailable[family] = str(error)
    return [Row(server) for server in servers], unavailable


def own_servers(
    raw: pd.DataFrame, mlflow_model: str | None, bundle: Path, work: Path, batch_threads: int
) -> list[Server]:
    """Ours, `mlflow models serve` (if logged) and the floors; `raw` is the MLflow input.

    The floors answer without parsing: they get the same bodies as our server. Ours and
    the floor + ORT score 1,000 rows with the same `batch_threads` intra-op threads.
    """
    threads = ["--batch-threads", str(batch_threads)]
    split = Call("/invocations", orjson.dumps(split_payload(raw.iloc[:1])))
    split_batch = Call("/invocations", orjson.dumps(split_payload(raw)))
    floor = [sys.executable, str(HERE / "floor.py"), "--port", "{http}"]
    # mlflow runs `uvicorn` from PATH: the venv's bin/ first.
    path = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    mlflow = [] if mlflow_model is None else [
        Server(
            MLFLOW, "peer", f"{MLFLOW} 3.17",
            [str(VENV_BIN / "mlflow"), "models", "serve", "-m", mlflow_model, "--env-manager",
             "local", "--host", "127.0.0.1", "--port", "{http}"],
            split, split_batch, env=path,
        ),
    ]  # fmt: skip
    return [
        Server(
            OURS, "ours", OURS,
            [sys.executable, "-m", "ct_platform.serving", "--bundle", str(bundle), "--port",
             "{http}", *threads],
            split, split_batch, env={"CT_HOME": str(work / "ct_home")}, cwd=REPO,
        ),
        *mlflow,
        Server(FLOOR, "floor", FLOOR, floor, split, split_batch),
        Server(
            FLOOR_ORT, "floor", FLOOR_ORT,
            [*floor, "--onnx", str(bundle / "model.onnx"), "--rows", str(work / "rows.json"),
             *threads],
            split, split_batch,
        ),
    ]  # fmt: skip


def mlserver_servers(features: pd.DataFrame, model_joblib: Path, work: Path) -> list[Server]:
    env = peers.peer_env("mlserver-1.7", peers.MLSERVER_REQUIREMENTS)
    folder = peers.mlserver_folder(model_joblib, work)
    path = f"/v2/models/{peers.MODEL_NAME}/infer"
    row, batch = (Call(path, orjson.dumps(v2_payload(f))) for f in (features.iloc[:1], features))
    ports = {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": "{http}",
        "MLSERVER_GRPC_PORT": "{grpc}",
        "MLSERVER_METRICS_PORT": "{metrics}",
    }
    command = [str(env.bin / "mlserver"), "start", str(folder)]
    return peer_settings(MLSERVER, command, row, batch, ports, None)


def bentoml_servers(features: pd.DataFrame, model_joblib: Path, work: Path) -> list[Server]:
    env = peers.peer_env("bentoml-1.4", peers.BENTOML_REQUIREMENTS)
    home = peers.bentoml_home(env, model_joblib, work)
    records = orjson.loads(features.to_json(orient="records"))
    row = Call("/predict", orjson.dumps({"rows": records[:1]}))
    batch = Call("/predict", orjson.dumps({"rows": records}))
    command = [
        str(env.bin / "bentoml"), "serve", "bento_service:BankMarketing", "--host", "127.0.0.1",
        "--port", "{http}",
    ]  # fmt: skip
    settings = {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    return peer_settings(BENTOML, command, row, batch, settings, work)


def peer_settings(
    family: str, command: list[str], row: Call, batch: Call, env: dict[str, str], cwd: Path | None
) -> list[Server]:
    """The peer with its defaults, and with one thread for every pool a call may start."""
    defaults, one_thread = PEER_SETTINGS
    return [
        Server(f"{family} ({defaults})", "peer", family, command, row, batch, env, cwd),
        Server(
            f"{family} ({one_thread})",
            "peer",
            family,
            command,
            row,
            batch,
            {**env, **peers.ONE_THREAD},
            cwd,
        ),
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


def split_payload(features: pd.DataFrame) -> dict:
    """MLflow's `dataframe_split` (missing values as null), which our server also takes.

    The peers get the prepared features (missing pdays as null), the model's input without
    the platform's preparation step; ours and MLflow get them as raw data looks (pdays 999).
    """
    return {"dataframe_split": orjson.loads(features.to_json(orient="split", index=False))}


def v2_payload(features: pd.DataFrame) -> dict:
    """An Open Inference Protocol (V2) request, one input per column, decoded as a DataFrame."""
    inputs = []
    for name in features.columns:
        column = features[name]
        numeric = pd.api.types.is_numeric_dtype(column)
        tensor = {
            "name": name,
            "shape": [len(column)],
            "datatype": "FP64" if numeric else "BYTES",
            "data": orjson.loads(column.to_json(orient="values")),
        }
        if not numeric:
            tensor["parameters"] = {"content_type": "str"}
        inputs.append(tensor)
    return {
        "parameters": {"content_type": "pd"},
        "inputs": inputs,
        "outputs": [{"name": "predict_proba"}],
    }


def wrk_script(call: Call) -> str:
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(call.body.decode())}\n"
    )


def run_rounds(rows: list[Row], work: Path, repeats: int, duration: int, connections: int) -> None:
    """Measure every server once per round; each round starts one server later."""
    for position, row in enumerate(rows):
        (work / f"post-{position}.lua").write_text(wrk_script(row.server.row))
    for round_index in range(repeats):
        shift = round_index % len(rows)
        order = list(enumerate(rows))[shift:] + list(enumerate(rows))[:shift]
        for position, row in order:
            name = row.server.name
            print(f"round {round_index + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
            log = work / f"server-{position}-{round_index}.log"
            try:
                result = measure(
                    row.server, work / f"post-{position}.lua", log, duration, connections
                )
                print(f"  {describe(result)}", file=sys.stderr, flush=True)
            except Exception as error:  # any failure keeps the row, with its reason
                result = f"failed: {type(error).__name__}: {error}"
                print(f"  {name}: {result}", file=sys.stderr, flush=True)
            row.runs.append(result)


def describe(m: Measurement) -> str:
    return (
        f"{number(m.requests_per_s)} req/s, p50 {number(m.p50_ms)} ms, "
        f"p99 {number(m.p99_ms)} ms, 1,000 rows {number(m.batch_1000_ms)} ms "
        f"(client {number(m.batch_client_ms)} ms), "
        f"RSS {number(m.rss_mb)} MB, start {number(m.start_s)} s, "
        f"CPU {number(m.cpu_us_per_request)} µs/request"
    )


def number(value: float) -> str:
    """Three significant figures or more: 3,602 / 56.4 / 0.79."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


COLUMNS = (
    ("req/s", "requests_per_s"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("1k rows ms", "batch_1000_ms"),
    ("client ms", "batch_client_ms"),
    ("RSS MB", "rss_mb"),
    ("start s", "start_s"),
    ("CPU µs/req", "cpu_us_per_request"),
)


def report(rows: list[Row], unavailable: dict[str, str]) -> None:
    print("\nEach run:")
    for row in rows:
        for index, run in enumerate(row.runs, 1):
            text = describe(run) if isinstance(run, Measurement) else run
            print(f"  {row.server.name} #{index}: {text}")
    print(f"\nMedians over the runs that answered (ok/runs):\n{'server':<28}", end="")
    print("".join(f"{title:>12}" for title, _ in COLUMNS) + f"{'ok':>6}")
    for row in rows:
        cells = [row.median(figure) for _, figure in COLUMNS]
        text = "".join(f"{'-' if v is None else number(v):>12}" for v in cells)
        print(f"{row.server.name:<28}{text}{f'{len(row.measured)}/{len(row.runs)}':>6}")
    for family, reason in unavailable.items():
        print(f"{family:<28}not measured: {reason}")
    for row in rows:
        if not row.measured and row.runs:
            print(f"{row.server.name}: no run answered; the first {row.runs[0]}")
    print_ratios(rows)


def print_ratios(rows: list[Row]) -> None:
    ours = next((r for r in rows if r.server.kind == "ours" and r.measured), None)
    if ours is None:
        print("\nno ratios: our server has no measured run")
        return
    print("\nOurs against each peer at its best setting (highest median req/s):")
    for family in dict.fromkeys(r.server.family for r in rows if r.server.kind == "peer"):
        settings = [r for r in rows if r.server.family == family and r.measured]
        if not settings:
            print(f"  {family}: no measured setting")
            continue
        best = max(settings, key=lambda r: r.median("requests_per_s"))
        print(
            f"  vs {best.server.name}: throughput x{ratio(ours, best, 'requests_per_s'):.1f}, "
            f"p50 /{ratio(best, ours, 'p50_ms'):.1f}, p99 /{ratio(best, ours, 'p99_ms'):.1f}, "
            f"1,000 rows /{ratio(best, ours, 'batch_1000_ms'):.1f}, "
            f"CPU per request /{ratio(best, ours, 'cpu_us_per_request'):.1f}"
        )
    print("Ours as a share of each floor (per core: floor CPU per request / ours):")
    for floor in (r for r in rows if r.server.kind == "floor" and r.measured):
        print(
            f"  {floor.server.name}: {100 * ratio(ours, floor, 'requests_per_s'):.0f} % of req/s, "
            f"{100 * ratio(floor, ours, 'cpu_us_per_request'):.0f} % per core, "
            f"1,000 rows {100 * ratio(floor, ours, 'batch_1000_ms'):.0f} % of its speed"
        )


def ratio(a: Row, b: Row, figure: str) -> float:
    return a.median(figure) / b.median(figure)


def as_json(rows: list[Row], unavailable: dict[str, str]) -> dict:
    return {
        "servers": {
            r.server.name: [asdict(x) if isinstance(x, Measurement) else x for x in r.runs]
            for r in rows
        },
        "unavailable": unavailable,
    }


if __name__ == "__main__":
    sys.exit(main())
