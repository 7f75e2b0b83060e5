"""A big request scored as two halves at once by the one-thread ONNX session (`batch_threads`
1, two cores or more): the caller scores the first half, the backend's helper thread the
second, or the caller both when the helper has not started on it ("take-back"). The
answers are bitwise those of one unsplit run of the same session."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ct_platform.serving.bundle import SPLIT_ROWS, WIDE_ROWS, OnnxBackend, load_bundle
from ct_platform.serving.schema import ParsedRows
from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import parsed_rows, season_bundle

CORES = len(os.sched_getaffinity(0))
pytestmark = pytest.mark.skipif(CORES < 2, reason="one core: requests are never split")
ROW_COUNTS = [SPLIT_ROWS - 1, SPLIT_ROWS, SPLIT_ROWS + 1, 1001]


class RunLog:
    """Wraps a backend's one-thread run callable (the real one): records, per call, the
    thread and the rows it scored. `hold_caller`: the calling thread's call waits until
    the helper's call has begun, so both halves are certain to overlap."""

    def __init__(self, backend: OnnxBackend, *, hold_caller: bool = False) -> None:
        self.calls: list[tuple[str, int]] = []
        self._helper_started = threading.Event()
        self._hold_caller = hold_caller
        self._caller = threading.current_thread().name
        self._real = backend._run
        backend._run = self

    def __call__(self, names: list[str], feeds: dict[str, np.ndarray], options: Any) -> Any:
        thread = threading.current_thread().name
        if thread != self._caller:
            self._helper_started.set()
        elif self._hold_caller:
            assert self._helper_started.wait(60), "the helper never started its half"
        self.calls.append((thread, len(next(iter(feeds.values())))))
        return self._real(names, feeds, options)


def unsplit(backend: OnnxBackend, rows: ParsedRows) -> list[np.ndarray]:
    """The one-thread session's outputs in one run on all the rows."""
    return backend._session.run(backend._output_names, backend._feeds(rows))


def assert_bitwise_classification(got: Any, expected: list[np.ndarray]) -> None:
    assert got.labels.dtype == expected[0].dtype
    np.testing.assert_array_equal(got.labels, expected[0].ravel(), strict=True)
    np.testing.assert_array_equal(got.proba, expected[1], strict=True)


def assert_scored_in_halves(log: RunLog, n_rows: int) -> None:
    """From `SPLIT_ROWS` rows: the caller scored the first half, the helper the second;
    below: one run in the caller."""
    if n_rows < SPLIT_ROWS:
        assert log.calls == [("MainThread", n_rows)]
    else:
        half = n_rows // 2
        assert sorted(log.calls) == [("MainThread", half), ("onnx-half_0", n_rows - half)]


def seasons_rows(n_rows: int) -> ParsedRows:
    """`n_rows` rows for the seasons regression bundle: `season` "1".."4", `temp` float."""
    rng = np.random.default_rng(n_rows)
    numeric = rng.normal(15, 8, (1, n_rows))
    season = rng.integers(1, 5, n_rows).astype(str).astype(object)
    return ParsedRows(n_rows=n_rows, columns=[season, numeric[0]], numeric=numeric)


@pytest.fixture(scope="module")
def seasons_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return season_bundle(tmp_path_factory.mktemp("seasons"))


@pytest.mark.parametrize("n_rows", ROW_COUNTS)
def test_classification_halves_are_bitwise_one_run(
    n_rows: int, bundle_dir: Path, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    """From `SPLIT_ROWS` rows on, the caller scores rows [:n/2] while the helper thread
    scores [n/2:]; labels and probabilities, concatenated in order, are bitwise those of
    one run. One row less: one run, in the caller."""
    backend = load_bundle(bundle_dir).backend
    log = RunLog(backend, hold_caller=n_rows >= SPLIT_ROWS)
    rows = parsed_rows(holdout[bank_spec.dataset.feature_columns].iloc[:n_rows], bank_spec)
    got = backend.predict(rows)
    assert_bitwise_classification(got, unsplit(backend, rows))
    assert_scored_in_halves(log, n_rows)


@pytest.mark.parametrize("n_rows", ROW_COUNTS)
def test_regression_halves_are_bitwise_one_run(n_rows: int, seasons_dir: Path) -> None:
    backend = load_bundle(seasons_dir).backend
    log = RunLog(backend, hold_caller=n_rows >= SPLIT_ROWS)
    rows = seasons_rows(n_rows)
    got = backend.predict(rows)
    assert got.labels is None and got.proba is None
    np.testing.assert_array_equal(got.values, unsplit(backend, rows)[0].ravel(), strict=True)
    assert_scored_in_halves(log, n_rows)


def test_one_row_is_scored_in_one_run_by_the_caller(
    bundle_dir: Path, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    backend = load_bundle(bundle_dir).backend
    log = RunLog(backend)
    rows = parsed_rows(holdout[bank_spec.dataset.feature_columns].iloc[:1], bank_spec)
    assert_bitwise_classification(backend.predict(rows), unsplit(backend, rows))
    assert log.calls == [("MainThread", 1)]


def test_batch_threads_2_has_no_helper_and_never_splits(
    bundle_dir: Path, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    """With a two-thread session for `WIDE_ROWS` rows or more, there is no helper thread:
    one row less is one run of the one-thread session in the caller, as before; 1,001
    rows one run of the two-thread session."""
    backend = load_bundle(bundle_dir, batch_threads=2).backend
    assert backend._halves is None
    log = RunLog(backend)
    features = holdout[bank_spec.dataset.feature_columns]
    below = parsed_rows(features.iloc[: WIDE_ROWS - 1], bank_spec)
    assert_bitwise_classification(backend.predict(below), unsplit(backend, below))
    wide = backend.predict(parsed_rows(features.iloc[:1001], bank_spec))
    assert len(wide.labels) == 1001
    assert log.calls == [("MainThread", WIDE_ROWS - 1)]


def test_the_caller_takes_back_the_second_half_from_a_busy_helper(
    bundle_dir: Path, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    """The helper thread is held by another task: the caller cancels the queued second
    half and scores it itself, so the request never waits for the helper; the answer is
    still bitwise one run's, and the helper never scores the cancelled half afterwards."""
    backend = load_bundle(bundle_dir).backend
    started, release = threading.Event(), threading.Event()
    blocker: Future = backend._halves.submit(lambda: started.set() or release.wait(60))
    assert started.wait(60)
    log = RunLog(backend)
    rows = parsed_rows(holdout[bank_spec.dataset.feature_columns].iloc[:1001], bank_spec)
    try:
        got = backend.predict(rows)
    finally:
        release.set()
    assert blocker.result(60) is True
    backend._halves.submit(lambda: None).result(60)  # the helper's queue has drained
    assert_bitwise_classification(got, unsplit(backend, rows))
    assert log.calls == [("MainThread", 500), ("MainThread", 501)]
