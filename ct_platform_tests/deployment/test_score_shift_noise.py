"""The score-shift check against sampling noise, on real models' real scores.

A canary step at the defaults compares about 100 candidate requests with about 400 of
stable's. A model compared with itself at those counts has PSI over 0.2 (the default
limit) by chance alone in a share of periods that grows with how widely its scores spread
over the grid (a few % here, about one in five in a newcomer's demo); with `failure_limit`
0 each such period rolled a good canary back. Here the spec's model's real scores (bank
rows it was not trained on, on the server's score grid) are split at random into
100 "candidate" and 400 "stable" requests, many times with fixed seeds, and each split is
judged by the real analysis: a good candidate must fail at most `FALSE_ROLLBACK_BOUND` of
them, and the bad candidate of the delivery proofs (trained on flipped labels: shifted
scores) must fail every one, with the figures in its reason.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ct_platform.deployment.analysis import analyse, score_shift
from ct_platform.serving.bundle import Prediction, load_bundle
from ct_platform.serving.slot_stats import LATENCY_BOUNDS_MS, score_bins
from ct_platform.settings import AnalysisSpec, Spec
from ct_platform_tests.deployment.bad_candidates import fitted, shifted_candidate
from ct_platform_tests.deployment.conftest import cleaned
from ct_platform_tests.serving.conftest import parsed_rows

# A canary's first step at the defaults: min_requests candidate requests at a 20 % share.
CANDIDATE_N, STABLE_N = 100, 400
ANALYSES = 2000
# Stated bound on the share of a good candidate's analyses that fail on score shift alone.
FALSE_ROLLBACK_BOUND = 0.01
# The late campaigns (subscription rates of 20-50 %), where the served model's scores
# spread over many bins of the grid and the noise of a 100-request histogram is largest:
# the spec's model is fitted on `LATE_TRAIN` rows and scores the next `POOL_ROWS`.
LATE_START, LATE_TRAIN, POOL_ROWS = 30_000, 4_000, 5_000


@pytest.fixture(scope="module")
def late_rows(bank_spec: Spec, bank_frame: pd.DataFrame) -> pd.DataFrame:
    rows = bank_frame.iloc[LATE_START : LATE_START + LATE_TRAIN + POOL_ROWS]
    return cleaned(rows, bank_spec).reset_index(drop=True)


@pytest.fixture(scope="module")
def pool(late_rows: pd.DataFrame) -> pd.DataFrame:
    return late_rows.iloc[LATE_TRAIN:].reset_index(drop=True)


@pytest.fixture(scope="module")
def stable_bins(bank_spec: Spec, late_rows: pd.DataFrame, pool: pd.DataFrame) -> np.ndarray:
    """The spec's model as training fits it (its estimator and params) on the rows before
    the pool: each pool row's score bin on the server's grid."""
    train = late_rows.iloc[:LATE_TRAIN]
    model = fitted(bank_spec, train, train[bank_spec.dataset.target])
    proba = model.predict_proba(pool[bank_spec.dataset.feature_columns])
    return score_bins(Prediction(labels=None, proba=proba, values=None))


@pytest.fixture(scope="module")
def shifted_bins(
    bank_spec: Spec,
    train_holdout: tuple[pd.DataFrame, pd.DataFrame],
    pool: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> np.ndarray:
    """The delivery proofs' shifted candidate, bundled and scored by the server's backend."""
    train, holdout = train_holdout
    directory = tmp_path_factory.mktemp("shifted") / "bank_marketing-v3"
    bundle = shifted_candidate(bank_spec, train, holdout, directory, "3")
    return score_bins(load_bundle(bundle).predict(parsed_rows(pool, bank_spec)))


def totals(bins: np.ndarray) -> dict[str, Any]:
    """A slot's running totals as `GET /admin/stats` reports them, for these requests."""
    latency = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    latency[0] = len(bins)
    values, counts = np.unique(bins, return_counts=True)
    return {
        "requests": len(bins),
        "errors": 0,
        "latency": latency,
        "scores": {str(v): int(c) for v, c in zip(values, counts, strict=True)},
    }


def judge(spec: AnalysisSpec, candidate: np.ndarray, stable: np.ndarray) -> Any:
    start = {"latency_bounds_ms": list(LATENCY_BOUNDS_MS), "slots": {}}
    now = {
        "latency_bounds_ms": list(LATENCY_BOUNDS_MS),
        "slots": {"candidate": totals(candidate), "stable": totals(stable)},
    }
    return analyse(spec, period_start=start, rollout_start=start, now=now, regression=False)


def periods(
    candidate_bins: np.ndarray, stable_bins: np.ndarray, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`ANALYSES` periods: disjoint random requests from the pool, 100 answered by the
    candidate and 400 by stable (a sticky random split of the same traffic)."""
    rng = np.random.default_rng(seed)
    result = []
    for _ in range(ANALYSES):
        rows = rng.choice(len(stable_bins), CANDIDATE_N + STABLE_N, replace=False)
        result.append((candidate_bins[rows[:CANDIDATE_N]], stable_bins[rows[CANDIDATE_N:]]))
    return result


def test_a_candidate_scoring_like_stable_is_not_rolled_back_by_sampling_noise(
    stable_bins: np.ndarray,
) -> None:
    spec = AnalysisSpec()  # the defaults: min_requests 100, PSI limit 0.2, alpha 0.001
    draws = periods(stable_bins, stable_bins, seed=10)
    shifts = np.array(
        [score_shift(totals(c)["scores"], totals(s)["scores"], "psi") for c, s in draws]
    )
    verdicts = [judge(spec, candidate, stable) for candidate, stable in draws]
    failed = sum(verdict.verdict == "fail" for verdict in verdicts)
    over_limit = float(np.mean(shifts > spec.score_shift_max))
    print(
        f"\nsame model, {CANDIDATE_N} vs {STABLE_N} requests, {ANALYSES} periods: PSI median "
        f"{np.median(shifts):.3f}, p90 {np.quantile(shifts, 0.9):.3f}; PSI over "
        f"{spec.score_shift_max:g} in {over_limit:.1%} (the fixed-limit rule's rollbacks); "
        f"analyses failed: {failed} ({failed / ANALYSES:.2%}); score bins "
        f"{np.bincount(stable_bins).tolist()}"
    )
    # The noise is real at these counts: a fixed PSI limit alone rolls back good canaries.
    assert over_limit > 2 * FALSE_ROLLBACK_BOUND
    assert all(verdict.verdict in ("pass", "fail") for verdict in verdicts)
    assert failed / ANALYSES <= FALSE_ROLLBACK_BOUND


def test_shifted_candidate_is_rolled_back_at_the_first_step_with_its_figures(
    stable_bins: np.ndarray, shifted_bins: np.ndarray
) -> None:
    spec = AnalysisSpec()
    draws = periods(shifted_bins, stable_bins, seed=11)[:200]
    verdicts = [judge(spec, candidate, stable) for candidate, stable in draws]
    assert all(verdict.verdict == "fail" for verdict in verdicts)
    verdict = verdicts[0]
    figures = verdict.figures
    assert figures["score_shift"] > spec.score_shift_max
    assert figures["score_shift_p_value"] < spec.score_shift_alpha
    assert figures["score_reference_requests"] == STABLE_N
    match = re.fullmatch(
        r"score_shift_psi (\S+) over the limit 0\.2 and beyond sampling noise \(permutation "
        r"p = (\S+) < alpha 0\.001; 100 candidate vs 400 stable scores\)",
        verdict.reason,
    )
    assert match, verdict.reason
    assert float(match[1]) == pytest.approx(figures["score_shift"], rel=1e-3)
    assert float(match[2]) == pytest.approx(figures["score_shift_p_value"], rel=0.05)
