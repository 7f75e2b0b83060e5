"""The ONNX backend's two sessions: one thread for small requests, `batch_threads` for big
ones (the serving setting `serving.batch_threads`, `--batch-threads`)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from ct_platform.deployment.endpoint import server_arguments
from ct_platform.serving.__main__ import build_parser, config_from_args
from ct_platform.serving.bundle import WIDE_ROWS, load_bundle
from ct_platform.settings import ServingSpec, Spec
from ct_platform_tests.serving.conftest import (
    ThreadedServer,
    expected_labels,
    parsed_rows,
    raw_rows,
    server_config,
    split_payload,
)

CORES = len(os.sched_getaffinity(0))
# With one thread a session: one run, or two halves on two cores or more (`SPLIT_ROWS`).
RUNS_OF_A_BIG_REQUEST = 2 if CORES > 1 else 1


@pytest.mark.skipif(CORES < 2, reason="one core: no two-thread session")
def test_a_big_request_is_scored_by_the_two_thread_session_as_sklearn_scores_it(
    bundle_dir: Path, fitted_pipeline: Pipeline, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    """WIDE_ROWS rows go to the two-thread session, one row less to the one-thread
    session; both give sklearn's labels and, row by row, the one-thread session's
    probabilities (the threads split the work, not the arithmetic of a row)."""
    backend = load_bundle(bundle_dir, batch_threads=2).backend
    used: list[str] = []
    for name in ("_run", "_wide_run"):
        run = getattr(backend, name)
        spy = lambda names, feeds, options, run=run, name=name: (  # noqa: E731
            used.append(name) or run(names, feeds, options)
        )
        setattr(backend, name, spy)
    features = holdout[bank_spec.dataset.feature_columns].iloc[:WIDE_ROWS]
    big = backend.predict(parsed_rows(features, bank_spec))
    small = backend.predict(parsed_rows(features.iloc[:-1], bank_spec))
    assert used == ["_wide_run", "_run"]
    assert big.labels.tolist() == fitted_pipeline.predict(features).tolist()
    assert small.labels.tolist() == big.labels.tolist()[:-1]
    one_by_one = np.vstack(
        [backend.predict(parsed_rows(features.iloc[[i]], bank_spec)).proba for i in range(64)]
    )
    np.testing.assert_allclose(big.proba[:64], one_by_one, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        big.proba[:, 1], fitted_pipeline.predict_proba(features)[:, 1], rtol=0, atol=1e-4
    )


def test_one_row_inputs_and_the_direct_binding_score_as_session_run_does(
    bundle_dir: Path, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    """A one-row request is fed through this thread's reused input arrays and scored by
    the session's binding without `session.run`'s Python checks: the same outputs as
    `session.run` on freshly built inputs, row after row (nothing left from the last)."""
    backend = load_bundle(bundle_dir).backend
    features = holdout[bank_spec.dataset.feature_columns]
    for i in range(20):
        rows = parsed_rows(features.iloc[[i]], bank_spec)
        fresh = backend._session.run(backend._output_names, backend._feeds(rows))
        got = backend.predict(rows)
        assert got.labels.tolist() == fresh[0].ravel().tolist()
        np.testing.assert_array_equal(got.proba, fresh[1])


def _stable_backend(server: ThreadedServer) -> object:
    """The ONNX backend the running server scores stable's requests with (the app's
    `Server`, reached through its bound `/invocations` endpoint)."""
    app = server._server.config.app
    return app._invocations.__self__.state.stable.model.backend


def _used_runs(backend: object) -> list[str]:
    """Spies on the backend's two run callables: the names of those called, in order."""
    used: list[str] = []
    for name in ("_run", "_wide_run"):
        run = getattr(backend, name)
        if run is not None:
            spy = lambda names, feeds, options, run=run, name=name: (  # noqa: E731
                used.append(name) or run(names, feeds, options)
            )
            setattr(backend, name, spy)
    return used


def test_batch_threads_1_scores_every_request_with_the_one_thread_session(
    bundle_dir: Path, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    """`batch_threads=1`: no second session; a big request takes the one-thread session
    (in two halves at once on two cores, `test_split_rows`) and gets the same answer as
    from a two-thread big-request session."""
    single = load_bundle(bundle_dir, batch_threads=1).backend
    assert single._wide_session is None and single.batch_threads == 1
    used = _used_runs(single)
    features = holdout[bank_spec.dataset.feature_columns].iloc[:WIDE_ROWS]
    rows = parsed_rows(features, bank_spec)
    got = single.predict(rows)
    assert used == ["_run"] * RUNS_OF_A_BIG_REQUEST
    wide = load_bundle(bundle_dir, batch_threads=2).backend.predict(rows)
    assert got.labels.tolist() == wide.labels.tolist()
    np.testing.assert_allclose(got.proba, wide.proba, rtol=0, atol=1e-6)


def test_batch_threads_are_bounded_by_the_cores_the_process_may_use(bundle_dir: Path) -> None:
    backend = load_bundle(bundle_dir, batch_threads=64).backend
    assert backend.batch_threads == CORES
    assert (backend._wide_session is None) == (CORES == 1)


def test_the_spec_and_the_command_line_set_the_server_batch_threads(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serving.batch_threads` reaches the server through `--batch-threads`, which
    `CT_SERVING_BATCH_THREADS` sets when absent (containers); 1 when neither says."""
    arguments = server_arguments(ServingSpec(batch_threads=2), str(bundle_dir), "127.0.0.1", 1)
    assert config_from_args(build_parser().parse_args(arguments)).batch_threads == 2
    assert ServingSpec().batch_threads == 1
    assert config_from_args(build_parser().parse_args([])).batch_threads == 1
    monkeypatch.setenv("CT_SERVING_BATCH_THREADS", "2")
    assert config_from_args(build_parser().parse_args([])).batch_threads == 2


@pytest.mark.parametrize("batch_threads", [1, 2])
def test_a_server_scores_a_big_request_with_its_batch_threads_setting(
    batch_threads: int,
    bundle_dir: Path,
    fitted_pipeline: Pipeline,
    holdout: pd.DataFrame,
    bank_spec: Spec,
    tmp_path: Path,
) -> None:
    """Over HTTP: a 600-row request to a server run with either setting is scored by the
    session of that many threads (at most the cores), with sklearn's labels."""
    config = server_config(bundle_dir, tmp_path, batch_threads=batch_threads)
    with ThreadedServer(config) as server:
        backend = _stable_backend(server)
        assert backend.batch_threads == min(batch_threads, CORES)
        used = _used_runs(backend)
        payload = split_payload(raw_rows(holdout, bank_spec, 600))
        response = httpx.post(f"{server.url}/invocations", json=payload, timeout=60)
    assert response.status_code == 200, response.text
    expected = expected_labels(fitted_pipeline, holdout, bank_spec, 600)
    assert response.json()["predictions"] == expected
    assert used == (
        ["_wide_run"] if min(batch_threads, CORES) > 1 else ["_run"] * RUNS_OF_A_BIG_REQUEST
    )
