"""Run the demo's processes; stop every process they started, always, within a bound.

    supervise.py [--grace SECONDS] [--drop NAME REGEX] [--after SHELL]
                 NAME COMMAND... [::: NAME COMMAND...]...

Each COMMAND runs in its own session (so a Ctrl-C in the terminal reaches this script only,
which then stops the children in order). Any child ending on its own stops the whole demo,
loudly: a demo whose `dagster dev` died keeps no UI and no sensors, and a restart would hide
a crash that recurs (an out-of-memory kill on a loaded machine, say); the state is kept, so
the next start continues where this one stopped.

Stopping: SIGINT to each child's process group (Ctrl-C for `dagster dev`, which then shuts
its webserver, daemon and code server down); once the children are gone (or half the grace
has passed) SIGTERM to every process still left; after `--grace` seconds SIGKILL to all of
them, each named. A second Ctrl-C / SIGTERM / SIGHUP kills at once. "Every process" is found
by walking /proc from this process down: it makes itself a child subreaper
(PR_SET_CHILD_SUBREAPER, Linux), so a process whose parent died is re-parented here, not to
init, whatever process group or session it moved to; pids seen earlier are also remembered
(with their start time, so a reused pid is never signalled).

Once stopping, the tracebacks a child prints because of our SIGINT (ending in
KeyboardInterrupt, asyncio's CancelledError or Dagster's DagsterExecutionInterruptedError,
chained or not, with or without "Exception ignored in") are counted, not shown; so are
Dagster's RUN_FAILURE lines of a run the stop interrupted. Several processes of one child (the
MLflow UI's workers, `dagster dev`'s orphan watchers) print their tracebacks into one pipe at
once. Under PYTHONUNBUFFERED=1 Python writes a traceback piece by piece (a frame's indent, its
source line and each marker `^` are separate writes), so the pieces of several processes
interleave within lines, not just between them: "^^^  File ...". A line is therefore judged
by what is left once the pieces a traceback is made of are taken out (its header or Dagster's
"Stack Trace:", `File "...", line N` lines, the source lines those name, markers, the chain's
glue, the interruption's name): nothing left, it is held; an exception's name left, it is
held and that traceback is not the interruption's; anything else is shown at once. When the
child's output ends, the held lines are dropped if every traceback ended in the interruption
(as many interruption names as headers, no other exception), else shown whole, as printed.

Then `--after` runs (the demo stops the endpoint's state there) and the exit status is 0 for
a requested stop, 1 when a child ended on its own or could not be started.

Standard library only: it must run before anything else is known to work.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import linecache
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
SEPARATOR = ":::"
POLL_SECONDS = 0.2  # while stopping
WATCH_SECONDS = 1.0  # while running: how soon a child's end is noticed (a /proc walk each)
KILL_WAIT_SECONDS = 30
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# `dagster dev`'s line when its webserver or daemon dies (dagster/_cli/dev.py).
SUBPROCESS_DIED = re.compile(
    r"(?P<what>[\w.-]+) process shut down unexpectedly with return code (?P<code>-?\d+)"
)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    drop: re.Pattern[bytes] | None
    # Enough to hold `dagster dev`'s traceback of a dead subprocess and its shutdown lines.
    last_lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=60))
    exit_code: int | None = None
    # Set when the demo stops it: the tracebacks our SIGINT makes its Python processes print
    # are then held and counted, not shown (any other traceback is shown whole).
    stopping: bool = False
    interruption: InterruptionOutput = field(default_factory=lambda: InterruptionOutput())
    reader: threading.Thread | None = None

    def how_it_ended(self) -> str:
        """Why it ended, from what it printed last and its exit status: `dagster dev` exits 0
        when its daemon or webserver dies (it logs "dagster-daemon process shut down
        unexpectedly with return code -9", then shuts the rest down), so an exit code alone
        would read as a clean stop that nobody asked for."""
        died = [match for line in self.last_lines if (match := SUBPROCESS_DIED.search(line))]
        if died:
            what, code = died[-1].group("what"), int(died[-1].group("code"))
            return (
                f"its {what} process died ({_exit_status(code)}), so {self.name} shut itself "
                f"down ({_exit_status(self.exit_code)})"
            )
        if self.exit_code == 0:
            return (
                "exit code 0, but no stop was asked for: it stopped on its own (`dagster dev` "
                "exits 0 when its daemon or webserver dies)"
            )
        return _exit_status(self.exit_code)


def _exit_status(code: int | None) -> str:
    """ "exit code 3", "killed by SIGKILL" (a negative code is the signal that ended it)."""
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _say(text: str) -> None:
    sys.stdout.write(f"[demo] {text}\n")
    sys.stdout.flush()


def _become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: the remembered pids are all there is
        return False


def _stat(pid: int) -> tuple[int, str, int, str] | None:
    """(parent pid, state letter, start time in clock ticks, command) of a live pid, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    command = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19]), command


def _command_line(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(w.decode(errors="replace") for w in words if w)[:120]


class Tree:
    """Every live process below this one, including re-parented ones and remembered ones."""

    def __init__(self) -> None:
        self.root = os.getpid()
        self.known: dict[int, int] = {}  # pid -> start time

    def alive(self) -> list[int]:
        """Live (not zombie) processes of the tree, and remember them."""
        stats = {pid: _stat(pid) for pid in _all_pids()}
        children: dict[int, list[int]] = collections.defaultdict(list)
        for pid, stat in stats.items():
            if stat is not None:
                children[stat[0]].append(pid)
        found, todo = set(), [self.root]
        while todo:
            for pid in children.pop(todo.pop(), []):
                found.add(pid)
                todo.append(pid)
        for pid, started in self.known.items():
            stat = stats.get(pid)
            if stat is not None and stat[2] == started:
                found.add(pid)  # escaped the walk (no subreaper): still ours
        live = [pid for pid in found if stats[pid] is not None and stats[pid][1] != "Z"]
        self.known.update({pid: stats[pid][2] for pid in live})
        return sorted(live)


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Supervisor:
    def __init__(self, children: list[Child], grace: float) -> None:
        self.children = children
        self.grace = grace
        self.tree = Tree()
        self.requests = 0  # stop requests received (signals)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.requests += 1

    def reap(self) -> None:
        """Collect every ended process below us (children and re-parented orphans)."""
        by_pid = {child.process.pid: child for child in self.children}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = by_pid.get(pid)
            if child is not None:
                child.exit_code = os.waitstatus_to_exitcode(status)
                child.process.returncode = child.exit_code  # so Popen never waits for it

    def watch(self) -> Child | None:
        """Until a stop is requested (None) or a child ends on its own (that child)."""
        while self.requests == 0:
            self.reap()
            self.tree.alive()  # remember who is running, for the stop
            for child in self.children:
                if child.exit_code is not None:
                    return child
            time.sleep(WATCH_SECONDS)
        return None

    def stop(self) -> None:
        """INT to the children, TERM to the rest, KILL after the grace; until nothing is left."""
        started = time.monotonic()
        seen = self.requests
        running = [c for c in self.children if c.exit_code is None]
        _say(
            f"stopping: SIGINT to {', '.join(c.name for c in running) or 'nothing'}; every "
            f"process is killed after {self.grace:g} s (Ctrl-C again: at once)"
        )
        for child in self.children:
            child.stopping = True
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGINT)
        termed = False
        while live := self.tree.alive():
            elapsed = time.monotonic() - started
            if self.requests > seen or elapsed >= self.grace:
                why = "asked twice" if self.requests > seen else f"after {self.grace:g} s"
                self._kill(live, why)
                break
            all_children_gone = all(c.exit_code is not None for c in self.children)
            if not termed and (all_children_gone or elapsed >= self.grace / 2):
                termed = True
                self._list(f"SIGTERM to {len(live)} processes still running:", live)
                _signal_all(live, signal.SIGTERM)
            time.sleep(POLL_SECONDS)
            self.reap()
        self.reap()
        for child in self.children:  # its held lines are judged once its output has ended
            if child.reader is not None:
                child.reader.join(timeout=READ_WAIT_SECONDS)
        hidden = sum(child.interruption.hidden_tracebacks for child in self.children)
        if hidden:
            _say(
                f"{hidden} traceback(s) of processes the stop interrupted (KeyboardInterrupt, "
                "CancelledError, DagsterExecutionInterruptedError) not shown"
            )
        runs = sum(child.interruption.interrupted_runs for child in self.children)
        if runs:
            _say(
                f"{runs} Dagster run(s) interrupted by the stop: marked failed (unexpected "
                "termination), which Dagster retries (run_retries in dagster.yaml)"
            )
        if not self.tree.alive():
            _say(f"all demo processes ended ({time.monotonic() - started:.0f} s)")

    @staticmethod
    def _list(title: str, pids: list[int]) -> None:
        _say(title)
        for pid in pids:
            _say(f"  {pid} {_command_line(pid)}")

    def _kill(self, live: list[int], why: str) -> None:
        self._list(f"SIGKILL to {len(live)} processes still running ({why}):", live)
        # Repeated: a process may fork between the walk and the kill. Bounded: a process stuck
        # in the kernel (uninterruptible I/O) dies only when the I/O ends; say so, do not hang.
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while live and time.monotonic() < deadline:
            _signal_all(live, signal.SIGKILL)
            time.sleep(POLL_SECONDS)
            self.reap()
            live = self.tree.alive()
        if live:
            self._list(f"still there {KILL_WAIT_SECONDS} s after SIGKILL (stuck in I/O?):", live)


# The pieces Python prints a traceback in (C `PyErr_Display` and the `traceback` module).
# A header: Python's, maybe after a log line's prefix (the MLflow UI logs tracebacks as
# "2026/11/30 23:17:10 ERROR:    Traceback ..."), or Dagster's "Stack Trace:" of an error
# it logs (after the error's name: "dagster._core.errors.DagsterExecutionInterruptedError").
TRACEBACK = re.compile(
    rb"(?:\d{4}[/-]\d\d[/-]\d\d[ T][\d:,.]+ [A-Z]+:? *)?Traceback \(most recent call last\):"
    rb"|Stack Trace:"
)
CHAIN = (  # the glue between the tracebacks of a chain
    b"During handling of the above exception, another exception occurred:",
    b"The above exception was the direct cause of the following exception:",
)
FRAME = re.compile(rb'  File "(?P<path>[^"\n]+)", line (?P<number>\d+), in [^\n]*')
# Python's preamble of a traceback at interpreter exit, with what it names.
IGNORED = re.compile(rb"Exception ignored in[^\n]*")
# Our SIGINT as Python, asyncio and Dagster (its signal handler) raise it; pieces glue on
# either side of the name.
INTERRUPTION = re.compile(rb"KeyboardInterrupt|CancelledError|DagsterExecutionInterruptedError")
# The interruption names' modules and dots, markers and blanks: each written on its own.
LOOSE_PIECES = re.compile(
    rb"asyncio\.exceptions|concurrent\.futures\._base|asyncio|dagster\._core\.errors|[.^~\s]"
)
# The line a traceback ends with: "KeyboardInterrupt", "asyncio.exceptions.CancelledError",
# "RuntimeError: could not flush", "Exception: ...".
EXCEPTION_LINE = re.compile(
    rb"^(?:[A-Za-z_]\w*\.)*\w*(?:Error|Exception|Interrupt|Exit|Failure|Iteration)(?::.*)?$"
)
# Dagster's console line for a run whose process our SIGINT interrupted
# (dagster/_core/execution/api.py); from its timestamp, so no piece glued before it is lost.
INTERRUPTED_RUN = re.compile(
    rb"(?:\d{4}-\d\d-\d\d [^\n]*?)?RUN_FAILURE[^\n]*?Execution was interrupted unexpectedly\."
    rb"(?: No user initiated termination request was found, treating as failure\.)?"
)
READ_WAIT_SECONDS = 5.0  # for a child's output to end once its processes have


@dataclass
class InterruptionOutput:
    """What one stopping child printed because of our SIGINT, tallied over all its lines:
    `take` a line, then `settle` once its output has ended."""

    held: list[bytes] = field(default_factory=list)
    source_lines: set[bytes] = field(default_factory=set)  # those the frames seen name
    tracebacks: int = 0  # headers
    chained: int = 0  # the glue lines between the tracebacks of a chain
    interruptions: int = 0  # names of the interruption (INTERRUPTION)
    other_exceptions: int = 0  # lines left with another exception's name: a real error
    hidden_tracebacks: int = 0
    interrupted_runs: int = 0  # Dagster runs the stop interrupted (their RUN_FAILURE lines)

    def take(self, line: bytes) -> bool:
        """Hold the line (True) when what is left of it, the traceback pieces taken out, is
        nothing or an exception's name; else it is not ours to hide (False). A Dagster line of
        an interrupted run is counted (True), not held."""
        rest, runs = INTERRUPTED_RUN.subn(b"", line)
        self.interrupted_runs += runs
        if runs and not rest.strip():
            return True
        for frame in FRAME.finditer(rest):
            self._learn_source(frame["path"], int(frame["number"]))
        rest = FRAME.sub(b"", rest)
        for source in sorted(self.source_lines, key=len, reverse=True):
            rest = rest.replace(source, b"")
        rest, tracebacks = TRACEBACK.subn(b"", rest)
        self.tracebacks += tracebacks
        self.chained += sum(rest.count(glue) for glue in CHAIN)
        rest, interruptions = INTERRUPTION.subn(b"", rest)
        self.interruptions += interruptions
        for glue in CHAIN:
            rest = rest.replace(glue, b"")
        rest = IGNORED.sub(b"", rest)
        if LOOSE_PIECES.sub(b"", rest) and not EXCEPTION_LINE.match(rest.strip(b"^~ \t\r\n")):
            return False
        self.other_exceptions += bool(LOOSE_PIECES.sub(b"", rest))
        self.held.append(line)
        return True

    def _learn_source(self, path: bytes, number: int) -> None:
        text = linecache.getline(path.decode(errors="replace"), number).strip()
        if text:
            self.source_lines.add(text.encode())

    def settle(self) -> list[bytes]:
        """The held lines to show: none when they are tracebacks all ending in the
        interruption (each counted: a chain counts once), else all of them, as printed."""
        held, self.held = self.held, []
        all_interrupted = self.interruptions >= self.tracebacks and not self.other_exceptions
        if self.tracebacks and all_interrupted:
            self.hidden_tracebacks += max(self.tracebacks - self.chained, 1)
            return []
        return held


def _pass_output(child: Child) -> None:
    """Copy the child's output to ours, minus the lines `drop` matches and, once stopping,
    the tracebacks and run failures of the interruption (held, then judged when it ends)."""
    assert child.process.stdout is not None
    for line in child.process.stdout:
        if child.drop is not None and child.drop.search(line):
            continue
        if not (child.stopping and child.interruption.take(line)):
            _write(child, [line])
    _write(child, child.interruption.settle())


def _write(child: Child, lines: list[bytes]) -> None:
    for line in lines:
        sys.stdout.buffer.write(line)
        text = line.decode(errors="replace").strip()
        if text:
            child.last_lines.append(text)
    sys.stdout.buffer.flush()


def _start(name: str, command: list[str], drop: re.Pattern[bytes] | None) -> Child:
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the supervisor only, which stops in order
    )
    child = Child(name, process, drop)
    # A daemon thread: an orphan of this child may hold the pipe open; the tree walk, not the
    # pipe's end, says when the child has ended.
    child.reader = threading.Thread(target=_pass_output, args=(child,), daemon=True)
    child.reader.start()
    return child


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[list[str]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grace", type=float, default=60.0, help="seconds before SIGKILL")
    parser.add_argument("--drop", nargs=2, action="append", default=[], metavar=("NAME", "RE"))
    parser.add_argument("--after", help="shell command run once every process has ended")
    parser.add_argument("commands", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    groups: list[list[str]] = [[]]
    for word in args.commands:
        if word == SEPARATOR:
            groups.append([])
        else:
            groups[-1].append(word)
    if any(len(group) < 2 for group in groups):
        parser.error(f"each child is NAME COMMAND..., separated by {SEPARATOR}")
    return args, groups


def main(argv: list[str]) -> int:
    args, groups = _parse(argv)
    drops = {name: re.compile(pattern.encode()) for name, pattern in args.drop}
    if not _become_subreaper():
        _say("warning: not a child subreaper (not Linux?); orphans are found by pid only")
    supervisor = Supervisor([], args.grace)  # signals are handled before the first child runs
    ended: Child | None = None
    failed: str | None = None
    for name, *command in groups:
        try:
            supervisor.children.append(_start(name, command, drops.get(name)))
        except OSError as exc:  # e.g. not installed: the ones already started are stopped
            failed = f"could not start {name}: {exc}"
            _say(failed)
            break
    if failed is None:
        ended = supervisor.watch()
    if ended is not None:
        words = f"; its last words: {ended.last_lines[-1]}" if ended.last_lines else ""
        _say("=" * 78)
        _say(f"{ended.name} ENDED ON ITS OWN: {ended.how_it_ended()}{words}")
        _say("The demo cannot go on without it: stopping everything it started.")
        _say("=" * 78)
    supervisor.stop()
    if args.after:
        for sig in STOP_SIGNALS:  # the clean-up is short; let it finish
            signal.signal(sig, signal.SIG_IGN)
        _say("running the clean-up step (--after) now that every demo process has ended")
        subprocess.run(["bash", "-c", args.after], check=False, timeout=120)
    return 0 if ended is None and failed is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
