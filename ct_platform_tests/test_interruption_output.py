"""deploy/supervise.py's judge of what a stopping child printed, fed every way the write()
calls of several Python processes can interleave in one pipe: Python's own traceback printer
(sys.excepthook) writes the pieces, recorded one write each, as PYTHONUNBUFFERED=1 sends them."""

from __future__ import annotations

import asyncio
import importlib.util
import random
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SUPERVISOR = Path(__file__).resolve().parents[1] / "deploy" / "supervise.py"
RUN_FAILURE = (
    b"2026-11-30 19:20:00 +0000 - dagster - ERROR - __ASSET_JOB - 1f2e3d4c - RUN_FAILURE - "
    b'Execution of run for "__ASSET_JOB" failed. Execution was interrupted unexpectedly. No '
    b"user initiated termination request was found, treating as failure."
)


@pytest.fixture(scope="module")
def supervise() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("supervise", SUPERVISOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["supervise"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["supervise"]


class _Writes:
    """A stderr that keeps each write() call apart, as an unbuffered pipe receives them."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def write(self, text: str) -> int:
        self.pieces.append(text.encode())
        return len(text)

    def flush(self) -> None:
        pass


def _serve_until_interrupted() -> None:
    """Ctrl-C reaching an asyncio server: asyncio.run cancels its task (CancelledError), then
    raises KeyboardInterrupt from it, a chain of two tracebacks."""

    async def serve() -> None:
        asyncio.get_running_loop().call_soon(signal.raise_signal, signal.SIGINT)
        await asyncio.sleep(3600)

    asyncio.run(serve())


def _real_error() -> None:
    try:
        _serve_until_interrupted()
    except KeyboardInterrupt:
        raise RuntimeError("could not flush the log") from None


def _pieces(run: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The write() calls of Python's traceback printer for what `run` raises."""
    try:
        run()
    except BaseException:
        writes = _Writes()
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stderr", writes)
            sys.excepthook(*sys.exc_info())
        return writes.pieces
    raise AssertionError("it did not raise")


def _interleave(processes: list[list[bytes]], seed: int) -> list[bytes]:
    """The lines one pipe receives when these processes write at once, in a random order that
    keeps each process's own order."""
    rng, queues, received = random.Random(seed), [list(p) for p in processes], []
    while any(queues):
        received.append(rng.choice([q for q in queues if q]).pop(0))
    return b"".join(received).splitlines(keepends=True)


def _judge(supervise: ModuleType, lines: list[bytes]) -> tuple[list[bytes], list[bytes], Any]:
    judge = supervise.InterruptionOutput()
    shown_at_once = [line for line in lines if not judge.take(line)]
    return shown_at_once, judge.settle(), judge


def test_the_pieces_are_those_of_an_asyncio_server_s_interruption(
    supervise: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    printed = b"".join(_pieces(_serve_until_interrupted, monkeypatch))
    assert printed.count(b"Traceback (most recent call last):") == 2
    assert b"\nKeyboardInterrupt\n" in printed and b"CancelledError\n" in printed
    assert b"^" in printed  # 3.11 marks the expression: one write per marker


@pytest.mark.parametrize("seed", range(200))
def test_any_interleaving_of_four_interrupted_servers_is_counted_not_shown(
    supervise: ModuleType, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    pieces = _pieces(_serve_until_interrupted, monkeypatch)
    parent = [RUN_FAILURE, b"\n", *pieces]  # print() writes the text, then the newline
    lines = _interleave([parent, pieces, pieces, pieces], seed)
    shown_at_once, shown_at_end, judge = _judge(supervise, lines)
    assert (shown_at_once, shown_at_end) == ([], [])
    assert judge.hidden_tracebacks == 4  # each a KeyboardInterrupt -> CancelledError chain
    assert judge.interrupted_runs == 1


@pytest.mark.parametrize("seed", range(100))
def test_a_real_error_among_interrupted_servers_shows_every_line(
    supervise: ModuleType, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    interrupted = _pieces(_serve_until_interrupted, monkeypatch)
    failed = _pieces(_real_error, monkeypatch)
    lines = _interleave([interrupted, failed, interrupted], seed)
    shown_at_once, shown_at_end, judge = _judge(supervise, lines)
    shown = b"".join(shown_at_once + shown_at_end)
    assert judge.hidden_tracebacks == 0
    assert sorted(shown_at_once + shown_at_end) == sorted(lines)  # nothing lost or hidden
    assert b"could not flush the log" in shown


def test_a_line_of_other_output_is_shown_at_once_even_with_markers_glued_on(
    supervise: ModuleType,
) -> None:
    judge = supervise.InterruptionOutput()
    assert not judge.take(b"^^^[INFO] Shutting down: Master\n")
    assert judge.take(b"^^^^    \n")
    assert judge.settle() == [b"^^^^    \n"]  # no traceback: nothing to count, shown


def _frame(path: Path, source: str, function: str) -> list[bytes]:
    """A frame as Python prints it, at the line of `path` that holds `source`."""
    number = path.read_text().splitlines().index(f"{' ' * _indent(path, source)}{source}") + 1
    return [f'  File "{path}", line {number}, in {function}\n'.encode(), f"    {source}\n".encode()]


def _indent(path: Path, source: str) -> int:
    line = next(line for line in path.read_text().splitlines() if line.strip() == source)
    return len(line) - len(line.lstrip())


def test_what_dagster_dev_and_the_mlflow_ui_print_on_ctrl_c_is_counted_not_shown(
    supervise: ModuleType,
) -> None:
    """A newcomer's stop (make demo, Ctrl-C) showed dagster dev's orphan watchers'
    KeyboardInterrupts, Dagster's "DagsterExecutionInterruptedError ... Stack Trace:" and the
    MLflow UI's log-prefixed traceback header; with every frame at its real line here."""
    import dagster

    package = Path(dagster.__file__).parent
    watcher = package / "_core/execution/scripts/watch_orphans.py"
    orphan_watcher = [
        b"Traceback (most recent call last):\n",
        *_frame(watcher, "watch(sys.argv[1:])", "<module>"),
        *_frame(watcher, "time.sleep(1)", "watch"),
        b"KeyboardInterrupt\n",
    ]
    executor = package / "_core/executor/multiprocess.py"
    interrupted_run = [
        b"\n",
        b"dagster._core.errors.DagsterExecutionInterruptedError\n",
        b"\n",
        b"Stack Trace:\n",
        *_frame(executor, "raise DagsterExecutionInterruptedError()", "execute"),
        b"\n",
    ]
    runners = Path(asyncio.__file__).parent / "runners.py"
    mlflow_ui = [
        b"2026/11/30 23:30:45 ERROR:    Traceback (most recent call last):\n",
        *_frame(runners, "return self._loop.run_until_complete(task)", "run"),
        b"KeyboardInterrupt\n",
    ]
    lines = [RUN_FAILURE + b"\n", *orphan_watcher, *orphan_watcher, *interrupted_run, *mlflow_ui]
    shown_at_once, shown_at_end, judge = _judge(supervise, lines)
    assert (shown_at_once, shown_at_end) == ([], [])
    assert (judge.hidden_tracebacks, judge.interrupted_runs) == (4, 1)
