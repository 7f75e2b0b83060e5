"""Where a many-row request's time goes inside the server, for one or more checkouts.

    .venv/bin/python benchmarks/serving/profile_batch.py --bundle DIR --body batch.json \
        [--repo CHECKOUT ...] [--rounds 7] [--calls 30]

In-process, without sockets: the whole app through ASGI (`profile_hot_path.asgi_loop`: the
same object uvicorn runs, a big body scored in its worker thread, the log record formatted
after the answer), then each stage alone on the same body: parse + validate, the ONNX
inputs + `session.run` (`model.predict`), the answer's JSON, the prediction-log record
(`profile_hot_path.stages`), `session.run` alone on ready inputs, the slot statistics.
Each checkout (`--repo`, default this one) runs in its own process, one round at a time,
the checkouts alternated round by round, so a busy box weighs on each alike. Prints per
checkout and stage the median and fastest wall time of one call in ms (over every call
of every round) and the CPU time of the process per call (ORT's intra-op threads
included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--body", type=Path, required=True, help="a many-row /invocations body")
    parser.add_argument("--repo", type=Path, nargs="+", default=[REPO])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=30, help="timed calls per stage and round")
    parser.add_argument("--one-round", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round:
        print(json.dumps(one_round(args.repo[0], args.bundle, args.body, args.calls)))
        return 0
    walls: dict[str, dict[str, list[float]]] = {str(repo): {} for repo in args.repo}
    cpus: dict[str, dict[str, list[float]]] = {str(repo): {} for repo in args.repo}
    for round_index in range(args.rounds):
        order = args.repo if round_index % 2 == 0 else args.repo[::-1]
        for repo in order:
            command = [
                sys.executable, __file__, "--one-round", "--repo", str(repo), "--bundle",
                str(args.bundle), "--body", str(args.body), "--calls", str(args.calls),
            ]  # fmt: skip
            figures = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
            for stage, (stage_walls, cpu) in figures.items():
                walls[str(repo)].setdefault(stage, []).extend(stage_walls)
                cpus[str(repo)].setdefault(stage, []).append(cpu)
    for repo in args.repo:
        print(f"\n{repo} ({args.rounds} rounds x {args.calls} calls):")
        print(f"  {'stage':40s} {'median ms':>10s} {'fastest ms':>11s} {'CPU ms/call':>12s}")
        for stage, values in walls[str(repo)].items():
            cpu = statistics.median(cpus[str(repo)][stage])
            print(
                f"  {stage:40s} {statistics.median(values):10.3f} {min(values):11.3f} {cpu:12.3f}"
            )
    return 0


def one_round(repo: Path, bundle: Path, body_path: Path, calls: int) -> dict:
    """{stage: ([wall ms of each call], CPU ms per call)} for `repo`'s server."""
    sys.path.insert(0, str(repo))
    sys.path.insert(1, str(HERE))
    from profile_hot_path import asgi_loop

    from ct_platform.serving.app import create_app
    from ct_platform.serving.config import ServerConfig

    body = body_path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="ct-profile-batch-") as home:
        app = create_app(ServerConfig(bundle=bundle, home=Path(home)))
        parts = {"whole app (ASGI, in-process)": asgi_loop(app, body), **stages(bundle, body)}
        figures = {}
        for name, run in parts.items():
            run(3)  # warm-up
            walls, started_cpu = [], time.process_time()
            for _ in range(calls):
                started = time.perf_counter()
                run(1)
                walls.append((time.perf_counter() - started) * 1000)
            figures[name] = (walls, (time.process_time() - started_cpu) / calls * 1000)
    return figures


def stages(bundle: Path, body: bytes) -> dict[str, Callable[[int], None]]:
    """`profile_hot_path`'s stages, and `session.run` alone and the slot statistics."""
    from profile_hot_path import stages as hot_path_stages

    from ct_platform.serving.bundle import load_bundle
    from ct_platform.serving.mlflow_protocol import parse_invocation
    from ct_platform.serving.slot_stats import SlotStats
    from ct_platform.serving.slots import ServedModel

    served = ServedModel.of(load_bundle(bundle))
    backend = served.model.backend
    parsed = parse_invocation(body, "application/json", served.schema)
    prediction = served.model.predict(parsed)
    feeds = backend._feeds(parsed)
    session = backend._session
    outputs = [output.name for output in session.get_outputs()]
    stats = SlotStats(regression=False)

    def run_session(n: int) -> None:
        for _ in range(n):
            session.run(outputs, feeds)

    def count_scores(n: int) -> None:
        for _ in range(n):
            stats.scored("stable", "id", 0.005, prediction)

    return {
        **hot_path_stages(bundle, body),
        "session.run alone (1 thread)": run_session,
        "slot statistics": count_scores,
    }


if __name__ == "__main__":
    sys.exit(main())
