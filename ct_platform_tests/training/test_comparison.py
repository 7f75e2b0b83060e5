"""The paired candidate-vs-champion test and the policy gate on it, on planted differences.

Issue 9's examples: a candidate significantly worse is blocked; one within noise follows the
spec's policy (non-inferiority passes, superiority fails).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from ct_platform.settings import Spec
from ct_platform.training.comparison import PairedComparison, compare, metric_interval
from ct_platform.training.evaluate import Predictions
from ct_platform.training.gates import GateResult, baseline_gate, champion_regression_gate
from ct_platform_tests.training.test_gates import _with_gates

ROWS = 3000
CLASSES = np.array([0, 1])


@pytest.fixture(scope="module")
def target() -> np.ndarray:
    """A holdout like the bank's: about 11 % positives."""
    return (np.random.default_rng(1).random(ROWS) < 0.11).astype(int)


def scored(target: np.ndarray, signal: float, seed: int) -> Predictions:
    """A classifier whose positive-class score is `signal` x truth + standard normal noise."""
    noise = np.random.default_rng(seed).normal(size=len(target))
    positive = 1 / (1 + np.exp(-(signal * target + noise - 1)))
    proba = np.column_stack([1 - positive, positive])
    return Predictions(target, (positive > 0.5).astype(int), proba, CLASSES)


def shared_noise(target: np.ndarray, signal: float, seed: int, own: float) -> Predictions:
    """Scores sharing the noise of `scored(target, 1.2, 0)`, plus `own` noise: a retrain."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=len(target))
    noise = base + own * np.random.default_rng(seed).normal(size=len(target))
    positive = 1 / (1 + np.exp(-(signal * target + noise - 1)))
    return Predictions(
        target, (positive > 0.5).astype(int), np.column_stack([1 - positive, positive]), CLASSES
    )


def policy(spec: Spec, name: str) -> Spec:
    return _with_gates(spec, champion_regression={"tolerance": 0.02, "policy": name, "alpha": 0.05})


def gate(comparison: PairedComparison, spec: Spec):
    return champion_regression_gate({"roc_auc": comparison.candidate}, comparison, spec)


def test_delong_matches_sklearn_auc_and_a_paired_bootstrap(target: np.ndarray) -> None:
    champion = scored(target, 1.2, seed=0)
    candidate = shared_noise(target, 1.0, seed=5, own=0.5)

    result = compare(candidate, champion, "roc_auc", alpha=0.05)

    assert result.method == "delong"
    assert result.candidate == pytest.approx(roc_auc_score(target, candidate.proba[:, 1]))
    assert result.champion == pytest.approx(roc_auc_score(target, champion.proba[:, 1]))
    assert result.improvement == pytest.approx(result.candidate - result.champion)
    # DeLong's standard error against a paired bootstrap's, on the same rows.
    rng = np.random.default_rng(3)
    differences = []
    for _ in range(150):
        rows = rng.integers(0, ROWS, ROWS)
        differences.append(
            roc_auc_score(target[rows], candidate.proba[rows, 1])
            - roc_auc_score(target[rows], champion.proba[rows, 1])
        )
    assert result.standard_error == pytest.approx(np.std(differences), rel=0.2)
    z = stats.norm.ppf(0.975)
    assert result.ci_low == pytest.approx(result.improvement - z * result.standard_error)
    assert result.p_value == pytest.approx(
        2 * stats.norm.sf(abs(result.improvement) / result.standard_error)
    )
    assert result.mde == pytest.approx((z + stats.norm.ppf(0.8)) * result.standard_error)


def test_a_candidate_significantly_worse_is_blocked(target: np.ndarray, bank_spec: Spec) -> None:
    champion = scored(target, 1.8, seed=0)
    candidate = scored(target, 0.6, seed=1)

    comparison = compare(candidate, champion, "roc_auc", alpha=0.05)
    result = gate(comparison, policy(bank_spec, "non_inferiority"))

    assert comparison.ci_high < 0 and comparison.p_value < 0.001
    assert result.passed is False and result.blocking
    # Plain Python values: the outcome is stored as JSON between steps.
    assert all(type(v) in (float, int, str, bool) for v in result.metadata.values())
    assert result.metadata["p_value"] == comparison.p_value
    assert result.metadata["mde"] == comparison.mde
    assert result.metadata["ci_low"] == comparison.ci_low
    assert f"non-inferiority: worse bound {comparison.ci_low:+.4f} < -0.0200" in result.description
    assert f"delong p {comparison.p_value:.3g}" in result.description


def test_a_candidate_within_noise_follows_the_policy(target: np.ndarray, bank_spec: Spec) -> None:
    champion = scored(target, 1.2, seed=0)
    candidate = shared_noise(target, 1.2, seed=7, own=0.15)

    comparison = compare(candidate, champion, "roc_auc", alpha=0.05)

    # Within noise: the interval holds 0 and stays inside the margin.
    assert comparison.ci_low < 0 < comparison.ci_high
    assert comparison.ci_low > -0.02
    assert gate(comparison, policy(bank_spec, "non_inferiority")).passed
    superiority = gate(comparison, policy(bank_spec, "superiority"))
    assert not superiority.passed
    assert f"superiority: worse bound {comparison.ci_low:+.4f} <= 0" in superiority.description


def test_the_verdict_is_plain_python_for_the_step_output_store(
    target: np.ndarray, bank_spec: Spec
) -> None:
    """Found by benchmarks/ct/replay.py: a numpy.bool verdict failed model_evaluation's output."""
    from pydantic import TypeAdapter

    comparison = compare(scored(target, 1.2, 3), scored(target, 1.2, 0), "roc_auc", alpha=0.05)
    verdict = gate(comparison, policy(bank_spec, "non_inferiority"))

    assert type(verdict.passed) is bool
    assert all(type(v) in (str, int, float) for v in comparison.figures().values())
    # What the JSON step-output store (defs/io.py) does with the evaluation's gates.
    assert TypeAdapter(GateResult).dump_python(verdict, mode="json")["passed"] is verdict.passed


def test_a_clearly_better_candidate_passes_superiority(target: np.ndarray, bank_spec: Spec) -> None:
    comparison = compare(
        scored(target, 2.5, seed=1), scored(target, 0.8, seed=0), "roc_auc", alpha=0.05
    )
    assert comparison.ci_low > 0
    assert gate(comparison, policy(bank_spec, "superiority")).passed


def test_accuracy_is_compared_row_by_row(target: np.ndarray) -> None:
    champion = scored(target, 3.0, seed=0)
    candidate = scored(target, 0.5, seed=1)

    result = compare(candidate, champion, "accuracy", alpha=0.05)

    assert result.method == "paired_t"
    assert result.candidate == pytest.approx(accuracy_score(target, candidate.predicted))
    assert result.improvement == pytest.approx(
        accuracy_score(target, candidate.predicted) - accuracy_score(target, champion.predicted)
    )
    assert result.ci_low <= result.improvement <= result.ci_high < 0


def test_other_metrics_use_a_seeded_paired_bootstrap(target: np.ndarray) -> None:
    champion = scored(target, 3.0, seed=0)
    candidate = scored(target, 0.5, seed=1)

    result = compare(candidate, champion, "f1", alpha=0.05)
    balanced = compare(candidate, champion, "balanced_accuracy", alpha=0.05)

    assert result.method == balanced.method == "paired_bootstrap"
    assert result.improvement == pytest.approx(
        f1_score(target, candidate.predicted) - f1_score(target, champion.predicted)
    )
    assert balanced.improvement == pytest.approx(
        balanced_accuracy_score(target, candidate.predicted)
        - balanced_accuracy_score(target, champion.predicted)
    )
    assert result.ci_low <= result.improvement <= result.ci_high < 0
    assert result.standard_error > 0 and result.mde > 0
    # Seeded: the same holdout gives the same verdict when a version is judged again.
    assert compare(candidate, champion, "f1", alpha=0.05) == result


def test_regression_errors_are_compared_row_by_row(synthetic_spec) -> None:
    rng = np.random.default_rng(4)
    truth = rng.normal(size=2000)
    champion = Predictions(truth, truth + rng.normal(scale=0.5, size=2000))
    worse = Predictions(truth, truth + rng.normal(scale=0.8, size=2000))
    spec = _with_gates(
        synthetic_spec("regression", "sklearn.linear_model.Ridge", "mae"),
        champion_regression={"tolerance": 0.05},
    )

    by_mae = compare(worse, champion, "mae", alpha=0.05)
    by_rmse = compare(worse, champion, "rmse", alpha=0.05)

    assert by_mae.method == "paired_t"
    errors = np.abs(truth - champion.predicted) - np.abs(truth - worse.predicted)
    assert by_mae.improvement == pytest.approx(errors.mean())
    assert by_mae.p_value == pytest.approx(
        stats.ttest_rel(np.abs(truth - champion.predicted), np.abs(truth - worse.predicted)).pvalue
    )
    assert by_mae.improvement < 0 and by_rmse.improvement < 0  # lower is better: worse < 0
    assert by_rmse.method == "paired_bootstrap" and by_rmse.ci_high < 0
    assert by_rmse.improvement == pytest.approx(
        np.sqrt(mean_squared_error(truth, champion.predicted))
        - np.sqrt(mean_squared_error(truth, worse.predicted))
    )
    by_r2 = compare(worse, champion, "r2", alpha=0.05)
    assert by_r2.improvement == pytest.approx(
        r2_score(truth, worse.predicted) - r2_score(truth, champion.predicted)
    )
    assert by_r2.ci_low <= by_r2.improvement <= by_r2.ci_high < 0
    assert not champion_regression_gate({"mae": by_mae.candidate}, by_mae, spec).passed


def test_scores_of_other_rows_are_refused(target: np.ndarray) -> None:
    other = scored(1 - target, 1.0, seed=0)
    with pytest.raises(ValueError, match="not scored on the same holdout rows"):
        compare(scored(target, 1.0, seed=0), other, "roc_auc", alpha=0.05)


def test_the_baseline_gate_passes_only_a_significantly_better_model(
    target: np.ndarray, bank_spec: Spec
) -> None:
    constant = np.full(ROWS, target.mean())
    prior = Predictions(
        target, np.zeros(ROWS, int), np.column_stack([1 - constant, constant]), CLASSES
    )
    what = "training class frequencies as probabilities"

    chance = compare(scored(target, 0.0, 3), prior, "roc_auc", 0.05)
    useful = compare(scored(target, 1.2, 3), prior, "roc_auc", 0.05)
    failed = baseline_gate({"roc_auc": chance.candidate}, chance, what, bank_spec)
    passed = baseline_gate({"roc_auc": useful.candidate}, useful, what, bank_spec)

    assert chance.champion == 0.5 and not failed.passed and failed.blocking
    assert f"better than the naive baseline ({what}) at 0.5000 on the same 3,000 holdout rows" in (
        failed.description
    )
    assert passed.passed and passed.description.startswith(
        f"roc_auc {useful.candidate:.4f} is better than the naive baseline"
    )
    assert passed.metadata["baseline"] == 0.5 and passed.metadata["method"] == "delong"
    off = _with_gates(bank_spec, baseline={"enabled": False})
    unjudged = baseline_gate({"roc_auc": chance.candidate}, chance, what, off)
    assert unjudged.passed and unjudged.description.startswith("not judged")


def test_metric_intervals_by_the_comparisons_methods(target: np.ndarray) -> None:
    p = scored(target, 1.2, 4)
    auc = roc_auc_score(target, p.proba[:, 1])
    low, high = metric_interval(p, "roc_auc", 0.05)
    assert low < auc < high and 0.02 < high - low < 0.1
    # Accuracy: 1 - the misclassification rate's t interval, bounds swapped.
    errors = (p.target != p.predicted).astype(float)
    t = stats.ttest_1samp(errors, 0.0).confidence_interval(0.95)
    assert metric_interval(p, "accuracy", 0.05) == pytest.approx((1 - t.high, 1 - t.low))
    # The seeded bootstrap for the rest: the same interval on every call.
    f1 = metric_interval(p, "f1", 0.05)
    assert f1 == metric_interval(p, "f1", 0.05) and f1[0] < f1_score(target, p.predicted) < f1[1]
    rng = np.random.default_rng(5)
    truth = rng.normal(100, 20, ROWS)
    regression = Predictions(truth, truth + rng.normal(0, 10, ROWS))
    mae_low, mae_high = metric_interval(regression, "mae", 0.05)
    assert mae_low < np.mean(np.abs(regression.target - regression.predicted)) < mae_high
    r2_low, r2_high = metric_interval(regression, "r2", 0.05)
    assert r2_low < r2_score(truth, regression.predicted) < r2_high
    one_row = metric_interval(Predictions(truth[:1], truth[:1]), "r2", 0.05)
    assert all(np.isnan(one_row))
