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
from statsmodels.stats.proportion import proportion_confint

from ct_platform.settings import Spec
from ct_platform.training.comparison import (
    BOOTSTRAP_CELL_BUDGET,
    BOOTSTRAP_RESAMPLES,
    SE_RESAMPLES,
    PairedComparison,
    compare,
    metric_interval,
)
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
    low, high, method = metric_interval(p, "roc_auc", 0.05)
    assert method == "delong" and low < auc < high and 0.02 < high - low < 0.1
    # Accuracy: Wilson's score interval of the share of rows predicted right.
    right = int(np.sum(p.target == p.predicted))
    wilson = proportion_confint(right, ROWS, alpha=0.05, method="wilson")
    assert metric_interval(p, "accuracy", 0.05) == pytest.approx((*wilson, "wilson"))
    # The seeded bootstrap for the rest: the same interval on every call.
    f1 = metric_interval(p, "f1", 0.05)
    assert f1 == metric_interval(p, "f1", 0.05) and f1[0] < f1_score(target, p.predicted) < f1[1]
    rng = np.random.default_rng(5)
    truth = rng.normal(100, 20, ROWS)
    regression = Predictions(truth, truth + rng.normal(0, 10, ROWS))
    mae_low, mae_high, by = metric_interval(regression, "mae", 0.05)
    t = stats.ttest_1samp(np.abs(truth - regression.predicted), 0.0).confidence_interval(0.95)
    assert by == "t" and (mae_low, mae_high) == pytest.approx((t.low, t.high))
    r2_low, r2_high, by = metric_interval(regression, "r2", 0.05)
    assert by == "bootstrap" and r2_low < r2_score(truth, regression.predicted) < r2_high
    one_row = metric_interval(Predictions(truth[:1], truth[:1]), "r2", 0.05)
    assert np.isnan(one_row.low) and np.isnan(one_row.high)


def test_accuracy_interval_is_newcombes_wilson_example() -> None:
    """Newcombe (Statistics in Medicine 17:857-872, 1998), table I: 81 of 263, Wilson's
    95 % interval 0.2553 to 0.3662."""
    truth = np.ones(263, int)
    predicted = np.r_[np.ones(81, int), np.zeros(182, int)]
    low, high, method = metric_interval(
        Predictions(truth, predicted, None, CLASSES), "accuracy", 0.05
    )
    assert method == "wilson" and (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


@pytest.mark.parametrize("metric", ["f1", "balanced_accuracy"])
def test_confusion_bootstrap_is_the_row_bootstrap(metric: str) -> None:
    """Resampling the confusion cells gives what resampling rows gives, three classes too."""
    rng = np.random.default_rng(8)
    classes = np.array(["a", "b", "c"])
    truth = rng.choice(classes, 2000, p=[0.6, 0.3, 0.1])
    predicted = np.where(rng.random(2000) < 0.7, truth, rng.choice(classes, 2000))
    other = np.where(rng.random(2000) < 0.6, truth, rng.choice(classes, 2000))
    score = {
        "f1": lambda t, g: f1_score(t, g, average="macro", labels=[0, 1, 2], zero_division=0),
        "balanced_accuracy": balanced_accuracy_score,
    }[metric]
    candidate = Predictions(truth, predicted, None, classes)
    champion = Predictions(truth, other, None, classes)

    low, high, method = metric_interval(candidate, metric, 0.05)
    paired = compare(candidate, champion, metric, 0.05)

    # The same labels as integer codes: scikit-learn is several times faster on them.
    codes = {
        name: np.searchsorted(classes, values)
        for name, values in (("truth", truth), ("predicted", predicted), ("other", other))
    }
    rows = rng.integers(0, 2000, (1000, 2000))
    alone = [score(codes["truth"][r], codes["predicted"][r]) for r in rows]
    differences = [
        a - score(codes["truth"][r], codes["other"][r]) for a, r in zip(alone, rows, strict=True)
    ]
    assert method == "bootstrap" and paired.method == "paired_bootstrap"
    assert (low, high) == pytest.approx(np.percentile(alone, [2.5, 97.5]), abs=0.004)
    assert paired.improvement == pytest.approx(
        score(codes["truth"], codes["predicted"]) - score(codes["truth"], codes["other"])
    )
    assert paired.standard_error == pytest.approx(np.std(differences), rel=0.1)
    assert (paired.ci_low, paired.ci_high) == pytest.approx(
        np.percentile(differences, [2.5, 97.5]), abs=0.005
    )


def test_a_big_holdouts_row_bootstrap_is_bounded_and_normal() -> None:
    """Beyond BOOTSTRAP_CELL_BUDGET: estimate +- z x the SE of SE_RESAMPLES resamples, and
    that SE is the delta method's for RMSE (sd of the squared errors / (2 RMSE sqrt(n)))
    within the stated Monte Carlo error."""
    rows = BOOTSTRAP_CELL_BUDGET // BOOTSTRAP_RESAMPLES + 1
    rng = np.random.default_rng(9)
    truth = rng.normal(100, 20, rows)
    errors = rng.standard_t(5, rows) * 10
    holdout = Predictions(truth, truth + errors)
    champion = Predictions(truth, truth + errors * 1.02)

    low, high, method = metric_interval(holdout, "rmse", 0.05)
    paired = compare(holdout, champion, "rmse", 0.05)

    rmse = float(np.sqrt(np.mean(errors**2)))
    delta_se = np.std(errors**2, ddof=1) / (2 * rmse * np.sqrt(rows))
    z = stats.norm.ppf(0.975)
    assert method == "bootstrap_normal" and paired.method == "paired_bootstrap_normal"
    assert (low + high) / 2 == pytest.approx(rmse)
    monte_carlo = 3 / np.sqrt(2 * (SE_RESAMPLES - 1))  # three of its standard errors
    assert (high - low) / (2 * z) == pytest.approx(delta_se, rel=monte_carlo)
    assert paired.ci_low == pytest.approx(paired.improvement - z * paired.standard_error)
    assert metric_interval(holdout, "rmse", 0.05) == (low, high, method)
