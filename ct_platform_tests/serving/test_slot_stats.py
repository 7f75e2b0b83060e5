"""Feedback credit through the bounded ring of recent answers (`slot_stats.RecentAnswers`)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from ct_platform.deployment.analysis import analyse
from ct_platform.serving.bundle import Prediction, load_bundle
from ct_platform.serving.slot_stats import (
    PROBABILITY_BINS,
    ClientStats,
    RecentAnswers,
    SlotStats,
    _one_row_bin,
    score_bins,
    score_counts,
)
from ct_platform.serving.slots import ServedModel
from ct_platform.settings import AnalysisSpec, Spec
from ct_platform_tests.serving.conftest import ThreadedServer, raw_rows, server_config


def _one_row(label: str, positive: float) -> Prediction:
    return Prediction(
        labels=np.array([label], dtype=object),
        proba=np.array([[1.0 - positive, positive]]),
        values=None,
    )


def test_feedback_credits_the_slot_that_answered_up_to_the_limit() -> None:
    stats = SlotStats(regression=False, recent_limit=3)
    stats.scored("stable", "a", 0.001, _one_row("yes", 0.9))
    stats.scored("candidate", "b", 0.001, _one_row("no", 0.2))
    stats.scored("shadow", "b", 0.001, _one_row("yes", 0.7))  # shadow answers are never credited
    stats.scored("stable", "c", 0.001, _one_row("no", 0.1))
    stats.scored("stable", "d", 0.001, _one_row("yes", 0.6))  # the fourth: "a" is forgotten
    stats.feedback(
        [
            {"request_id": "a", "label": "yes"},
            {"request_id": "b", "label": "no"},
            {"request_id": "c", "label": "yes"},
            {"request_id": "d", "label": "yes"},
            {"request_id": "d", "label": "yes"},  # already credited: a label counts once
            {"request_id": "unknown", "label": "yes"},
        ]
    )
    slots = stats.snapshot()["slots"]
    assert (slots["stable"]["labelled"], slots["stable"]["outcome_sum"]) == (2, 1.0)
    assert (slots["candidate"]["labelled"], slots["candidate"]["outcome_sum"]) == (1, 1.0)
    assert slots["shadow"]["labelled"] == 0
    assert slots["stable"]["requests"] == 3 and slots["shadow"]["requests"] == 1


def test_regression_feedback_sums_absolute_errors() -> None:
    stats = SlotStats(regression=True, recent_limit=10)
    prediction = Prediction(labels=None, proba=None, values=np.array([2.5]))
    stats.scored("stable", "r", 0.001, prediction)
    stats.feedback([{"request_id": "r", "label": 4.0}, {"request_id": "r", "label": 1.0}])
    stable = stats.snapshot()["slots"]["stable"]
    assert (stable["labelled"], stable["outcome_sum"], stable["outcome_sq_sum"]) == (1, 1.5, 2.25)


def test_ring_keeps_the_newest_answer_of_a_repeated_id_and_evicts_only_its_own() -> None:
    recent = RecentAnswers(3)
    recent.add("x", "stable", "yes")
    recent.add("y", "stable", "no")
    recent.add("x", "candidate", "no")  # x again: its newest answer wins
    assert len(recent) == 2
    recent.add("z", "stable", "yes")  # overwrites x's first position: x stays (newer one)
    assert recent.pop("x") == ("candidate", "no")
    recent.add("w", "stable", "yes")  # overwrites y's position: y forgotten
    assert recent.pop("y") is None
    assert recent.pop("x") is None  # popped once already
    recent.add("v", "stable", "no")  # overwrites x's newest position, already popped
    assert (recent.pop("z"), recent.pop("w"), recent.pop("v")) == (
        ("stable", "yes"),
        ("stable", "yes"),
        ("stable", "no"),
    )
    assert len(recent) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_a_one_row_score_lands_in_the_array_path_s_bin(dtype: type) -> None:
    """The one-row bin (a Python float; float32 through the precomputed least score of
    each bin) is the array path's: at each bin edge and its 4 nearest representable
    neighbours on both sides, 0 and 1, beyond [0, 1], NaN, and 5,000 random scores."""
    scores = [dtype(0), -0.0, 1.0000001, 1.5, -0.25, dtype("nan")]
    for edge in (dtype(k / PROBABILITY_BINS) for k in range(PROBABILITY_BINS + 1)):
        below = above = edge
        for _ in range(4):
            below, above = np.nextafter(below, dtype(-1)), np.nextafter(above, dtype(2))
            scores += [below, above]
        scores.append(edge)
    scores += list(np.random.default_rng(7).random(5_000).astype(dtype))
    for score in scores:
        for proba in ([[1 - score, score]], [[score, (1 - score) / 2, (1 - score) / 2]]):
            prediction = Prediction(labels=None, proba=np.array(proba, dtype=dtype), values=None)
            bins, counts = np.unique(score_bins(prediction), return_counts=True)
            expected = dict(zip(bins.tolist(), counts.tolist(), strict=True))
            assert score_counts(prediction) == expected, (score, proba)


def test_the_model_s_one_row_probabilities_take_the_python_bin(
    bundle_dir: Path, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    """What ONNX Runtime answers for a row (float32, shape (1, 2)) is binned without numpy
    (`_one_row_bin`), to the array path's bin."""
    served = ServedModel.of(load_bundle(bundle_dir), "reject", "ignore")
    for row in raw_rows(holdout, bank_spec, 20):
        prediction = served.model.predict(served.schema.from_records([row]))
        proba = prediction.proba
        assert proba is not None and proba.shape == (1, 2)
        fast = _one_row_bin(proba.item(1), proba.dtype)
        assert fast is not None and {fast: 1} == score_counts(prediction)
        assert fast == score_bins(prediction).item()


def test_a_keyed_request_counts_on_its_slot_and_client_alike() -> None:
    two_rows = Prediction(
        labels=np.array([0, 1]), proba=np.array([[0.9, 0.1], [0.2, 0.8]]), values=None
    )
    stats = SlotStats(regression=False)
    stats.scored("candidate", "r1", 0.3, two_rows, "alice")
    stats.scored("candidate", "r2", 0.001, _one_row("yes", 0.42), "alice")
    stats.scored("candidate", "r3", 0.001, _one_row("yes", 0.42))  # no key: slot only
    alone = ClientStats()
    alone.scored("candidate", "alice", 0.3, two_rows)
    alone.scored("candidate", "alice", 0.001, _one_row("yes", 0.42))
    snapshot = stats.snapshot()
    assert snapshot["clients"] == alone.snapshot()
    alice = snapshot["clients"]["candidate"]["alice"]
    assert (alice["requests"], alice["rows"], alice["scores"]) == (2, 3, {"2": 1, "16": 1, "8": 1})
    slot = snapshot["slots"]["candidate"]
    assert (slot["requests"], slot["rows"], slot["scores"]) == (3, 4, {"2": 1, "16": 1, "8": 2})


def test_a_regression_row_and_rows_count_in_their_asinh_bins() -> None:
    for values in ([2.5], [-1e6], [0.0, 0.1, 1e9, 0.1]):
        prediction = Prediction(labels=None, proba=None, values=np.array(values))
        bins, counts = np.unique(score_bins(prediction), return_counts=True)
        assert score_counts(prediction) == dict(zip(bins.tolist(), counts.tolist(), strict=True))
    assert score_counts(Prediction(labels=None, proba=None, values=np.array([2.5]))) == {6: 1}


def test_the_analysis_says_how_many_labels_of_multi_row_requests_it_could_not_credit(
    bundle_dir: Path, tmp_path: Path, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    """Labels of a multi-row request's rows (`<id>:<i>`) count in no slot's figures (the
    server keeps single-row answers only): the server counts them, and every analysis
    reason of the rollout names how many arrived, instead of leaving them unmentioned."""
    config = server_config(bundle_dir, tmp_path)
    token = {"authorization": "Bearer stats-token"}
    with ThreadedServer(config, env={config.admin_token_env: "stats-token"}) as server:
        url = server.url
        start = httpx.get(f"{url}/admin/stats", headers=token, timeout=60).json()
        rows = raw_rows(holdout, bank_spec, 3)
        for request_id, payload in (("one", rows[:1]), ("many", rows)):
            answer = httpx.post(
                f"{url}/invocations",
                json={"dataframe_records": payload},
                headers={"x-request-id": request_id},
                timeout=60,
            )
            assert answer.status_code == 200
        labels = [{"request_id": i, "label": 0} for i in ("one", "many:0", "many:2", "gone")]
        assert httpx.post(f"{url}/feedback", json=labels, timeout=60).json() == {"recorded": 4}
        now = httpx.get(f"{url}/admin/stats", headers=token, timeout=60).json()

    assert now["labels_not_credited"] == {"multi_row": 2, "unknown": 1}
    assert now["slots"]["stable"]["labelled"] == 1
    analysis = analyse(
        AnalysisSpec(),
        period_start=start,
        rollout_start=start,
        now=now,
        candidate_slot="stable",
        regression=False,
    )
    assert analysis.reason.endswith(
        "; 2 labels for rows of multi-row requests arrived since the rollout began: not "
        "credited to either slot (the server keeps the answers of single-row requests only)"
    )
    assert analysis.figures["labels_not_credited_multi_row"] == 2.0
    assert analysis.figures["labels_not_credited_unknown"] == 1.0
