"""`model.predict` of n rows, split in two halves (`bundle.SPLIT_ROWS`) or one run, same process.

    .venv/bin/python benchmarks/serving/split_rows.py --bundle DIR --body batch.json \
        [--rows 256 384 512 1000] [--rounds 15] [--calls 30]

Two backends of the same bundle with `batch_threads` 1: one splits requests of any row
count given (`SPLIT_ROWS` lowered to 2 for the run; its helper thread scores the second
half), the other scores them in one run of the one-thread session. The first n rows of
`--body` (a many-row `/invocations` body, parsed once), scored by each backend in turn,
`--calls` calls a round, the order swapped round by round. Prints per row count the wall
time of one call in ms (fastest, 25th percentile, median, over every call), the process's
CPU time per call (both threads) and the share of split calls whose second half the
caller took back from the helper (scored itself, the helper not having started it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ct_platform.serving import bundle  # noqa: E402
from ct_platform.serving.bundle import LoadedModel, load_bundle  # noqa: E402
from ct_platform.serving.mlflow_protocol import parse_invocation  # noqa: E402
from ct_platform.serving.schema import ParsedRows  # noqa: E402
from ct_platform.serving.slots import ServedModel  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--body", type=Path, required=True, help="a many-row /invocations body")
    parser.add_argument("--rows", type=int, nargs="+", default=[256, 384, 512, 1000])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    split, whole = load_bundle(args.bundle), load_bundle(args.bundle)
    if split.backend._halves is None:
        print("no helper thread: one core, or batch_threads above 1", file=sys.stderr)
        return 1
    whole.backend._halves = None
    bundle.SPLIT_ROWS = 2  # the split backend splits whatever the row count measured
    helper = HelperRuns(split)
    served = ServedModel.of(split)
    parsed = parse_invocation(args.body.read_bytes(), "application/json", served.schema)
    print(
        f"{'rows':>5s} {'scoring':8s} {'fastest':>8s} {'p25':>7s} {'median':>7s} {'CPU/call':>9s}"
    )
    for n_rows in args.rows:
        rows = first_rows(parsed, n_rows)
        helper.runs = 0
        walls, cpu = alternated({"one run": whole, "halves": split}, rows, args.rounds, args.calls)
        for name, wall in walls.items():
            quartiles = statistics.quantiles(wall, n=4)
            print(
                f"{n_rows:5d} {name:8s} {min(wall):8.3f} {quartiles[0]:7.3f} {quartiles[1]:7.3f}"
                f" {cpu[name]:9.3f}"
            )
        print(
            f"      taken back: {1 - helper.runs / (args.rounds * args.calls):.0%} of split calls"
        )
    return 0


class HelperRuns:
    """Counts the runs of `model`'s one-thread session made outside the main thread (by
    its helper), wrapping the real run callable."""

    def __init__(self, model: LoadedModel) -> None:
        self.runs = 0
        self._run = model.backend._run
        model.backend._run = self

    def __call__(self, names: list[str], feeds: dict, options: object) -> object:
        if threading.current_thread() is not threading.main_thread():
            self.runs += 1
        return self._run(names, feeds, options)


def alternated(
    models: dict[str, LoadedModel], rows: ParsedRows, rounds: int, calls: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """{name: wall ms of every call}, {name: CPU ms per call}, the models alternated."""
    walls: dict[str, list[float]] = {name: [] for name in models}
    cpu = dict.fromkeys(models, 0.0)
    names = list(models)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            started_cpu = time.process_time()
            for _ in range(calls):
                started = time.perf_counter()
                models[name].predict(rows)
                walls[name].append((time.perf_counter() - started) * 1000)
            cpu[name] += (time.process_time() - started_cpu) * 1000 / (rounds * calls)
    return walls, cpu


def first_rows(parsed: ParsedRows, n_rows: int) -> ParsedRows:
    if n_rows > parsed.n_rows:
        raise SystemExit(f"--rows {n_rows}: the body has only {parsed.n_rows} rows")
    numeric = parsed.numeric[:, :n_rows]
    return ParsedRows(n_rows, [column[:n_rows] for column in parsed.columns], numeric)


if __name__ == "__main__":
    sys.exit(main())
