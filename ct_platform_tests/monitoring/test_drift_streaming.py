"""The bounded-memory path: Parquet streamed in batches into summaries, sampled, and still
agreeing with full Evidently and with the exact tests on real bank data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from ct_platform.monitoring import sources
from ct_platform.monitoring.drift import ReferenceProfile, detect_drift
from ct_platform.monitoring.evidently_reports import evidently_drift
from ct_platform.monitoring.sources import summarise_file, summarise_frame
from ct_platform.monitoring.summaries import NumericSummary
from ct_platform.settings import Spec
from ct_platform_tests.monitoring.conftest import PLANTED, plant_drift

# Sample size of the sampled runs below. A normalised Wasserstein score from n-value samples
# of both sides has a standard error of at most about sqrt(2 / n) (a pure location shift: the
# error of a difference of two means, in standard deviations), 0.01 at n = 20,000; the
# Jensen-Shannon scores here are exact (streamed value counts).
SAMPLE = 20_000
SCORE_TOLERANCE = 0.04  # 4 standard errors
ROW_GROUP = 3_000
BATCH = 2_048  # rows per streamed batch here: many batches, so the merging is exercised


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "BATCH_ROWS", BATCH)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, ROW_GROUP)
    return path


def test_streamed_sampled_check_agrees_with_full_evidently(
    spec: Spec, bank_features: pd.DataFrame, streamed: None, tmp_path: Path
) -> None:
    """The whole bank data set (41,188 rows) against a drifted resample, both from Parquet in
    2,048-row batches, verdicts from 20,000-value samples: every column's method and verdict
    is Evidently's on the full data, and every score within SCORE_TOLERANCE of it."""
    rng = np.random.default_rng(3)
    current = bank_features.iloc[rng.permutation(len(bank_features))].reset_index(drop=True)
    current = plant_drift(current)
    reference_path = _write(bank_features, tmp_path / "reference.parquet")
    current_path = _write(current, tmp_path / "current.parquet")

    dataset = spec.dataset
    profile = ReferenceProfile.from_file(reference_path, dataset, sample_rows=SAMPLE)
    summary = summarise_file(current_path, dataset, SAMPLE, profile)
    fast = detect_drift(profile, summary, dataset, drift_share_threshold=0.3)
    full, _ = evidently_drift(bank_features, current, dataset, drift_share_threshold=0.3)

    assert summary.rows == len(current)
    assert sorted(fast.drifted_columns) == sorted(PLANTED)
    verdicts = {name: (c.method, c.drift) for name, c in fast.columns.items()}
    assert verdicts == {name: (c.method, c.drift) for name, c in full.columns.items()}
    for name, column in fast.columns.items():
        assert column.score == pytest.approx(full.columns[name].score, abs=SCORE_TOLERANCE), name


def test_streamed_summary_equals_the_frames(
    spec: Spec, bank_features: pd.DataFrame, streamed: None, tmp_path: Path
) -> None:
    """Counts, moments and the few-value counts do not depend on how the rows are batched;
    the typing of raw Parquet (sentinel 999, strings) matches `typed_features`."""
    raw = bank_features.assign(pdays=bank_features["pdays"].fillna(999.0))  # as landed
    path = _write(raw, tmp_path / "raw.parquet")
    dataset = spec.dataset
    from_file = summarise_file(path, dataset, SAMPLE)
    from_frame = summarise_frame(bank_features, dataset, SAMPLE)

    assert from_file.rows == from_frame.rows == len(bank_features)
    for name, column in from_frame.columns.items():
        other = from_file.columns[name]
        assert other.n == column.n, name
        if isinstance(column, NumericSummary):
            assert other.std == pytest.approx(column.std, rel=1e-9), name
            assert other.few_counts == column.few_counts, name
            assert len(other.sample) == min(SAMPLE, column.n), name
        else:
            assert other.counts == column.counts, name
    assert from_frame.columns["pdays"].n == bank_features["pdays"].notna().sum()


def test_ks_on_a_long_column_is_scipys_on_the_whole_column(
    spec: Spec, bank_features: pd.DataFrame, streamed: None, tmp_path: Path
) -> None:
    """Small reference (800 rows: Evidently's KS), current of 41,188 values summarised with a
    2,000-value sample: the KS statistic is counted exactly while streaming, and the p-value
    is scipy's `ks_2samp` on the two whole columns."""
    reference = bank_features.iloc[30_000:30_800].reset_index(drop=True)
    dataset = spec.dataset
    profile = ReferenceProfile.from_frame(reference, dataset)
    path = _write(bank_features, tmp_path / "current.parquet")
    summary = summarise_file(path, dataset, 2_000, profile)
    result = detect_drift(profile, summary, dataset, drift_share_threshold=0.5)

    assert not summary.columns["cons.conf.idx"].complete
    for name in ("age", "cons.conf.idx", "euribor3m", "nr.employed"):
        column = result.columns[name]
        assert column.method == "ks", name
        exact = stats.ks_2samp(reference[name].dropna(), bank_features[name].dropna())
        assert column.score == pytest.approx(exact.pvalue, rel=1e-9, abs=1e-300), name
        assert column.drift == (exact.pvalue <= 0.05), name
