"""Instructions per single-row request, counted by callgrind: ours against the floor + ORT.

    .venv/bin/python benchmarks/serving/count_instructions.py [--work DIR] [--parts]
        [--targets NAME ...] [--requests 250 1250] [--repo CHECKOUT] [--json out.json]

Wall and CPU time on this shared box move by ±20 % with the load; the instructions a request
executes do not. One process runs under `valgrind --tool=callgrind` (`PYTHONHASHSEED=0`)
and drives each target in-process through its ASGI app with `profile_hot_path.asgi_loop`
(no sockets, no uvicorn: their cost is the same for every target): 300 warm-up requests,
then N1 and N2 single-row `POST /invocations`, each run between two markers at which
callgrind dumps its counts (`--dump-before=math_lgamma`). Per request = (count(N2) -
count(N1)) / (N2 - N1), which cancels what a run costs besides its requests; start-up,
imports and model loading fall before the first marker. Counted: user-space instructions
of every thread (the prediction-log writing included), not the kernel's.

Targets:
- `ct-platform`: `create_app` on the bundle, as `python -m ct_platform.serving` builds it
  (`gc.collect(); gc.freeze()` after loading), the single-row `dataframe_split` body. The
  prediction log is written at the end of each run, inside it (the writer thread, which
  would wake at times of its own, is kept asleep), so its cost lands where it belongs;
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
`run.py` does when DIR has none). `--repo`: count another checkout's server (before/after).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

OURS, OURS_KEYED = "ct-platform", "ct-platform, routing key"
FLOOR, FLOOR_ORT = "floor", "floor + ORT"
TARGETS = (OURS, OURS_KEYED, FLOOR, FLOOR_ORT)
ROUTING_KEY = (b"x-routing-key", b"client-0042")
WARM_UP = 300
# --parts: part -> (the object of the app's `Server` that has it, its methods made no-ops;
# those it has, so that a checkout from before or after a change counts alike).
# `Server._record` as a whole is no part since h/serve7: it returns the log record's batch,
# which the answer submits, so a no-op in its place would break the request.
PARTS: dict[str, tuple[Callable[[Any], object], tuple[str, ...]]] = {
    "Metrics.prediction": (lambda server: server.metrics, ("prediction",)),
    "SlotStats.scored": (lambda server: server.slot_stats, ("scored",)),
    "ClientStats": (lambda server: server.slot_stats.clients, ("scored", "add_scored")),
    "PredictionLog.submit": (lambda server: server.prediction_log, ("submit",)),
}
SEGMENT = "segment "


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the bundle and bodies here (reused)")
    parser.add_argument("--targets", nargs="*", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--parts", action="store_true", help="also each part of `_record`")
    parser.add_argument("--requests", nargs=2, type=int, default=[250, 1250])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose server is counted")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(args.repo.resolve()))
        run_child(args)
        return 0
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        return count(args, args.work)
    with tempfile.TemporaryDirectory(prefix="ct-callgrind-") as folder:
        return count(args, Path(folder))


def count(args: argparse.Namespace, work: Path) -> int:
    if not (work / "bundle").is_dir():
        prepare(work)
    segments = callgrind(args, work)
    low, high = args.requests
    per_request = {
        run: (segments[run, high] - segments[run, low]) / (high - low)
        for run in dict.fromkeys(run for run, _ in segments)
    }
    report(per_request, args.requests)
    if args.json:
        args.json.write_text(json.dumps(per_request, indent=2))
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


def callgrind(args: argparse.Namespace, work: Path) -> dict[tuple[str, int], int]:
    """Instructions of each (run, N) segment of one child process under callgrind."""
    out = work / f"callgrind.{args.repo.resolve().name}.out"
    for old in work.glob(f"{out.name}*"):
        old.unlink()
    command = [
        "valgrind", "--tool=callgrind", "--dump-before=math_lgamma",
        f"--callgrind-out-file={out}", sys.executable, __file__, "--child",
        "--work", str(work), "--repo", str(args.repo), "--targets", *args.targets,
        "--requests", *map(str, args.requests), *(["--parts"] if args.parts else []),
    ]  # fmt: skip
    child = subprocess.run(
        command,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise RuntimeError(f"the counted process failed:\n{child.stderr[-3000:]}")
    names = [line[len(SEGMENT) :] for line in child.stdout.splitlines() if line.startswith(SEGMENT)]
    segments = {}
    # Dump 1 is everything before the first marker; dump k + 1 the k-th segment.
    for number, name in enumerate(names, start=2):
        run, _, n = name.rpartition(" N=")
        segments[run, int(n)] = _total(Path(f"{out}.{number}"))
    return segments


def _total(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary line in {dump}")


def run_child(args: argparse.Namespace) -> None:
    """Warm up each target, then its N1 and N2 requests between markers (under callgrind)."""
    from profile_hot_path import asgi_loop

    work = args.work
    body = (work / "row.json").read_bytes()
    drivers: dict[str, Callable[[int], None]] = {}
    servers: dict[str, Any] = {}
    for target in args.targets:
        app, servers[target] = build(target, work)
        headers = [ROUTING_KEY] if target == OURS_KEYED else []
        drivers[target] = asgi_loop(app, body, headers)
    gc.collect()  # as `run_server` does after loading
    gc.freeze()
    runs = [(target, target, None) for target in args.targets]
    if args.parts and OURS_KEYED in drivers:
        runs += [(f"{OURS_KEYED} without {part}", OURS_KEYED, part) for part in PARTS]
    for target in args.targets:
        drivers[target](WARM_UP)
        written(servers[target])
    for name, target, part in runs:
        restore = silence(servers[target], part)
        for n in args.requests:
            math.lgamma(2.0)  # marker: callgrind dumps the counts so far
            drivers[target](n)
            written(servers[target])
            print(f"{SEGMENT}{name} N={n}", flush=True)
        restore()
    math.lgamma(2.0)
    for server in servers.values():
        if server is not None:
            server.prediction_log.close()


def build(target: str, work: Path) -> tuple[Any, Any]:
    """(ASGI app, its `Server` or None for a floor)."""
    if target in (OURS, OURS_KEYED):
        from ct_platform.serving.app import create_app
        from ct_platform.serving.config import ServerConfig

        home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
        app = create_app(ServerConfig(bundle=work / "bundle", home=home))
        server = app._invocations.__self__  # the `Server` whose bound method it is
        server.prediction_log.flush_seconds = 3600.0  # written by `written`, not by time
        server.prediction_log.start()  # what the lifespan does under uvicorn
        return app, server
    import floor

    # Single-row requests only, which both score with a one-thread session.
    model = floor.model_runner(work / "bundle" / "model.onnx", work / "rows.json", 1)
    return floor.floor_app(model if target == FLOOR_ORT else None), None


def written(server: Any) -> None:
    """Write what the requests logged (the writer thread's work, done here and now)."""
    if server is not None:
        server.prediction_log._drain()


def silence(server: Any, part: str | None) -> Callable[[], None]:
    """Make `part`'s methods no-ops on `server`; returns what restores them."""
    if part is None:
        return lambda: None
    owner_of, methods = PARTS[part]
    owner = owner_of(server)
    present = [method for method in methods if hasattr(owner, method)]
    for method in present:
        setattr(owner, method, _nothing)

    def restore() -> None:
        for method in present:
            delattr(owner, method)  # the instance attribute goes: the class's method again

    return restore


def _nothing(*args: object) -> None:
    return None


def report(per_request: dict[str, float], requests: list[int]) -> None:
    low, high = requests
    print(
        f"Instructions per single-row request ((count(N={high}) - count(N={low})) / {high - low}):"
    )
    for name, figure in per_request.items():
        if " without " not in name:
            print(f"  {name:38s} {figure:12,.0f}")
    floor_ort, ours = per_request.get(FLOOR_ORT), per_request.get(OURS)
    if floor_ort and ours:
        print(
            f"ct-platform above floor + ORT: {ours - floor_ort:,.0f} instructions per request; "
            f"floor + ORT is {100 * floor_ort / ours:.0f} % of ct-platform's count"
        )
    keyed = per_request.get(OURS_KEYED)
    if keyed and ours:
        print(f"the routing key's per-client counting: {keyed - ours:,.0f} per request")
    parts = [(name, figure) for name, figure in per_request.items() if " without " in name]
    if parts and keyed:
        print(f"Parts of `{OURS_KEYED}` (the whole minus the app with the part a no-op):")
        for name, figure in parts:
            part = name.partition(" without ")[2]
            print(f"  {part:38s} {keyed - figure:12,.0f}  ({100 * (keyed - figure) / keyed:.1f} %)")


if __name__ == "__main__":
    sys.exit(main())
