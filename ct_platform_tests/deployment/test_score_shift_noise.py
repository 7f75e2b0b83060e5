"""The score-shift check against sampling noise, on real models' real scores.

A canary step at the defaults compares about 100 candidate requests with about 400 of
stable's. A model compared with itself at those counts has PSI over 0.2 (the default
limit) in about one period in five by chance alone; with `failure_limit` 0 that rolled a
good canary back as often. Here the served model's scores (its bundle scoring bank rows no
model trained on, through the server's own backend and score grid) are split at random into
100 "candidate" and 400 "stable" requests, many times with fixed seeds, and each split is
judged by the real analysis: a good candidate must fail at most `FALSE_ROLLBACK_BOUND` of
them, and the bad candidate of the delivery proofs (trained on flipped labels: shifted
scores) must fail every one, with the figures in its reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ct_platform.deployment.analysis import analyse, score_shift
from ct_platform.serving.bundle import load_bundle
from ct_platform.serving.slot_stats import LATENCY_BOUNDS_MS, score_bins
from ct_platform.settings import AnalysisSpec, Spec
from ct_platform.training.bundling import build_bundle
from ct_platform_tests.deployment.bad_candidates import fitted, shifted_candidate
from ct_platform_tests.deployment.conftest import HOLDOUT_ROWS, TRAIN_ROWS, cleaned
from ct_platform_tests.serving.conftest import parsed_rows

# A canary's first step at the defaults: min_requests candidate requests at a 20 % share.
CANDIDATE_N, STABLE_N = 100, 400
ANALYSES = 2000
# Stated bound on the share of a good candidate's analyses that fail on score shift alone.
FALSE_ROLLBACK_BOUND = 0.01
# Bank rows after the training and holdout rows: scored by every model, trained on by none.
POOL_ROWS = 10_000


@pytest.fixture(scope="module")
def pool(bank_spec: Spec, bank_frame: pd.DataFrame) -> pd.DataFrame:
    start = TRAIN_ROWS + HOLDOUT_ROWS
    return cleaned(bank_frame.iloc[start : start + POOL_ROWS], bank_spec).reset_index(drop=True)


def served_bins(bundle: Path, rows: pd.DataFrame, spec: Spec) -> np.ndarray:
    """The bin of each row's score on the server's grid, as the bundle's backend scores it."""
    return score_bins(load_bundle(bundle).predict(parsed_rows(rows, spec)))


@pytest.fixture(scope="module")
def stable_bins(
    bank_spec: Spec,
    train_holdout: tuple[pd.DataFrame, pd.DataFrame],
    pool: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> np.ndarray:
    """The spec's model as training fits it (its estimator and params), bundled and served."""
    train, holdout = train_holdout
    bundle = build_bundle(
        fitted(bank_spec, train, train[bank_spec.dataset.target]),
        bank_spec,
        name=bank_spec.model.name,
        version="1",
        fingerprint="served",
        holdout=holdout,
        directory=tmp_path_factory.mktemp("served") / "bank_marketing-v1",
    )
    return served_bins(bundle, pool, bank_spec)


@pytest.fixture(scope="module")
def shifted_bins(
    bank_spec: Spec,
    train_holdout: tuple[pd.DataFrame, pd.DataFrame],
    pool: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> np.ndarray:
    train, holdout = train_holdout
    directory = tmp_path_factory.mktemp("shifted") / "bank_marketing-v3"
    return served_bins(
        shifted_candidate(bank_spec, train, holdout, directory, "3"), pool, bank_spec
    )


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
    # The noise is real at these counts: a fixed PSI limit alone would roll back often.
    assert over_limit > 0.05
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
