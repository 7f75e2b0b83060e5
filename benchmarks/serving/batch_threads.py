"""Our server with 1 or more intra-op threads for big requests (`--batch-threads`), same run.

    .venv/bin/python benchmarks/serving/batch_threads.py --bundle DIR --row row.json \
        --batch batch.json [--threads 1 2] [--rounds 3] [--duration 10]

For each setting, alternated round by round: the 1,000-row request alone (`measure`'s
median of 31 on one connection); single-row throughput alone (`wrk -t1 -c4`); and the same
wrk run while one client posts 1,000-row requests back to back (the threads of a big
request compete with the event loop for the cores), with that client's median 1,000-row
latency. Prints each round and the medians per setting.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from measure import JSON, Call, batch_latency_ms, first_200, free_port, parse_wrk, stop, wrk

REPO = Path(__file__).resolve().parents[2]
CONNECTIONS = 4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--row", type=Path, required=True, help="a one-row /invocations body")
    parser.add_argument("--batch", type=Path, required=True, help="a 1,000-row body")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="wrk seconds per run")
    args = parser.parse_args()
    row = Call("/invocations", args.row.read_bytes())
    batch = Call("/invocations", args.batch.read_bytes())
    results: dict[int, list[dict[str, float]]] = {threads: [] for threads in args.threads}
    with tempfile.TemporaryDirectory(prefix="ct-batch-threads-") as name:
        folder = Path(name)
        lua = folder / "post.lua"
        lua.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(row.body.decode())}\n"
        )
        for round_index in range(args.rounds):
            order = args.threads[:: 1 if round_index % 2 == 0 else -1]
            for threads in order:
                figures = measure_setting(args.bundle, threads, batch, lua, folder, args.duration)
                print(f"round {round_index + 1}, batch threads {threads}: {describe(figures)}")
                results[threads].append(figures)
    print("\nMedians per setting:")
    for threads, runs in results.items():
        medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(f"  batch threads {threads}: {describe(medians)}")
    return 0


def measure_setting(
    bundle: Path, threads: int, batch: Call, lua: Path, folder: Path, duration: int
) -> dict[str, float]:
    """Start our server with `threads` batch threads, measure it, stop it."""
    port = free_port()
    command = [
        sys.executable, "-m", "ct_platform.serving", "--bundle", str(bundle), "--port",
        str(port), "--batch-threads", str(threads),
    ]  # fmt: skip
    env = {**os.environ, "CT_HOME": str(folder / f"home-{threads}")}
    url = f"http://127.0.0.1:{port}/invocations"
    with (folder / f"server-{threads}.log").open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        first_200(url, batch.body, process, started)
        wrk(url, lua, 2, CONNECTIONS)  # warm-up
        alone_ms, _ = batch_latency_ms(port, batch)
        rows_alone = parse_wrk(wrk(url, lua, duration, CONNECTIONS))[0]
        timings: list[float] = []
        done = threading.Event()
        sender = threading.Thread(target=send_batches, args=(port, batch, done, timings))
        sender.start()
        try:
            rows_mixed, _, p99_mixed, _ = parse_wrk(wrk(url, lua, duration, CONNECTIONS))
        finally:
            done.set()
            sender.join()
    finally:
        stop(process)
    return {
        "batch_alone_ms": alone_ms,
        "rows_per_s_alone": rows_alone,
        "rows_per_s_with_batches": rows_mixed,
        "p99_with_batches_ms": p99_mixed,
        "batch_with_rows_ms": statistics.median(timings) if timings else float("nan"),
        "batches": len(timings),
    }


def send_batches(port: int, batch: Call, done: threading.Event, timings: list[float]) -> None:
    """1,000-row requests one after the other on one connection until `done`; each one's
    wall time (ms) into `timings`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        while not done.is_set():
            started = time.perf_counter()
            connection.request("POST", batch.path, body=batch.body, headers=JSON)
            connection.getresponse().read()
            timings.append((time.perf_counter() - started) * 1000)
    finally:
        connection.close()


def describe(figures: dict[str, float]) -> str:
    return (
        f"1,000 rows alone {figures['batch_alone_ms']:.2f} ms; one-row req/s alone "
        f"{figures['rows_per_s_alone']:,.0f}, with batches running "
        f"{figures['rows_per_s_with_batches']:,.0f} (p99 {figures['p99_with_batches_ms']:.2f} "
        f"ms); 1,000 rows meanwhile {figures['batch_with_rows_ms']:.2f} ms "
        f"({figures['batches']:.0f} sent)"
    )


if __name__ == "__main__":
    sys.exit(main())
