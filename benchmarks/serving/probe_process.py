"""Where a single-row request's CPU goes beyond the user-space instructions: ours against
the floor + ORT server, under the same wrk load, one after the other.

    nice -n 19 .venv/bin/python benchmarks/serving/probe_process.py --work DIR \
        [--duration 8] [--connections 8] [--targets ct-platform floor+ort baseline]
        [--repo CHECKOUT] [--rounds 1] [--proc-only]

`DIR` holds `bundle/`, `row.json` and `rows.json` as `count_instructions.py --work DIR`
makes them. For each target, a fresh server process, 2 s of wrk warm-up, then three wrk
runs of `--duration` seconds each, measured from outside the process:

1. `/proc`: user and system CPU per request (`utime`, `stime`), per thread (which threads
   work: the event loop, ORT's pool, the prediction-log writer), minor page faults per
   request, and voluntary and involuntary context switches per request (a voluntary
   switch is a sleep: a wait in `epoll_wait`, or a thread woken and put back to sleep);
2. `strace -c -f` attached to the process: system calls per request, by name;
3. `perf stat` attached to the process: task-clock, and (user space only with
   perf_event_paranoid 2) cycles, instructions (IPC), cache and branch misses per request
   where the machine exposes hardware counters (the benchmark VM does not).

The garbage collector: the server runs under a wrapper that counts, through
`gc.callbacks`, the collections of each generation and their time, written to a JSON file
on SIGUSR1: the probe takes the difference over the `/proc` run, per 10,000 requests.
Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# Runs the server's own entry point with collection counters installed.
_GC_WRAPPER = """
import gc, json, runpy, signal, sys, time
stats = {"0": [0, 0.0], "1": [0, 0.0], "2": [0, 0.0]}
started = [0.0]
def watch(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        entry = stats[str(info["generation"])]
        entry[0] += 1
        entry[1] += time.perf_counter() - started[0]
gc.callbacks.append(watch)
out = sys.argv.pop(1)
def snapshot(*_):
    open(out, "w").write(json.dumps(stats))
signal.signal(signal.SIGUSR1, snapshot)
target = sys.argv.pop(1)
sys.argv[0] = target
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--targets", nargs="*", default=["ct-platform", "floor+ort"])
    parser.add_argument("--repo", type=Path, help="the `baseline` target's checkout")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over the targets")
    parser.add_argument("--proc-only", action="store_true", help="no strace, no perf run")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {target: [] for target in args.targets}
    for round_ in range(args.rounds):  # each round starts one target later
        shift = round_ % len(args.targets)
        for target in args.targets[shift:] + args.targets[:shift]:
            results[target].append(probe(target, args))
    print(json.dumps(results, indent=2))
    return 0


def probe(target: str, args: argparse.Namespace) -> dict:
    port = free_port()
    gc_file = Path(tempfile.mkstemp(prefix="gc-", suffix=".json")[1])
    home = tempfile.mkdtemp(prefix="ct-home-")
    env = {**os.environ, "CT_HOME": home}
    if target in ("ct-platform", "baseline"):
        server = ["ct_platform.serving", "--bundle", str(args.work / "bundle")]
        server += ["--port", str(port)]
        if target == "baseline":  # the same server from another checkout (before/after)
            env["PYTHONPATH"] = str(args.repo.resolve())
    else:
        server = [str(HERE / "floor.py"), "--port", str(port)]
        server += ["--onnx", str(args.work / "bundle" / "model.onnx")]
        server += ["--rows", str(args.work / "rows.json")]
    process = subprocess.Popen(
        [sys.executable, "-c", _GC_WRAPPER, str(gc_file), *server],
        cwd=REPO if target != "baseline" else args.repo,
        env=env,
    )
    try:
        wait_ready(port, args.work / "row.json", process)
        script = wrk_script(args.work / "row.json")
        wrk(port, script, 2, args.connections)
        figures = {"proc": proc_run(process.pid, port, script, args, gc_file)}
        if not args.proc_only:
            figures["strace"] = strace_run(process.pid, port, script, args)
            figures["perf"] = perf_run(process.pid, port, script, args)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
    gc_file.unlink()
    return figures


def proc_run(pid: int, port: int, script: Path, args: argparse.Namespace, gc_file: Path) -> dict:
    gc_before = collections(pid, gc_file)
    before = threads(pid), switches(pid), minor_faults(pid)
    done = wrk(port, script, args.duration, args.connections)
    after = threads(pid), switches(pid), minor_faults(pid)
    gc_after = collections(pid, gc_file)
    tick = os.sysconf("SC_CLK_TCK")
    per_thread = {}
    for tid, (name, user, system) in after[0].items():
        _, user0, system0 = before[0].get(tid, (name, 0, 0))
        if user - user0 or system - system0:
            per_thread[f"{name} ({tid})"] = {
                "user_us": (user - user0) / tick * 1e6 / done,
                "system_us": (system - system0) / tick * 1e6 / done,
            }
    return {
        "requests": done,
        "user_us": sum(t["user_us"] for t in per_thread.values()),
        "system_us": sum(t["system_us"] for t in per_thread.values()),
        "threads": per_thread,
        "voluntary_switches": (after[1][0] - before[1][0]) / done,
        "involuntary_switches": (after[1][1] - before[1][1]) / done,
        "minor_faults": (after[2] - before[2]) / done,
        "gc_per_10k_requests": {
            generation: {
                "collections": (n - gc_before[generation][0]) * 1e4 / done,
                "ms": (seconds - gc_before[generation][1]) * 1e7 / done,
            }
            for generation, (n, seconds) in gc_after.items()
        },
    }


def collections(pid: int, gc_file: Path) -> dict[str, list]:
    """The server's collection counts and seconds by generation, so far."""
    gc_file.write_text("")
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not gc_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    return json.loads(gc_file.read_text())


def strace_run(pid: int, port: int, script: Path, args: argparse.Namespace) -> dict:
    out = Path(tempfile.mkstemp(prefix="strace-")[1])
    tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(out), "-p", str(pid)])
    time.sleep(0.5)
    done = wrk(port, script, args.duration, args.connections)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(30)
    calls = {}
    for line in out.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            calls[fields[-1]] = round(int(fields[3]) / done, 3)
    out.unlink()
    return {"requests": done, "calls_per_request": calls}


def perf_run(pid: int, port: int, script: Path, args: argparse.Namespace) -> dict:
    events = "task-clock,cycles:u,instructions:u,cache-misses:u,branch-misses:u"
    out = Path(tempfile.mkstemp(prefix="perf-")[1])
    counter = subprocess.Popen(
        ["perf", "stat", "-x,", "-e", events, "-p", str(pid), "-o", str(out)]
    )
    time.sleep(0.5)
    done = wrk(port, script, args.duration, args.connections)
    counter.send_signal(signal.SIGINT)
    counter.wait(30)
    counts = {}
    for line in out.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].replace(".", "").isdigit():
            counts[fields[2]] = float(fields[0]) / done
    out.unlink()
    if counts.get("cycles:u"):
        counts["ipc"] = counts.get("instructions:u", 0.0) / counts["cycles:u"]
    return {"requests": done, "per_request": counts}


def threads(pid: int) -> dict[int, tuple[str, int, int]]:
    """tid -> (name, utime ticks, stime ticks) of every thread of `pid`."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(task.name)] = (name, int(fields[11]), int(fields[12]))
    return found


def minor_faults(pid: int) -> int:
    """Minor page faults of the process so far (every thread's, `/proc/<pid>/stat`): memory
    handed back to the kernel and touched again costs one each (a zeroed page)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[7])


def switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches summed over the threads of `pid`."""
    voluntary = involuntary = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        voluntary += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M)[1])
        involuntary += int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M)[1])
    return voluntary, involuntary


def wrk(port: int, script: Path, seconds: int, connections: int) -> int:
    """Requests completed by `wrk -t2` in `seconds` (non-2xx answers fail the probe)."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
         f"http://127.0.0.1:{port}/invocations"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out:
        raise RuntimeError(f"the server answered errors:\n{out}")
    return int(re.search(r"(\d+) requests in", out)[1])


def wrk_script(body: Path) -> Path:
    script = Path(tempfile.mkstemp(prefix="wrk-", suffix=".lua")[1])
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body.read_text())}\n"
    )
    return script


def wait_ready(port: int, body: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations", data=body.read_bytes(),
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no server answered on port {port} within {timeout} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
