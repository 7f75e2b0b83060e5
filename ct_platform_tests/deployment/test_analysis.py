"""The rollout analysis on hand-made server snapshots: figures, verdicts, the A/B statistics."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy.stats import hypergeom, norm

from ct_platform.deployment.analysis import (
    Analysis,
    LatencyReference,
    ab_test,
    analyse,
    client_windows,
    latency_reference,
    p99_ms,
    required_sample_size,
    score_shift,
    slot_window,
    slower_than,
)
from ct_platform.serving.bundle import Prediction
from ct_platform.serving.slot_stats import LATENCY_BOUNDS_MS, ClientStats, SlotStats, client_key
from ct_platform.serving.transport import HttpError, ModelFailure
from ct_platform.settings import AbSpec, AnalysisSpec

BOUNDS = list(LATENCY_BOUNDS_MS)


def totals(
    requests: int,
    *,
    errors: int = 0,
    refused: int = 0,
    latency_ms: float = 1.0,
    scores: dict[str, int] | None = None,
    labelled: int = 0,
    correct: int = 0,
) -> dict[str, Any]:
    latency = [0] * (len(BOUNDS) + 1)
    latency[next(i for i, bound in enumerate(BOUNDS) if bound >= latency_ms)] = requests
    return {
        "requests": requests,
        "errors": errors,
        "refused": refused,
        "latency": latency,
        "scores": scores if scores is not None else {"1": requests},
        "compared_rows": 0,
        "agreeing_rows": 0,
        "labelled": labelled,
        "outcome_sum": float(correct),
        "outcome_sq_sum": float(correct),
    }


def snapshot(**slots: dict[str, Any]) -> dict[str, Any]:
    return {"latency_bounds_ms": BOUNDS, "slots": slots}


SPEC = AnalysisSpec(min_requests=100, p99_latency_ms_max=50)


def test_the_period_is_the_difference_of_two_snapshots_and_a_reset_starts_over() -> None:
    before = snapshot(candidate=totals(100, errors=1))
    after = snapshot(candidate=totals(300, errors=4))
    assert (
        slot_window(before, after, "candidate").requests,
        slot_window(before, after, "candidate").errors,
    ) == (200, 3)
    restarted = snapshot(candidate=totals(50))
    assert slot_window(before, restarted, "candidate").requests == 50


def test_a_candidate_over_the_error_or_latency_limit_fails_with_its_figures() -> None:
    start = snapshot()
    now = snapshot(stable=totals(800), candidate=totals(195, errors=5, latency_ms=80))
    result = analyse(SPEC, period_start=start, rollout_start=start, now=now, regression=False)
    assert result.verdict == "fail"
    assert result.figures["candidate_requests"] == 200.0
    assert result.figures["candidate_error_rate"] == 0.025
    assert 80 <= result.figures["candidate_p99_ms"] < 100
    assert result.reason.startswith(
        "error_rate 0.025 over the limit 0.01 (5 of 200 candidate requests failed on the "
        "server's side); p99_latency_ms "
    )


def test_too_few_requests_wait_and_a_shifted_score_histogram_fails() -> None:
    start = snapshot()
    few = snapshot(stable=totals(800), candidate=totals(99))
    assert (
        analyse(SPEC, period_start=start, rollout_start=start, now=few, regression=False).verdict
        == "wait"
    )
    shifted = snapshot(
        stable=totals(800, scores={"1": 800}), candidate=totals(200, scores={"18": 200})
    )
    result = analyse(SPEC, period_start=start, rollout_start=start, now=shifted, regression=False)
    assert result.verdict == "fail" and result.figures["score_shift"] > 5


def test_score_shift_is_zero_for_equal_shapes_and_js_is_bounded() -> None:
    assert score_shift({"1": 10, "2": 30}, {"1": 100, "2": 300}, "psi") < 1e-3  # smoothing
    distance = score_shift({"1": 1000}, {"19": 1000}, "jensen_shannon")
    assert 0.99 < distance <= 1.0


def test_p99_is_the_bucket_bound_holding_the_99th_percentile() -> None:
    window = slot_window(None, snapshot(candidate=totals(1000, latency_ms=2.0)), "candidate")
    assert p99_ms(window, BOUNDS) == next(bound for bound in BOUNDS if bound >= 2.0)


def test_sample_size_matches_the_normal_approximation() -> None:
    ab = AbSpec(baseline_rate=0.8, minimum_effect=0.15, alpha=0.05, power=0.8, split=0.5)
    h = 2 * math.asin(math.sqrt(0.95)) - 2 * math.asin(math.sqrt(0.8))
    by_hand = (norm.ppf(0.975) + norm.ppf(0.8)) ** 2 * 2 / h**2
    assert required_sample_size(ab, regression=False, outcome_sd=None) == math.ceil(by_hand)


def test_two_proportions_find_a_planted_difference_and_not_a_null_one() -> None:
    def arm(labelled: int, correct: int) -> Any:
        return slot_window(
            None, snapshot(x=totals(labelled, labelled=labelled, correct=correct)), "x"
        )

    planted = ab_test(arm(200, 120), arm(200, 190), regression=False)
    assert planted.p_value < 1e-6 and planted.candidate_better(regression=False)
    assert planted.effect == 0.95 - 0.6
    null = ab_test(arm(200, 170), arm(200, 170), regression=False)
    assert null.p_value == 1.0 and null.effect == 0.0


def test_at_full_traffic_the_score_shift_is_not_judged_against_other_periods() -> None:
    rollout_start = snapshot()
    # Earlier periods: stable scored bin 1 and 2 evenly; this period the candidate alone
    # answers and scores mostly bin 1 (time-ordered traffic moved). Against stable's earlier
    # scores that is PSI ~0.2+; it must not be judged, and the reason must say so.
    period_start = snapshot(stable=totals(800, scores={"1": 400, "2": 400}), candidate=totals(200))
    now = snapshot(
        stable=totals(800, scores={"1": 400, "2": 400}),
        candidate=totals(400, scores={"1": 300, "2": 100}),
    )
    result = analyse(
        SPEC, period_start=period_start, rollout_start=rollout_start, now=now, regression=False
    )
    assert result.figures["stable_requests"] == 0.0
    assert result.figures["candidate_requests"] == 200.0
    assert "score_shift" not in result.figures
    assert result.verdict == "pass"
    assert result.reason == (
        "2 checks passed; refusals not judged: stable had 0 requests in this period, 100 "
        "needed; score shift not judged: stable scored 0 requests in this period, 100 needed"
    )


def test_a_shift_over_the_limit_within_sampling_noise_passes_and_says_its_p_value() -> None:
    start = snapshot()
    # Two uniform draws over the 20 bins (numpy seed 0): PSI 0.235 from chance alone.
    candidate = [9, 5, 2, 2, 1, 6, 5, 8, 3, 3, 8, 5, 7, 6, 7, 3, 7, 6, 3, 4]
    stable = [19, 24, 22, 16, 15, 19, 15, 12, 19, 20, 20, 24, 17, 18, 21, 22, 21, 24, 25, 27]
    now = snapshot(
        stable=totals(400, scores={str(b): n for b, n in enumerate(stable)}),
        candidate=totals(100, scores={str(b): n for b, n in enumerate(candidate)}),
    )
    result = analyse(SPEC, period_start=start, rollout_start=start, now=now, regression=False)
    shift = result.figures["score_shift"]
    assert shift > SPEC.score_shift_max, shift
    assert result.verdict == "pass", result.reason
    assert 0.2 < result.figures["score_shift_p_value"] <= 1.0


def test_the_server_counts_refusals_apart_from_its_own_failures() -> None:
    stats = SlotStats(regression=False)
    stats.error("candidate", HttpError(422, "BAD_REQUEST", "column 'age' ..."))
    stats.error("candidate", HttpError(413, "BAD_REQUEST", "too many rows"))
    stats.error("candidate", HttpError(503, "INTERNAL_ERROR", "overloaded"))
    # The model raising on validated input is answered 400 (MLflow) but is the server's.
    stats.error("candidate", ModelFailure(400, "BAD_REQUEST", "model failed"))
    totals = stats.snapshot()["slots"]["candidate"]
    assert (totals["refused"], totals["errors"]) == (2, 2)


def test_a_burst_of_bad_requests_is_judged_against_stable_not_as_errors() -> None:
    # 30 requests that break the contract, split like all traffic: 6 reach the candidate
    # (20 %), 24 stable. Counted as errors that was 6/200 = 0.03 over error_rate_max 0.01,
    # a rollback of a good model; stable's 24 counted for nothing.
    start = snapshot()
    now = snapshot(
        stable=totals(800, refused=24, scores={"1": 400, "2": 400}),
        candidate=totals(200, refused=6, scores={"1": 100, "2": 100}),
    )
    result = analyse(SPEC, period_start=start, rollout_start=start, now=now, regression=False)
    assert result.verdict == "pass", result.reason
    assert result.reason == "4 checks passed"
    figures = result.figures
    assert figures["candidate_error_rate"] == 0.0
    assert figures["candidate_requests"] == 206.0 and figures["stable_requests"] == 824.0
    assert figures["candidate_refusal_rate"] == 6 / 206
    assert figures["stable_refusal_rate"] == 24 / 824
    assert figures["refusal_rate_excess"] == 0.0


def test_a_candidate_refusing_what_stable_accepts_fails_with_both_rates() -> None:
    # A contract tightened by mistake: the candidate refuses 30 of its 230 requests, stable
    # 4 of its 804 on the same period's traffic.
    start = snapshot()
    now = snapshot(stable=totals(800, refused=4), candidate=totals(200, refused=30))
    result = analyse(SPEC, period_start=start, rollout_start=start, now=now, regression=False)
    assert result.verdict == "fail"
    assert result.figures["candidate_error_rate"] == 0.0
    assert result.figures["refusal_rate_excess"] == 30 / 230 - 4 / 804
    p_value = result.figures["refusal_p_value"]
    assert p_value < 1e-15
    assert result.reason == (
        "refusal_rate 0.1304 (30 of 230 candidate requests refused as the client's fault) "
        "exceeds stable's 0.004975 (4 of 804) by 0.1255, over the limit 0.01 and beyond "
        f"sampling noise (Fisher's exact p = {p_value:.2g} < alpha 0.001)"
    )


def test_an_excess_of_refusals_within_sampling_noise_passes() -> None:
    # 2 of 102 against 1 of 402: 1.7 points more, over the limit, but p = 0.106.
    start = snapshot()
    now = snapshot(stable=totals(401, refused=1), candidate=totals(100, refused=2))
    result = analyse(SPEC, period_start=start, rollout_start=start, now=now, regression=False)
    assert result.verdict == "pass", result.reason
    assert round(result.figures["refusal_rate_excess"], 6) == 0.01712
    assert round(result.figures["refusal_p_value"], 4) == 0.1057


def test_a_candidate_failing_every_request_gets_a_verdict() -> None:
    # Nothing scored: only failures. They are requests routed to it, so the period counts.
    start = snapshot()
    now = snapshot(stable=totals(800), candidate=totals(0, errors=150, scores={}))
    result = analyse(SPEC, period_start=start, rollout_start=start, now=now, regression=False)
    assert result.verdict == "fail"
    assert result.reason.startswith(
        "error_rate 1 over the limit 0.01 (150 of 150 candidate requests failed"
    )


def latencies(requests_by_ms: dict[float, int]) -> dict[str, Any]:
    """A slot's totals with `requests_by_ms[ms]` requests in the bucket holding `ms`."""
    slot = totals(sum(requests_by_ms.values()))
    slot["latency"] = [0] * (len(BOUNDS) + 1)
    for ms, count in requests_by_ms.items():
        slot["latency"][next(i for i, bound in enumerate(BOUNDS) if bound >= ms)] += count
    return slot


# The demo's analysis (deploy/demo.sh): 50 requests a period, the default p99 limit 250 ms.
DEMO = AnalysisSpec(min_requests=50)


def test_a_loaded_server_slowing_both_slots_does_not_roll_back_the_candidate() -> None:
    # The newcomer's v5 (the serving v3's estimator) at 80 % on a loaded box, 600 requests in
    # the period: candidate p99 385.2 ms (7 of 480 slower than 246.5 ms), stable p99 246.5 ms
    # (1 of 120). Judged on the limit alone this rolled back a good candidate.
    start = snapshot()
    now = snapshot(
        candidate=latencies({5.0: 473, 300.0: 2, 380.0: 5}),
        stable=latencies({5.0: 117, 240.0: 2, 300.0: 1}),
    )
    result = analyse(DEMO, period_start=start, rollout_start=start, now=now, regression=False)
    assert result.verdict == "pass", result.reason
    figures = result.figures
    assert (figures["candidate_p99_ms"], figures["stable_p99_ms"]) == (385.186, 246.519)
    assert (figures["candidate_slow_requests"], figures["stable_slow_requests"]) == (7.0, 1.0)
    assert figures["slow_share_excess"] == 7 / 480 - 1 / 120
    # 8 slow requests among 600, 480 of them the candidate's: P(at least 7 of the 8 there).
    p_value = hypergeom.sf(6, 600, 8, 480)
    assert math.isclose(figures["latency_p_value"], p_value, rel_tol=1e-9)
    assert 0.5 < p_value < 0.6
    assert result.reason == (
        "4 checks passed; p99_latency_ms 385.2 over the limit 250 (7 of 480 candidate "
        "requests slower than 246.5 ms); stable's p99 246.5 ms (1 of 120 requests slower "
        "than 246.5 ms) in the same period: the candidate's share of slow requests exceeds "
        "stable's by 0.00625, within the margin 0.01, within sampling noise (Fisher's exact "
        f"p = {p_value:.2g} >= alpha 0.001): as slow as stable (a loaded server), passed"
    )


def test_a_candidate_slower_than_stable_fails_with_both_p99s() -> None:
    # 20 %: 30 of the candidate's 100 requests take 300-400 ms, 4 of stable's 400 do (1 %:
    # stable's p99 stays in the 5 ms bucket).
    start = snapshot()
    now = snapshot(
        candidate=latencies({5.0: 70, 300.0: 20, 380.0: 10}),
        stable=latencies({5.0: 396, 300.0: 4}),
    )
    result = analyse(DEMO, period_start=start, rollout_start=start, now=now, regression=False)
    assert result.verdict == "fail"
    p_value = hypergeom.sf(29, 500, 34, 100)
    assert math.isclose(result.figures["latency_p_value"], p_value, rel_tol=1e-9)
    assert p_value < 1e-15
    assert result.reason == (
        "p99_latency_ms 385.2 over the limit 250 (30 of 100 candidate requests slower than "
        "246.5 ms); stable's p99 5.551 ms (4 of 400 requests slower than 246.5 ms) in the "
        "same period: the candidate's share of slow requests exceeds stable's by 0.29, over "
        f"the margin 0.01, beyond sampling noise (Fisher's exact p = {p_value:.2g} < alpha "
        "0.001)"
    )


def test_with_no_period_of_enough_stable_traffic_latency_is_judged_on_the_limit_alone() -> None:
    # A canary whose only step is 100 % (stable answers nothing, and never did beside it),
    # and a first step with 20 stable requests: no reference for the box's speed at all.
    start = snapshot()
    for stable, seen in ((totals(0, scores={}), ""), (latencies({300.0: 20}), "p99 308.1 ms, ")):
        now = snapshot(candidate=latencies({5.0: 95, 300.0: 5}), stable=stable)
        result = analyse(DEMO, period_start=start, rollout_start=start, now=now, regression=False)
        assert result.verdict == "fail"
        stable_answered = sum(stable["latency"])
        assert result.reason == (
            "p99_latency_ms 308.1 over the limit 250 (5 of 100 candidate requests slower than "
            f"246.5 ms); not compared with stable, which answered {stable_answered} requests "
            f"in this period ({seen}50 needed) and in no earlier period of this rollout: "
            "judged on the limit alone"
        )


# A rollout's history entry, as the controller notes an analysis (period end `at`).
AT_80 = datetime(2026, 11, 30, 12, 1, 5, tzinfo=UTC).timestamp()


def noted(result: Analysis, weight: float, at: float = AT_80) -> dict[str, Any]:
    return {"at": at, "weight": weight, "verdict": result.verdict, "figures": result.figures}


def at_80_percent_on_a_loaded_box() -> dict[str, Any]:
    """The 80 % step on a loaded box: 10 of the candidate's 480 requests and 3 of stable's
    120 take about 300 ms (both p99s over the limit 250, as slow as each other)."""
    start = snapshot()
    now = snapshot(
        candidate=latencies({5.0: 470, 300.0: 10}), stable=latencies({5.0: 117, 300.0: 3})
    )
    result = analyse(DEMO, period_start=start, rollout_start=start, now=now, regression=False)
    assert result.verdict == "pass", result.reason
    assert (result.figures["stable_answered"], result.figures["stable_slow_requests"]) == (120, 3)
    return noted(result, 0.8)


def at_100_percent(candidate: dict[str, Any], earlier: list[dict[str, Any]]) -> Analysis:
    start = snapshot()
    now = snapshot(candidate=candidate, stable=totals(0, scores={}))
    return analyse(
        DEMO, period_start=start, rollout_start=start, now=now, regression=False, earlier=earlier
    )


REFERENCE_80 = (
    "stable answered 0 requests in this period (50 needed), so the reference is its latest "
    "earlier period with as many, at the 80 % step (ended 12:01:05 UTC): its p99 308.1 ms "
    "(3 of 120 requests slower than 246.5 ms) then"
)


def test_at_full_traffic_a_loaded_box_is_judged_against_stable_at_the_step_before() -> None:
    # The box stays loaded into the 100 % step: 15 of the candidate's 600 requests take
    # 300 ms (p99 308.1 over the limit 250). On the limit alone a good candidate was rolled
    # back here; stable was as slow (3 of 120) at the 80 % step just before.
    result = at_100_percent(latencies({5.0: 585, 300.0: 15}), [at_80_percent_on_a_loaded_box()])
    assert result.verdict == "pass", result.reason
    figures = result.figures
    assert (figures["stable_answered"], figures["candidate_answered"]) == (0, 600)
    assert figures["reference_stable_answered"] == 120
    assert figures["reference_stable_slow_requests"] == 3
    assert figures["reference_step_percent"] == 80 and figures["reference_ended_at"] == AT_80
    assert figures["slow_share_excess"] == 15 / 600 - 3 / 120
    # 18 slow among 720, 600 of them the candidate's: P(at least 15 of the 18 there).
    p_value = hypergeom.sf(14, 720, 18, 600)
    assert math.isclose(figures["latency_p_value"], p_value, rel_tol=1e-9)
    assert result.reason == (
        "2 checks passed; p99_latency_ms 308.1 over the limit 250 (15 of 600 candidate "
        f"requests slower than 246.5 ms); {REFERENCE_80}: the candidate's share of slow "
        "requests exceeds stable's by 0, within the margin 0.01, within sampling noise "
        f"(Fisher's exact p = {p_value:.2g} >= alpha 0.001): as slow as stable was (a loaded "
        "server), passed; refusals not judged: stable had 0 requests in this period, 50 "
        "needed; score shift not judged: stable scored 0 requests in this period, 50 needed"
    )


def test_at_full_traffic_a_truly_slow_candidate_fails_with_both_figures() -> None:
    # 120 of 600 requests at 300 ms (20 %) against stable's 3 of 120 (2.5 %) a step before.
    result = at_100_percent(latencies({5.0: 480, 300.0: 120}), [at_80_percent_on_a_loaded_box()])
    assert result.verdict == "fail"
    p_value = hypergeom.sf(119, 720, 123, 600)
    assert math.isclose(result.figures["latency_p_value"], p_value, rel_tol=1e-9)
    assert p_value < 1e-5
    assert result.reason == (
        "p99_latency_ms 308.1 over the limit 250 (120 of 600 candidate requests slower than "
        f"246.5 ms); {REFERENCE_80}: the candidate's share of slow requests exceeds stable's "
        f"by 0.175, over the margin 0.01, beyond sampling noise (Fisher's exact p = "
        f"{p_value:.2g} < alpha 0.001)"
    )


def test_the_latency_reference_is_the_latest_closed_period_with_enough_stable_answers() -> None:
    # 60 %: stable answered 200 (2 slow). 80 %: only 20 (too few, all slow). Then a wait
    # (its period goes on), then a period counted over another limit's edge: neither counts.
    start = snapshot()
    at_60 = snapshot(candidate=latencies({5.0: 300}), stable=latencies({5.0: 198, 300.0: 2}))
    at_80 = snapshot(candidate=latencies({5.0: 80}), stable=latencies({300.0: 20}))
    other = AnalysisSpec(min_requests=50, p99_latency_ms_max=100)
    history = [
        noted(
            analyse(DEMO, period_start=start, rollout_start=start, now=at_60, regression=False),
            0.6,
            AT_80 - 60,
        ),
        noted(
            analyse(DEMO, period_start=start, rollout_start=start, now=at_80, regression=False), 0.8
        ),
        {"at": AT_80 + 1, "weight": 1.0, "verdict": "wait", "figures": {"stable_answered": 900}},
        noted(
            analyse(other, period_start=start, rollout_start=start, now=at_60, regression=False),
            1.0,
            AT_80 + 2,
        ),
    ]
    reference = latency_reference(history, min_requests=50, edge_ms=246.519)
    assert reference == LatencyReference(
        answered=200,
        slow=2,
        p99_ms=5.5511,
        edge_ms=246.519,
        step_percent=60,
        ended_at=AT_80 - 60,
    )
    assert reference.describe() == "at the 60 % step (ended 12:00:05 UTC)"
    assert latency_reference(history[1:], min_requests=50, edge_ms=246.519) is None


def test_slow_requests_are_those_over_the_last_bucket_edge_under_the_limit() -> None:
    # 1 % over the limit keeps the p99 under it; one more request puts it over.
    window = slot_window(None, snapshot(candidate=latencies({5.0: 99, 260.0: 1})), "candidate")
    assert slower_than(window, BOUNDS, 250.0) == (1, 246.519)
    assert p99_ms(window, BOUNDS) == 5.5511
    over = slot_window(None, snapshot(candidate=latencies({5.0: 98, 260.0: 2})), "candidate")
    assert p99_ms(over, BOUNDS) == 308.1488


# --- One client is one randomization unit --------------------------------------------------


def keyed(
    requests: int = 0,
    *,
    refused: int = 0,
    errors: int = 0,
    rows: int | None = None,
    latency: dict[int, int] | None = None,
    scores: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One routing key's totals on a slot, as `/admin/stats` shows them under `clients`."""
    return {
        "requests": requests,
        "errors": errors,
        "refused": refused,
        "rows": requests if rows is None else rows,
        "latency": {str(bucket): count for bucket, count in (latency or {}).items()},
        "scores": scores or {},
    }


def bucket_of(ms: float) -> int:
    return next(i for i, bound in enumerate(BOUNDS) if bound >= ms)


def test_one_client_sending_bad_rows_to_the_candidate_does_not_roll_it_back() -> None:
    # The newcomer's case (a): at 60 % a client keeping a key routed to the candidate sent
    # rows with age=500, each refused 422: 74 of the candidate's 342 requests, stable 0 of
    # 158. It rolled back a candidate with stable's contract (Fisher's p = 3.6e-14).
    start = snapshot()
    now = snapshot(stable=totals(158), candidate=totals(268, refused=74))
    now["clients"] = {"candidate": {"client-7": keyed(refused=74)}}
    result = analyse(
        AnalysisSpec(), period_start=start, rollout_start=start, now=now, regression=False
    )
    assert result.verdict == "pass", result.reason
    refusals = next(check for check in result.checks if check.name == "refusal_rate_excess")
    assert refusals.excused_clients == ("client-7",)
    assert refusals.value == 74 / 342
    assert result.figures["refusal_rate_excess_without_clients"] == 0.0
    assert result.figures["refusal_rate_excess_excused_clients"] == 1.0
    assert result.reason == (
        "4 checks passed; refusal_rate 0.2164 (74 of 342 candidate requests refused as the "
        "client's fault) exceeds stable's 0 (0 of 158) by 0.2164, over the limit 0.01 and "
        "beyond sampling noise (Fisher's exact p = 3.6e-14 < alpha 0.001); without routing "
        "key 'client-7' (74 requests: 74 refused, 0 failed, 0 rows scored) it passes "
        "(refusal_rate_excess 0, limit 0.01, on the other 268 candidate and 158 stable "
        "requests): that one client is the cause, not the candidate, passed"
    )


def test_one_client_sending_big_batches_to_the_candidate_does_not_roll_it_back() -> None:
    # The newcomer's case (b): valid 2,800-row requests on one key, 0.1 to 0.47 s each
    # (all 200): the candidate's p99 481.5 ms over 250, and its 56,000 rows swamped the
    # candidate's score histogram (PSI 4.3 against stable's 694 one-row requests).
    start = snapshot()
    candidate = totals(170, scores={"5": 74, "10": 96})
    candidate["requests"] += 20
    candidate["latency"][bucket_of(100.0)] += 8
    candidate["latency"][bucket_of(470.0)] += 12
    candidate["scores"]["3"] = 56_000
    now = snapshot(stable=totals(694, scores={"5": 300, "10": 394}), candidate=candidate)
    batch = keyed(20, rows=56_000, latency={bucket_of(100.0): 8, bucket_of(470.0): 12})
    now["clients"] = {"candidate": {"batch-loader": {**batch, "scores": {"3": 56_000}}}}
    result = analyse(
        AnalysisSpec(), period_start=start, rollout_start=start, now=now, regression=False
    )
    assert result.verdict == "pass", result.reason
    assert result.figures["candidate_p99_ms"] == 481.4825
    by_name = {check.name: check for check in result.checks}
    assert by_name["p99_latency_ms"].excused_clients == ("batch-loader",)
    assert by_name["score_shift_psi"].excused_clients == ("batch-loader",)
    assert by_name["score_shift_psi"].value > 4
    assert result.figures["p99_latency_ms_without_clients"] == 1.1642
    assert result.figures["score_shift_psi_without_clients"] < 0.001
    client = "routing key 'batch-loader' (20 requests: 0 refused, 0 failed, 56000 rows scored)"
    assert result.reason.count(f"without {client} it passes") == 2
    assert "(12 of 190 candidate requests slower than 246.5 ms)" in result.reason
    assert "; 56170 candidate vs 694 stable scores)" in result.reason


def test_a_candidate_bad_for_many_clients_still_fails_on_every_check() -> None:
    # 30 clients, 10 requests each: the candidate refuses 2 of each, fails 1, answers 2
    # slowly and scores every row in another bin than stable. No one client is the cause.
    start = snapshot()
    slow, fast = bucket_of(470.0), bucket_of(1.0)
    client = keyed(7, refused=2, errors=1, latency={fast: 5, slow: 2}, scores={"3": 7})
    candidate = totals(210, refused=60, errors=30, scores={"3": 210})
    candidate["latency"][fast], candidate["latency"][slow] = 150, 60
    now = snapshot(stable=totals(700, scores={"10": 700}), candidate=candidate)
    now["clients"] = {"candidate": {f"client-{n}": client for n in range(30)}}
    result = analyse(
        AnalysisSpec(), period_start=start, rollout_start=start, now=now, regression=False
    )
    assert result.verdict == "fail"
    assert [check.name for check in result.checks if not check.passed] == [
        "error_rate",
        "p99_latency_ms",
        "refusal_rate_excess",
        "score_shift_psi",
    ]
    assert not any(check.excused_clients for check in result.checks)
    assert result.reason.startswith(
        "error_rate 0.1 over the limit 0.01 (30 of 300 candidate requests failed on the "
        "server's side); p99_latency_ms 481.5 over the limit 250 (60 of 210 candidate "
        "requests slower than 246.5 ms)"
    )


def two_clients_sending_bad_rows() -> dict[str, Any]:
    """At 40 %: two keyed clients routed to the candidate send rows it refuses (40 and 35),
    a third, bigger one sends good rows; stable refuses nothing of its 400."""
    now = snapshot(stable=totals(400), candidate=totals(300, refused=75))
    now["clients"] = {
        "candidate": {
            "bad-a": keyed(refused=40),
            "bad-b": keyed(refused=35),
            "big-good": keyed(200),
        }
    }
    return now


def test_two_clients_sending_bad_rows_to_the_candidate_do_not_roll_it_back() -> None:
    # Leaving one out is not enough: without bad-a, 35 of 335 against 0 of 400 still fails.
    start = snapshot()
    result = analyse(
        AnalysisSpec(),
        period_start=start,
        rollout_start=start,
        now=two_clients_sending_bad_rows(),
        regression=False,
    )
    assert result.verdict == "pass", result.reason
    refusals = next(check for check in result.checks if check.name == "refusal_rate_excess")
    assert refusals.excused_clients == ("bad-a", "bad-b")
    assert result.figures["refusal_rate_excess_without_clients"] == 0.0
    assert result.figures["refusal_rate_excess_excused_clients"] == 2.0
    assert result.reason.endswith(
        "; without routing keys 'bad-a' (40 requests: 40 refused, 0 failed, 0 rows scored) "
        "and 'bad-b' (35 requests: 35 refused, 0 failed, 0 rows scored) it passes "
        "(refusal_rate_excess 0, limit 0.01, on the other 300 candidate and 400 stable "
        "requests): those 2 clients are the cause, not the candidate, passed"
    )


def test_more_bad_clients_than_excused_clients_max_fail() -> None:
    # The bound is the spec's: with 1, only one client may be left out, and two stand.
    start = snapshot()
    now = two_clients_sending_bad_rows()
    one = analyse(
        AnalysisSpec(excused_clients_max=1),
        period_start=start,
        rollout_start=start,
        now=now,
        regression=False,
    )
    assert one.verdict == "fail"
    assert one.reason.startswith("refusal_rate 0.2 (75 of 375 candidate requests refused")
    assert "it passes" not in one.reason
    assert not any(check.excused_clients for check in one.checks)


def test_three_clients_sending_big_batches_and_bad_rows_do_not_roll_it_back() -> None:
    # Three keyed batch loaders on the candidate: each 10 requests of 5,000 rows at 470 ms,
    # all scored in bin 3, and 20 rows refused. With any two left out the third still
    # makes the candidate slow (10 of 310 against 0 of 700), refusing and shifted.
    start = snapshot()
    slow = bucket_of(470.0)
    candidate = totals(300, scores={"5": 150, "10": 150})
    candidate["requests"] += 30
    candidate["refused"] += 60
    candidate["latency"][slow] += 30
    candidate["scores"]["3"] = 150_000
    now = snapshot(stable=totals(700, scores={"5": 350, "10": 350}), candidate=candidate)
    loader = keyed(10, refused=20, rows=50_000, latency={slow: 10}, scores={"3": 50_000})
    now["clients"] = {"candidate": {f"loader-{n}": loader for n in (1, 2, 3)}}
    result = analyse(
        AnalysisSpec(), period_start=start, rollout_start=start, now=now, regression=False
    )
    assert result.verdict == "pass", result.reason
    loaders = ("loader-1", "loader-2", "loader-3")
    by_name = {check.name: check for check in result.checks}
    for name in ("refusal_rate_excess", "p99_latency_ms", "score_shift_psi"):
        assert by_name[name].excused_clients == loaders, name
        assert result.figures[f"{name}_excused_clients"] == 3.0
    assert result.figures["p99_latency_ms_without_clients"] == 1.1642
    assert result.figures["score_shift_psi_without_clients"] < 0.001
    counts = "(30 requests: 20 refused, 0 failed, 50000 rows scored)"
    group = f"routing keys 'loader-1' {counts}, 'loader-2' {counts} and 'loader-3' {counts}"
    assert result.reason.count(f"without {group} it passes") == 3
    assert result.reason.count("those 3 clients are the cause, not the candidate, passed") == 3


def test_a_failure_resting_on_a_few_clients_with_little_else_stands() -> None:
    # Two clients refused on the candidate hold 130 of its 220 requests: without either it
    # still fails, without both only 90 are left. Named once, as the smallest such group.
    start = snapshot()
    now = snapshot(stable=totals(400), candidate=totals(90, refused=130))
    now["clients"] = {"candidate": {"a": keyed(refused=70), "b": keyed(refused=60)}}
    result = analyse(
        AnalysisSpec(), period_start=start, rollout_start=start, now=now, regression=False
    )
    assert result.verdict == "fail"
    assert not any(check.excused_clients for check in result.checks)
    assert result.reason.endswith(
        "; without routing keys 'a' (70 requests: 70 refused, 0 failed, 0 rows scored) and "
        "'b' (60 requests: 60 refused, 0 failed, 0 rows scored) only 90 candidate requests "
        "are left, 100 needed to judge it without them"
    )


def test_a_failure_resting_on_one_client_with_little_else_stands() -> None:
    # All but 40 of the candidate's requests are one client's: without it too few are left
    # to tell the candidate from the client, so the failure stands and says why.
    start = snapshot()
    now = snapshot(stable=totals(400), candidate=totals(100, refused=40))
    now["clients"] = {"candidate": {"only": keyed(100, refused=40)}}
    result = analyse(
        AnalysisSpec(), period_start=start, rollout_start=start, now=now, regression=False
    )
    assert result.verdict == "fail"
    assert (
        "without routing key 'only' (140 requests: 40 refused, 0 failed, 100 rows scored) "
        "only 0 candidate requests are left, 100 needed to judge it without them" in result.reason
    )


def test_errors_are_never_excused_as_one_client_s() -> None:
    # One sticky client's valid rows crash the candidate: that is the candidate's fault
    # whoever sent them (its rows may be the population the candidate cannot score).
    start = snapshot()
    now = snapshot(stable=totals(400), candidate=totals(400, errors=40))
    now["clients"] = {"candidate": {"loans": keyed(40, errors=40)}}
    result = analyse(
        AnalysisSpec(), period_start=start, rollout_start=start, now=now, regression=False
    )
    assert result.verdict == "fail"
    assert result.reason == (
        "error_rate 0.09091 over the limit 0.01 (40 of 440 candidate requests failed on the "
        "server's side)"
    )
    assert not any(check.excused_clients for check in result.checks)


def test_client_totals_are_a_period_s_difference_and_a_dropped_key_starts_over() -> None:
    before = snapshot()
    before["clients"] = {"candidate": {"a": keyed(10, refused=1), "b": keyed(50)}}
    after = snapshot()
    after["clients"] = {"candidate": {"a": keyed(15, refused=4), "b": keyed(3), "c": keyed(0)}}
    windows = client_windows(before, after, "candidate")
    assert sorted(windows) == ["a", "b"]
    assert (windows["a"].requests, windows["a"].refused, windows["a"].routed) == (5, 3, 8)
    assert windows["b"].requests == 3


def test_the_server_counts_each_routing_key_on_its_slot_bounded() -> None:
    clients = ClientStats(limit=4)
    two_rows = Prediction(
        labels=np.array([0, 1]), proba=np.array([[0.9, 0.1], [0.2, 0.8]]), values=None
    )
    clients.scored("candidate", "alice", 0.3, two_rows)
    clients.scored("candidate", "alice", 0.001, two_rows)
    clients.error("candidate", "alice", HttpError(422, "BAD_REQUEST", "age 500"))
    clients.error("candidate", "alice", ModelFailure(400, "BAD_REQUEST", "model failed"))
    clients.scored("candidate", None, 0.001, two_rows)  # no key: its own random unit
    long_key = "k" * 100
    clients.scored("stable", long_key, 0.001, two_rows)
    snap = clients.snapshot()
    assert snap["candidate"] == {
        "alice": {
            "requests": 2,
            "errors": 1,
            "refused": 1,
            "rows": 4,
            "latency": {str(bucket_of(300.0)): 1, str(bucket_of(1.0)): 1},
            "scores": {"2": 2, "16": 2},
        }
    }
    assert list(snap["stable"]) == [client_key(long_key)]
    assert client_key(long_key).startswith("sha256:") and len(client_key(long_key)) == 23
    for key in ("b", "c", "d"):
        clients.error("candidate", key, HttpError(422, "BAD_REQUEST", "x"))
    clients.error("candidate", "e", HttpError(422, "BAD_REQUEST", "x"))
    # Full at 4: the half with the fewest requests was dropped before "e" came in.
    assert list(clients.snapshot()["candidate"]) == ["alice", "b", "e"]
