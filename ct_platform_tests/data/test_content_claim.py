"""One landed content, one batch: ingests racing from separate processes store it once.

A newcomer's demo stored `batch-00006.csv` (a training run's catch-up) and, 11 s later,
`batch-00006.csv@322e222f3686` (the landing sensor's run): one file, two batches. These tests
race real processes on real files, released together by a barrier, and kill a process that
holds a claim.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from ct_platform.data.claims import claims_dir, content_claim
from ct_platform.data.ingest import find_valid_batch, ingest_batch
from ct_platform.data.landing import file_sha256, versioned_key
from ct_platform.settings import Spec, load_spec

# Spawned, not forked: a fork of the test process would copy its threads' locks mid-use.
SPAWN = multiprocessing.get_context("spawn")
ROUNDS = 3


def _ingest_when_released(spec_file: str, key: str, barrier, results) -> None:
    spec = load_spec(spec_file)
    barrier.wait()
    outcome = ingest_batch(key, spec, spec.paths)
    stored = outcome.valid is not None and not outcome.already_stored
    results.put((key, stored, outcome.duplicate_of, outcome.duplicate_note))


def _hold_claim_until_killed(ct_home: str, spec_file: str, content_hash: str, key: str, held):
    os.environ["CT_HOME"] = ct_home
    spec = load_spec(spec_file)
    with content_claim(spec.paths, content_hash, key):
        held.set()
        time.sleep(3600)  # killed long before


def _race(spec_file: Path, keys: list[str]) -> list[tuple[str, bool, str | None, str]]:
    barrier, results = SPAWN.Barrier(len(keys)), SPAWN.Queue()
    workers = [
        SPAWN.Process(target=_ingest_when_released, args=(str(spec_file), key, barrier, results))
        for key in keys
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    return outcomes


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_racing_ingests_of_one_content_store_one_batch_and_name_it(
    round_: int, spec_file: Path, spec: Spec, write_batch, bank_batch: pd.DataFrame
) -> None:
    """The catch-up's key (the name), the sensor's key (`<name>@<hash12>`) and the same bytes
    under another name, ingested at once: one batch, two duplicates naming it."""
    path = write_batch(bank_batch, "batch-00006.csv")
    shutil.copy(path, spec.landing_dir / "copy-of-00006.csv")
    content_hash = file_sha256(path)
    keys = [path.name, versioned_key(path.name, content_hash), "copy-of-00006.csv"]

    outcomes = _race(spec_file, keys)

    [winner] = [key for key, stored, _, _ in outcomes if stored]
    duplicates = sorted((key, of) for key, stored, of, _ in outcomes if not stored)
    assert duplicates == sorted((key, winner) for key in keys if key != winner)
    for key, stored, _, note in outcomes:
        expected = f"{key}: duplicate of batch {winner} (identical content, sha256 "
        assert note.startswith(expected) if not stored else note == ""
    assert [p.name for p in spec.paths.validated.glob("*.json")] == [f"{winner}.json"]
    assert find_valid_batch(spec.paths, winner).content_hash == content_hash
    # Asked again, each loser still says so; nothing was stored meanwhile.
    assert ingest_batch(keys[1] if winner != keys[1] else keys[0], spec, spec.paths).duplicate_of


def test_a_claim_killed_before_its_write_does_not_block_the_content(
    ct_home: Path, spec_file: Path, spec: Spec, write_batch, bank_batch: pd.DataFrame
) -> None:
    """A step killed between claim and write: the kernel drops its lock with the process, so
    the next ingest of that content finds no outcome and stores the batch."""
    path = write_batch(bank_batch, "batch-00007.csv")
    content_hash = file_sha256(path)
    key = versioned_key(path.name, content_hash)
    held = SPAWN.Event()
    holder = SPAWN.Process(
        target=_hold_claim_until_killed,
        args=(str(ct_home), str(spec_file), content_hash, key, held),
    )
    holder.start()
    try:
        assert held.wait(timeout=600)
        claim = claims_dir(spec.paths) / f"{content_hash}.lock"
        assert claim.read_text() == f"{key}\npid {holder.pid}\n"
        with claim.open("rb") as handle, pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while the holder lives
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()

    assert holder.exitcode == -signal.SIGKILL
    assert claim.exists()  # the file stays; only a live process's lock is a claim
    outcome = ingest_batch(path.name, spec, spec.paths)
    assert outcome.duplicate_of is None and outcome.passed and not outcome.already_stored
    assert [p.name for p in spec.paths.validated.glob("*.json")] == [f"{path.name}.json"]
    assert ingest_batch(key, spec, spec.paths).duplicate_of == path.name
