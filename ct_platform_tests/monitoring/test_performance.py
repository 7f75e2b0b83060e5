"""Decay detection on labelled live traffic, from real log + feedback files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ct_platform.monitoring.performance import evaluate_performance
from ct_platform.settings import Paths, Spec
from ct_platform_tests.monitoring.serving_logs import post_feedback, scored_batch, write_log

ROWS = 300  # above the spec's min_feedback_rows (200)
HOLDOUT_AUC = 0.88  # what the champion scored on its holdout


@pytest.fixture
def true_labels(spec: Spec, bank_features: pd.DataFrame) -> dict[str, int]:
    """Log ROWS rows scored by champion version 3; return labels the model mostly gets right
    (10 % disagree with its 0.5 cut), keyed by the rows' prediction-log request ids."""
    rng = np.random.default_rng(5)
    proba = rng.random(ROWS)
    batch = scored_batch(
        bank_features.iloc[:ROWS],
        spec.dataset,
        request_id="r",
        ts=1_800_000_000.0,
        positive_proba=proba,
        model_version="3",
    )
    write_log(Paths.from_env().predictions, [batch])
    labels = (proba > 0.5).astype(int)
    labels = np.where(rng.random(ROWS) < 0.1, 1 - labels, labels)
    return {f"r:{i}": int(label) for i, label in enumerate(labels)}


def test_no_decay_while_labels_agree(spec: Spec, true_labels: dict[str, int]) -> None:
    post_feedback(Paths.from_env().feedback, true_labels)
    result = evaluate_performance(spec, HOLDOUT_AUC, model_version="3")

    assert result.metric == "roc_auc" and result.n_labelled == ROWS
    assert result.value == pytest.approx(0.9, abs=0.05)
    assert not result.decayed and result.decay < result.tolerance
    assert result.status == "no decay"


def test_decay_when_labels_flip(spec: Spec, true_labels: dict[str, int]) -> None:
    post_feedback(Paths.from_env().feedback, true_labels)
    # The world changes: later feedback for the same requests says the opposite.
    post_feedback(Paths.from_env().feedback, {key: 1 - y for key, y in true_labels.items()})
    result = evaluate_performance(spec, HOLDOUT_AUC)

    assert result.value < 0.2
    assert result.decay == pytest.approx(HOLDOUT_AUC - result.value)
    assert result.decayed


def test_too_few_labels_give_no_verdict(spec: Spec, true_labels: dict[str, int]) -> None:
    few = dict(list(true_labels.items())[:150])
    post_feedback(Paths.from_env().feedback, {key: 1 - y for key, y in few.items()})
    result = evaluate_performance(spec, HOLDOUT_AUC)

    assert result.n_labelled == 150 and result.value is None and result.decayed is None
    assert result.status == "insufficient data: 150 labelled rows < minimum 200"


def test_too_few_labels_in_a_class_give_no_verdict(spec: Spec, true_labels) -> None:
    """Enough labelled rows, but only 12 of the positive class: ROC AUC on 12 positives is
    noise next to the decay tolerance, so there is no verdict, and the figures say why."""
    positives = [key for key, y in true_labels.items() if y == 1][:12]
    skewed = {key: (1 if key in positives else 0) for key in true_labels}
    post_feedback(Paths.from_env().feedback, skewed)
    result = evaluate_performance(spec, HOLDOUT_AUC)

    assert result.n_labelled == ROWS and result.value is None and result.decayed is None
    assert result.status == (
        f"insufficient data: labelled rows per class 0: {ROWS - 12}, 1: 12; minimum 30 per class"
    )

    post_feedback(Paths.from_env().feedback, dict.fromkeys(true_labels, 0))
    single = evaluate_performance(spec, HOLDOUT_AUC)
    assert (
        single.status == f"insufficient data: a single class among {ROWS} labelled rows (0: {ROWS})"
    )


def test_rows_of_another_model_version_do_not_count(spec: Spec, true_labels) -> None:
    post_feedback(Paths.from_env().feedback, {key: 1 - y for key, y in true_labels.items()})
    result = evaluate_performance(spec, HOLDOUT_AUC, model_version="4")
    assert result.n_labelled == 0 and not result.decayed
