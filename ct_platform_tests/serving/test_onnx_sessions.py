"""The ONNX backend's two sessions: one thread for small requests, two for big ones."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from ct_platform.serving.bundle import WIDE_ROWS, WIDE_THREADS, load_bundle
from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import parsed_rows


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < WIDE_THREADS, reason="one core: no two-thread session"
)
def test_a_big_request_is_scored_by_the_two_thread_session_as_sklearn_scores_it(
    bundle_dir: Path, fitted_pipeline: Pipeline, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    """WIDE_ROWS rows go to the two-thread session, one row less to the one-thread
    session; both give sklearn's labels and, row by row, the one-thread session's
    probabilities (the threads split the work, not the arithmetic of a row)."""
    backend = load_bundle(bundle_dir).backend
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
