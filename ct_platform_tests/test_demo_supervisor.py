"""deploy/supervise.py, which runs `make demo`'s processes, on a small tree of real processes
that behave like `dagster dev`: a main child that ignores Ctrl-C, a grandchild that moved to
its own session and was re-parented (its parent exited), and a well-behaved sibling."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SUPERVISOR = Path(__file__).resolve().parents[1] / "deploy" / "supervise.py"
# Generous: the bound under test is the grace, the rest is a loaded machine starting Pythons.
SLACK = 90.0

# The main child: ignores SIGINT (and SIGTERM when told), starts a grandchild in its own
# session through an intermediate that exits at once (so the grandchild is re-parented and
# holds our stdout open, as Dagster's code server does), writes the pids, then waits or dies.
DAGSTER_LIKE = """
import json, os, signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
if sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = '''
import signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(3600)
'''
intermediate = subprocess.Popen([sys.executable, "-c", f'''
import subprocess, sys
p = subprocess.Popen([sys.executable, "-c", {grandchild!r}], start_new_session=True)
print(p.pid, flush=True)
'''], stdout=subprocess.PIPE, text=True)
pid = int(intermediate.stdout.readline())
intermediate.wait()
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump({"main": os.getpid(), "grandchild": pid}, f)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
print("run event - DEBUG - hidden line", flush=True)
print("main child up", flush=True)
if sys.argv[2] == "daemon-dies":  # what `dagster dev` prints when its daemon is killed
    print("Traceback (most recent call last):")
    print("Exception: dagster-daemon process shut down unexpectedly with return code -9")
    print("Dagster services shut down.", flush=True)
    sys.exit(0)
if sys.argv[2] == "quits":
    print("bye", flush=True)
    sys.exit(0)
if sys.argv[2] == "crashes":
    print("Segmentation fault", flush=True)
    sys.exit(3)
time.sleep(3600)
"""


SLEEPER = "import time; time.sleep(3600)"  # Ctrl-C: a KeyboardInterrupt traceback


def _supervise(
    tmp_path: Path, mode: str, grace: float, sibling: str = SLEEPER, unbuffered: bool = False
) -> tuple[subprocess.Popen[str], dict]:
    pids = tmp_path / "pids.json"
    # PYTHONUNBUFFERED=1 (set on many machines, CI's among them) makes Python write a traceback
    # in pieces, so several processes' pieces interleave within lines.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env |= {"PYTHONUNBUFFERED": "1"} if unbuffered else {}
    command = [
        sys.executable, str(SUPERVISOR), "--grace", str(grace),
        "--after", f"echo after-ran > {tmp_path / 'after'}",
        "--drop", "main", "DEBUG",
        "main", sys.executable, "-c", DAGSTER_LIKE, str(pids), mode,
        ":::", "sibling", sys.executable, "-c", sibling,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + SLACK
    while not pids.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the tree did not start: {process.communicate()[0]}")
        time.sleep(0.2)
    return process, json.loads(pids.read_text())


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _finish(process: subprocess.Popen[str], within: float) -> tuple[str, float]:
    started = time.monotonic()
    try:
        output, _ = process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the supervisor did not end within {within:.0f} s")
    return output, time.monotonic() - started


def _assert_all_gone(pids: dict, tmp_path: Path) -> None:
    assert [name for name, pid in pids.items() if not _gone(pid)] == []
    assert (tmp_path / "after").read_text() == "after-ran\n"


def test_ctrl_c_ends_every_process_within_the_grace(tmp_path: Path) -> None:
    grace = 8.0
    process, pids = _supervise(tmp_path, "stubborn", grace)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    output, _ = _finish(process, grace + SLACK)
    elapsed = time.monotonic() - started
    assert process.returncode == 0
    assert elapsed >= grace  # the main child ignored INT and TERM: it got the grace...
    assert "SIGKILL to 2 processes still running (after 8 s):" in output  # ...then KILL, named
    assert "SIGTERM to 2 processes still running:" in output  # at half the grace
    assert f"[demo]   {pids['grandchild']} " in output
    assert f"[demo]   {pids['main']} " in output
    assert "main child up" in output
    assert "hidden line" not in output  # --drop main DEBUG
    # The sibling's KeyboardInterrupt traceback (our SIGINT) is counted, not shown.
    assert "Traceback" not in output
    assert (
        "[demo] 1 traceback(s) of processes the stop interrupted (KeyboardInterrupt, "
        "CancelledError, DagsterExecutionInterruptedError) not shown"
    ) in output
    _assert_all_gone(pids, tmp_path)


def test_a_real_error_while_stopping_is_shown_whole(tmp_path: Path) -> None:
    """Only the interruption is hidden: an error it led to is printed whole, as Python
    printed it (its chain starts with the KeyboardInterrupt that caused it)."""
    sibling = "import time\ntry:\n    time.sleep(3600)\nexcept KeyboardInterrupt:\n"
    sibling += "    raise RuntimeError('could not flush the log')"
    process, pids = _supervise(tmp_path, "polite", grace=8, sibling=sibling)
    process.send_signal(signal.SIGINT)
    output, _ = _finish(process, 8 + SLACK)
    lines = output.splitlines()
    assert lines.count("Traceback (most recent call last):") == 2
    chain = lines.index("During handling of the above exception, another exception occurred:")
    assert lines[chain - 2 : chain] == ["KeyboardInterrupt", ""]
    assert lines[-1] != "RuntimeError: could not flush the log"  # the demo's lines follow
    assert "RuntimeError: could not flush the log" in lines[chain:]
    assert "not shown" not in output
    _assert_all_gone(pids, tmp_path)


# What the MLflow UI does on Ctrl-C: several Python processes of one child (uvicorn's, huey's)
# print chained tracebacks (asyncio's CancelledError, then KeyboardInterrupt) into one pipe at
# once, interleaved line by line. The first also writes Dagster's console line of a run the
# interruption failed, as a run worker of `dagster dev` does.
ASYNCIO_WORKERS = """
import asyncio, subprocess, sys
async def serve():
    await asyncio.sleep(3600)
if sys.argv[1:] == ["parent"]:
    workers = [subprocess.Popen([sys.executable, "-c", sys.argv[0]]) for _ in range(3)]
try:
    asyncio.run(serve())
except KeyboardInterrupt:
    if sys.argv[1:] == ["parent"]:
        print('2026-11-30 19:20:00 +0000 - dagster - ERROR - __ASSET_JOB - 1f2e3d4c - '
              'RUN_FAILURE - Execution of run for "__ASSET_JOB" failed. Execution was '
              'interrupted unexpectedly. No user initiated termination request was found, '
              'treating as failure.', flush=True)
    raise
"""


@pytest.mark.parametrize("unbuffered", [False, True], ids=["line-buffered", "unbuffered"])
def test_interleaved_chained_interruption_tracebacks_are_counted_not_shown(
    tmp_path: Path, unbuffered: bool
) -> None:
    """A newcomer's Ctrl-C printed the MLflow UI's whole KeyboardInterrupt -> CancelledError
    traceback and an `__ASSET_JOB` RUN_FAILURE: the README says they are counted. CI, with
    PYTHONUNBUFFERED=1, printed a fragment ("e(task)", "^^^^^  File ...") of them."""
    sibling = f"import sys; sys.argv = [{ASYNCIO_WORKERS!r}, 'parent']; exec(sys.argv[0])"
    process, pids = _supervise(tmp_path, "polite", 20, sibling, unbuffered)
    time.sleep(3)  # the workers are up
    process.send_signal(signal.SIGINT)
    output, _ = _finish(process, 20 + SLACK)
    assert "Traceback" not in output and "CancelledError\n" not in output
    assert "RUN_FAILURE" not in output and "^^^" not in output
    assert (
        "[demo] 4 traceback(s) of processes the stop interrupted (KeyboardInterrupt, "
        "CancelledError, DagsterExecutionInterruptedError) not shown\n"
    ) in output
    assert (
        "[demo] 1 Dagster run(s) interrupted by the stop: marked failed (unexpected "
        "termination), which Dagster retries (run_retries in dagster.yaml)\n"
    ) in output
    _assert_all_gone(pids, tmp_path)


def test_a_second_ctrl_c_kills_at_once(tmp_path: Path) -> None:
    process, pids = _supervise(tmp_path, "stubborn", grace=3600)
    process.send_signal(signal.SIGINT)
    assert process.stdout is not None
    while "stopping: SIGINT to main, sibling" not in process.stdout.readline():
        pass
    process.send_signal(signal.SIGINT)
    output, elapsed = _finish(process, SLACK)
    assert "(asked twice):" in output
    assert elapsed < SLACK  # not the hour of grace
    _assert_all_gone(pids, tmp_path)


def test_terminate_stops_like_ctrl_c(tmp_path: Path) -> None:
    # The main child ends on SIGTERM; the grandchild ignores it and is killed after the grace.
    process, pids = _supervise(tmp_path, "polite", grace=8)
    process.send_signal(signal.SIGTERM)
    output, _ = _finish(process, 8 + SLACK)
    assert process.returncode == 0
    assert "SIGKILL to 1 processes still running (after 8 s):" in output
    assert f"[demo]   {pids['grandchild']} " in output
    _assert_all_gone(pids, tmp_path)


ENDINGS = {
    # `dagster dev` exits 0 when its daemon dies: the daemon's death is named, not "exit 0".
    "daemon-dies": "its dagster-daemon process died (killed by SIGKILL), so main shut itself "
    "down (exit code 0); its last words: Dagster services shut down.",
    "quits": "exit code 0, but no stop was asked for: it stopped on its own (`dagster dev` "
    "exits 0 when its daemon or webserver dies); its last words: bye",
    "crashes": "exit code 3; its last words: Segmentation fault",
}


@pytest.mark.parametrize("mode", ENDINGS)
def test_the_main_child_ending_on_its_own_stops_the_demo_saying_how(
    tmp_path: Path, mode: str
) -> None:
    # Its re-parented grandchild keeps the output pipe open: the end is noticed all the same.
    process, pids = _supervise(tmp_path, mode, grace=8)
    output, _ = _finish(process, 8 + SLACK)
    assert process.returncode == 1
    assert f"[demo] main ENDED ON ITS OWN: {ENDINGS[mode]}\n" in output
    assert "stopping: SIGINT to sibling;" in output
    # The sibling ends on SIGINT; the re-parented grandchild is found and sent TERM, then KILL.
    assert "SIGTERM to 1 processes still running:" in output
    assert f"[demo]   {pids['grandchild']} " in output
    _assert_all_gone(pids, tmp_path)


def _child_running(parent: int, word: bytes, deadline: float) -> int:
    """The pid of a child of `parent` with `word` as one of its command-line words."""
    while time.monotonic() < deadline:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
                command = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid == parent and word in command:
                return int(name)
        time.sleep(0.5)
    pytest.fail(f"process {parent} started no {word.decode()}")


@pytest.mark.slow
def test_a_killed_daemon_of_a_real_dagster_dev_is_named_not_exit_code_0(
    tmp_path: Path, spec_file: Path
) -> None:
    """`dagster dev` exits 0 when its daemon dies: the supervisor names the death."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "CT_SPEC": str(spec_file)}
    bin_dir = Path(sys.executable).parent
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    command = [
        sys.executable, str(SUPERVISOR), "--grace", "60",
        "--drop", "dagster dev", r" - (.\[[0-9;]*m)?(DEBUG|INFO)(.\[[0-9;]*m)? - ",
        "dagster dev", str(bin_dir / "dagster"), "dev",
        "-w", str(SUPERVISOR.parents[1] / "workspace.yaml"),
        "--host", "127.0.0.1", "--port", port, "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=home, env=env)
    try:
        dagster_dev = _child_running(process.pid, b"dev", time.monotonic() + SLACK)
        daemon = _child_running(dagster_dev, b"dagster._daemon", time.monotonic() + SLACK)
        time.sleep(2)  # running, not starting: dagster dev polls it every few seconds
        os.kill(daemon, signal.SIGKILL)
        output, _ = _finish(process, 3 * SLACK)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=3 * SLACK)
    assert process.returncode == 1
    assert (
        "[demo] dagster dev ENDED ON ITS OWN: its dagster-daemon process died (killed by "
        "SIGKILL), so dagster dev shut itself down (exit code 0); its last words: "
    ) in output, output[-3000:]
    assert "exit code 0;" not in output
