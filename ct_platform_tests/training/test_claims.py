"""The fingerprint claim: one holder among racing processes, taken over from a dead one."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

from ct_platform.training.claims import (
    Claim,
    claim_fingerprint,
    current_worker,
    release_claim,
    worker_alive,
)

FINGERPRINT = "ab12" * 16


def never_finished(run_id: str) -> bool:
    return False


def _race(directory: str, run_id: str, start, results) -> None:
    start.wait()
    claim = claim_fingerprint(Path(directory), FINGERPRINT, run_id, never_finished)
    results.put((run_id, claim.run_id))
    # Stay alive (holding) until every racer has answered.
    start.wait()


def test_racing_processes_get_exactly_one_claim(tmp_path: Path) -> None:
    racers = 6
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(racers), context.Queue()
    processes = [
        context.Process(target=_race, args=(str(tmp_path), f"run-{i}", start, results))
        for i in range(racers)
    ]
    for process in processes:
        process.start()
    answers = [results.get(timeout=120) for _ in range(racers)]
    for process in processes:
        process.join(timeout=120)

    winners = {run for run, holder in answers if run == holder}
    assert len(winners) == 1
    # Everybody else was told who holds it.
    assert {holder for _, holder in answers} == winners


def dead_worker() -> str:
    """The identity of a process that has exited (kill -9 looks the same from outside)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host, _, _ = current_worker().split(":")
    return f"{host}:{child.pid}:0"


def test_a_dead_holders_claim_is_taken_over(tmp_path: Path) -> None:
    stale = Claim(FINGERPRINT, "killed-run", dead_worker())
    (tmp_path / f"{FINGERPRINT}.json").write_text(
        f'{{"fingerprint": "{stale.fingerprint}", "run_id": "killed-run", '
        f'"worker": "{stale.worker}"}}'
    )
    assert not worker_alive(stale.worker)

    claim = claim_fingerprint(tmp_path, FINGERPRINT, "new-run", never_finished)

    assert claim.run_id == "new-run"


def test_a_live_holder_keeps_its_claim_until_its_run_finishes(tmp_path: Path) -> None:
    first = claim_fingerprint(tmp_path, FINGERPRINT, "first", never_finished)
    assert first.run_id == "first" and worker_alive(first.worker)

    assert claim_fingerprint(tmp_path, FINGERPRINT, "second", never_finished).run_id == "first"
    # Same live process, but its Dagster run has ended: the claim is stale.
    finished = claim_fingerprint(tmp_path, FINGERPRINT, "second", lambda run: run == "first")
    assert finished.run_id == "second"


def test_release_only_drops_the_callers_claim(tmp_path: Path) -> None:
    claim_fingerprint(tmp_path, FINGERPRINT, "holder", never_finished)

    release_claim(tmp_path, FINGERPRINT, "someone-else")
    assert claim_fingerprint(tmp_path, FINGERPRINT, "third", never_finished).run_id == "holder"

    release_claim(tmp_path, FINGERPRINT, "holder")
    assert claim_fingerprint(tmp_path, FINGERPRINT, "third", never_finished).run_id == "third"
