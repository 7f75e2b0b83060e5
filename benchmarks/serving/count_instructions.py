"""Instructions per single-row request, counted by callgrind: ours against the floor + ORT.

    .venv/bin/python benchmarks/serving/count_instructions.py [--work DIR] [--parts]
        [--targets NAME ...] [--requests 1000 3000] [--jobs 1] [--json out.json]

Wall and CPU time on this shared box move by ±20 % with the load; the instructions a request
executes do not. Each target runs in a process of its own under `valgrind --tool=callgrind`
(`PYTHONHASHSEED=0`), driven in-process through its ASGI app by `profile_hot_path.asgi_loop`
(no sockets, no uvicorn: their cost is the same for every target): 300 warm-up requests,
then N single-row `POST /invocations`. Per request = (total(N2) - total(N1)) / (N2 - N1),
which cancels start-up, imports and model loading. Counted: user-space instructions of
every thread of the process (the prediction-log writer included), not the kernel's.

Targets:
- `ct-platform`: `create_app` on the bundle, as `python -m ct_platform.serving` builds it
  (the prediction-log writer running, `gc.collect(); gc.freeze()` after loading, the log
  closed, so written, before the count ends), the single-row `dataframe_split` body;
- `ct-platform, routing key`: the same requests with an `X-Routing-Key` (the canary's
  clients send one), which adds the per-key `ClientStats`;
- `floor` and `floor + ORT`: `floor.py`'s Starlette app answering a fixed JSON, without and
  with `session.run` on the one row parsed at start-up (what `run.py` measures over HTTP).

`--parts`: `ct-platform, routing key` with one part at a time made a no-op; the difference
to the whole app is that part's cost inside the app (caches and all).

Prints instructions per request, ours above the floor + ORT, and the floor + ORT's count as
a share of ours (the in-process counterpart of `run.py`'s "per core" share; uvicorn's HTTP
work and the kernel's socket work, which both pay, are not in it).
`--work DIR`: bundle and bodies kept there and reused (made by fitting the bank model as
`run.py` does when DIR has none).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

OURS, OURS_KEYED = "ct-platform", "ct-platform, routing key"
FLOOR, FLOOR_ORT = "floor", "floor + ORT"
TARGETS = (OURS, OURS_KEYED, FLOOR, FLOOR_ORT)
ROUTING_KEY = (b"x-routing-key", b"client-0042")
WARM_UP = 300
# --parts: part -> (object of the app's `Server`, its methods made no-ops; those it has).
PARTS: dict[str, tuple[Callable[[Any], object], tuple[str, ...]]] = {
    "Server._record": (lambda server: server, ("_record",)),
    "Metrics.prediction": (lambda server: server.metrics, ("prediction",)),
    "SlotStats.scored": (lambda server: server.slot_stats, ("scored",)),
    "ClientStats": (lambda server: server.slot_stats.clients, ("scored", "add_scored")),
    "PredictionLog.submit": (lambda server: server.prediction_log, ("submit",)),
}


def _nothing(*args: object) -> None:
    return None


def silence(server: Any, part: str) -> None:
    owner_of, methods = PARTS[part]
    owner = owner_of(server)
    for method in methods:
        if hasattr(owner, method):
            setattr(owner, method, _nothing)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the bundle and bodies here (reused)")
    parser.add_argument("--targets", nargs="*", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--parts", action="store_true", help="also each part of `_record`")
    parser.add_argument("--requests", nargs=2, type=int, default=[1000, 3000])
    parser.add_argument("--jobs", type=int, default=1, help="callgrind processes at once")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--repo",
        type=Path,
        default=REPO,
        help="checkout whose server is counted (another one: for a before/after)",
    )
    parser.add_argument("--child", nargs=2, metavar=("TARGET", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="ct-callgrind-") as folder:
            return count(args, Path(folder))
    args.work.mkdir(parents=True, exist_ok=True)
    return count(args, args.work)


def count(args: argparse.Namespace, work: Path) -> int:
    if args.child:
        target, n = args.child
        sys.path.insert(0, str(args.repo.resolve()))
        run_child(target, int(n), work)
        return 0
    if not (work / "bundle").is_dir():
        prepare(work)
    runs = [(target, None) for target in args.targets]
    if args.parts:
        runs += [(OURS_KEYED, part) for part in PARTS]
    low, high = args.requests
    jobs = [(target, part, n) for target, part in runs for n in (low, high)]
    with ThreadPoolExecutor(args.jobs) as pool:
        totals = dict(
            zip(jobs, pool.map(lambda job: callgrind(work, args.repo, *job), jobs), strict=True)
        )
    per_request = {
        (target, part): (totals[target, part, high] - totals[target, part, low]) / (high - low)
        for target, part in runs
    }
    report(per_request, args.requests)
    if args.json:
        figures = {f"{t} without {p}" if p else t: v for (t, p), v in per_request.items()}
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def prepare(work: Path) -> None:
    """Fit and bundle the bank model as `run.py` does; write the one-row bodies."""
    import orjson
    import run

    from ct_platform.settings import load_spec
    from ct_platform.training.bundling import build_bundle
    from ct_platform.training.fit import fit_pipeline
    from ct_platform.training.preparation import raw_like

    spec = load_spec(REPO / "ct_platform.yaml")
    train, holdout = run.bank_frames(spec)
    pipeline = fit_pipeline(train, spec)
    build_bundle(
        pipeline, spec, name="bank_marketing", version=1, fingerprint="bench", holdout=holdout,
        directory=work / "bundle",
    )  # fmt: skip
    features = holdout[spec.dataset.feature_columns].iloc[:1]
    # Ours gets the row as raw data looks; the floor + ORT its prepared values, pre-parsed.
    (work / "row.json").write_bytes(orjson.dumps(run.split_payload(raw_like(features, pipeline))))
    (work / "rows.json").write_bytes(orjson.dumps(run.split_payload(features)))


def callgrind(work: Path, repo: Path, target: str, part: str | None, n: int) -> int:
    """Instructions of one child process (all its threads) under callgrind."""
    name = f"{repo.name}-{target}-{part or 'all'}-{n}".replace(" ", "_").replace(",", "")
    out = work / f"callgrind.{name}.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--work",
        str(work),
        "--repo",
        str(repo),
        "--child",
        target if part is None else f"{target}|{part}",
        str(n),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    log = work / f"callgrind.{name}.log"
    with log.open("w") as stream:
        subprocess.run(command, check=True, env=env, stdout=stream, stderr=subprocess.STDOUT)
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out} (see {log})")


def run_child(target: str, n: int, work: Path) -> None:
    """Warm up, then `n` single-row requests through `target`'s ASGI app (under callgrind)."""
    from profile_hot_path import asgi_loop

    target, _, part = target.partition("|")
    body = (work / "row.json").read_bytes()
    close = _nothing
    headers = [ROUTING_KEY] if target == OURS_KEYED else []
    if target in (OURS, OURS_KEYED):
        from ct_platform.serving.app import create_app
        from ct_platform.serving.config import ServerConfig

        home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
        app = create_app(ServerConfig(bundle=work / "bundle", home=home))
        server = app._invocations.__self__  # the `Server` whose bound method it is
        if part:
            silence(server, part)
        server.prediction_log.start()  # what the lifespan does under uvicorn
        close = server.prediction_log.close
    else:
        import floor

        model = floor.model_runner(work / "bundle" / "model.onnx", work / "rows.json")
        app = floor.floor_app(model if target == FLOOR_ORT else None)
    gc.collect()  # as `run_server` does after loading
    gc.freeze()
    run = asgi_loop(app, body, headers)
    run(WARM_UP)
    run(n)
    close()  # the log lines written: the writer's work counts too


def report(per_request: dict[tuple[str, str | None], float], requests: list[int]) -> None:
    low, high = requests
    print(f"Instructions per single-row request ((total({high}) - total({low})) / {high - low}):")
    for (target, part), figure in per_request.items():
        if part is None:
            print(f"  {target:38s} {figure:12,.0f}")
    floor_ort, ours = per_request.get((FLOOR_ORT, None)), per_request.get((OURS, None))
    if floor_ort and ours:
        print(
            f"ct-platform above floor + ORT: {ours - floor_ort:,.0f} instructions per request; "
            f"floor + ORT is {100 * floor_ort / ours:.0f} % of ct-platform's count"
        )
    keyed = per_request.get((OURS_KEYED, None))
    parts = [(p, keyed - figure) for (t, p), figure in per_request.items() if p and keyed]
    if parts:
        print("Parts of `ct-platform, routing key` (whole app minus the app with it a no-op):")
        for part, figure in parts:
            print(f"  {part:38s} {figure:12,.0f}  ({100 * figure / keyed:.1f} %)")


if __name__ == "__main__":
    sys.exit(main())
