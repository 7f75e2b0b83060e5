"""Server CPU per single-row request, req/s, p99 and a 1,000-row request, against the floor.

    .venv/bin/python benchmarks/serving/profile_cpu_per_request.py --bundle DIR
        --rows rows.json --batch batch.json [--baseline-repo /work/main] [--rounds 2]

Servers, alternated `--rounds` times, each measured with `wrk -t2 -c8 -d<duration>s --latency`
POSTing the single-row body, then 7 sequential POSTs of the 1,000-row body (median):

- ct-platform (`python -m ct_platform.serving`), and the same from `--baseline-repo`;
- floor + ORT: Starlette + uvicorn + `session.run` on one pre-parsed row
  (`cold_start.FLOOR_SERVER`).

CPU per request is the server process's user + system CPU time (/proc/<pid>/stat) during
the wrk run divided by the requests wrk completed: what the server itself spends, whatever
else the machine runs. `--rows`/`--batch` are `/invocations` JSON bodies (dataframe_split).
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
from pathlib import Path

from cold_start import FLOOR_SERVER, answers_200, free_port

REPO = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--rows", type=Path, required=True, help="single-row JSON body")
    parser.add_argument("--batch", type=Path, required=True, help="1,000-row JSON body")
    parser.add_argument("--baseline-repo", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ct-cpu-") as folder:
        work = Path(folder)
        (work / "floor.py").write_text(FLOOR_SERVER)
        lua = work / "post.lua"
        body = args.rows.read_text()
        lua.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body)}\n"  # a Lua string: [[...]] ends at a body's "]]"
        )
        ours = [sys.executable, "-m", "ct_platform.serving", "--bundle", str(args.bundle), "--port"]
        servers = {"ct-platform": (ours, REPO)}
        if args.baseline_repo:
            servers[f"ct-platform @ {args.baseline_repo}"] = (ours, args.baseline_repo)
        floor = [sys.executable, str(work / "floor.py"), str(args.bundle / "model.onnx")]
        servers["floor + ORT"] = (floor, REPO)
        for round_ in range(args.rounds):
            for name, (command, cwd) in servers.items():
                figures = measure(command, cwd, work, lua, args, round_)
                print(f"round {round_ + 1} {name:40s} " + "  ".join(figures), flush=True)
    return 0


def measure(
    command: list[str], cwd: Path, work: Path, lua: Path, args: argparse.Namespace, round_: int
) -> list[str]:
    port = free_port()
    env = {**os.environ, "CT_HOME": str(work / f"home-{round_}")}
    process = subprocess.Popen(
        [*command, str(port)], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        row = args.rows.read_bytes()
        while not answers_200(port, row):
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read()[-2000:])
            time.sleep(0.05)
        for _ in range(200):  # warm-up
            answers_200(port, row)
        cpu_before = cpu_seconds(process.pid)
        wrk = subprocess.run(
            ["wrk", "-t2", "-c8", f"-d{args.duration}s", "--latency", "-s", str(lua),
             f"http://127.0.0.1:{port}/invocations"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        cpu = cpu_seconds(process.pid) - cpu_before
        requests = int(re.search(r"(\d+) requests in", wrk).group(1))
        if "Non-2xx" in wrk:
            raise RuntimeError(f"the server answered errors under wrk:\n{wrk}")
        batch = args.batch.read_bytes()
        batch_ms = []
        for _ in range(8):
            started = time.perf_counter()
            answers_200(port, batch)
            batch_ms.append((time.perf_counter() - started) * 1000)
        return [
            f"{requests / args.duration:8.0f} req/s",
            f"CPU {cpu / requests * 1e6:6.0f} µs/req",
            f"p50 {latency(wrk, '50%')}",
            f"p99 {latency(wrk, '99%')}",
            f"1,000 rows {statistics.median(batch_ms[1:]):6.1f} ms",
        ]
    finally:
        process.terminate()
        process.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def latency(wrk: str, percentile: str) -> str:
    # A line of the "Latency Distribution" section; not the "+/- Stdev" column's "85.50%".
    return re.search(rf"^[ \t]+{percentile}[ \t]+(\S+)", wrk, re.MULTILINE).group(1)


if __name__ == "__main__":
    sys.exit(main())
