"""Live analysis of a rollout: the candidate's traffic against stable's, over one period.

Inputs are two snapshots of the server's per-slot running totals (`GET /admin/stats`,
see `ct_platform.serving.slot_stats`); their difference is exactly what each slot did in
between, so both slots are judged on the same period. The checks follow Flagger's and Argo
Rollouts' analysis: each metric against a limit from the spec's `deployment.analysis`.

- error rate: the candidate's server-side failures (5xx, its model raising) over every
  request routed to it, at most `error_rate_max`;
- refusals: requests refused as the client's fault (4xx: bad input, contract violations,
  too many rows) are never errors. A burst of bad requests is refused by whichever slot it
  reaches, so the candidate's refusal rate is judged against stable's over the same period:
  it fails only when it exceeds stable's by more than `refusal_rate_excess_max` and a
  one-sided Fisher's exact test finds the excess significant at `refusal_alpha` (a
  candidate that refuses traffic stable accepts, e.g. a contract tightened by mistake);
- p99 latency: read from the latency histogram (the upper bound of the bucket holding the
  99th percentile, so it errs on the slow side), at most `p99_latency_ms_max`. Both slots
  are served by one server process (one event loop, one CPU budget), so a loaded box slows
  stable as much as the candidate: a p99 over the limit fails only when the candidate is
  slower than stable in the same period, i.e. its share of requests slower than the limit
  exceeds stable's by more than `latency_slow_share_excess_max` and a one-sided Fisher's
  exact test finds the excess significant at `latency_alpha` (as Flagger and Argo Rollouts
  phrase latency, a threshold on the request duration; here also against stable's). With
  fewer than `min_requests` stable requests in the period (a canary's 100 % step) the
  same test compares it with stable's share in the rollout's latest earlier period that
  had `min_requests` of them (the step before, usually): the candidate has just answered
  beside stable there, on the same box, and a box loaded since the start slows both
  periods alike. Only a rollout with no such period (a canary whose only step is 100 %)
  is judged on the limit alone, and the reason says so;
- score shift: PSI, or the Jensen-Shannon distance (base 2, 0..1), between the two slots'
  predicted-score histograms. It fails only when it is both over `score_shift_max` (the
  effect size that matters) and significant at level `score_shift_alpha` against "both
  slots score from one distribution", by a permutation test at the observed counts: at
  100 candidate vs 400 stable requests a model compared with itself exceeds PSI 0.2 in
  about one period in five by sampling noise alone, which must not roll it back. The
  shift is a proxy for what labels measure directly: a retrain on a drifting stream
  legitimately scores differently. So a shift that fails is judged again on the labels
  when both slots have `min_labelled` labelled requests since the rollout began: if a
  one-sided non-inferiority test (the candidate's accuracy at most `metric_tolerance` under
  stable's, or its mean absolute error at most `metric_tolerance` relatively over it) is
  significant at `score_shift_alpha`, the labels outrank the shift and it passes; else the
  failure stands with both the shift's and the labels' figures;
- primary metric, once both slots have `min_labelled` labelled requests since the rollout
  began: accuracy may trail stable's by `metric_tolerance` (absolute), mean absolute error
  may exceed stable's by `metric_tolerance` (relative);
- agreement (shadow, classification): share of rows where the shadow predicted stable's
  label, at least `shadow.min_agreement`.

A period with fewer than `min_requests` candidate requests (scored, failed or refused)
gives no verdict ("wait").

The randomization unit is the client, not the request: routing is sticky per
`X-Routing-Key`, so one client keeping one key sends all its traffic to one slot, and its
requests are not independent draws (one client sending bad rows, or big batches, would read
as the candidate refusing, or being slow, or shifting its scores; so would two or three at
once). So every failure on refusals, latency and score shift must survive leaving clients
out: the check is re-run without groups of the (up to `excused_clients_max`) clients that
weigh most on it (their requests removed from both slots' figures, from the server's
per-key totals), the smallest groups first, and if a removal makes it pass, it passes,
its detail naming each client of the group and its counts as the cause. Unless fewer
than `min_requests` candidate requests are left without them: then the rest is too little
to tell the candidate from those clients and the failure stands.
Requests without a routing key are routed at random one by one and need no such care.
Errors are never excused: a model failing on input the contract admits fails whoever sent
it, and a sticky client's rows may be exactly the population it cannot score.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from ct_platform.settings import AbSpec, AnalysisSpec

Verdict = Literal["pass", "fail", "wait"]
# Laplace smoothing of empty histogram bins: PSI is infinite on a bin one side lacks.
_EMPTY_BIN = 0.5


@dataclass(frozen=True)
class ClientWindow:
    """What one routing key did on one slot between two snapshots; `latency` maps a latency
    bucket's index to its count, `scores` a score bin to its count (both sparse)."""

    key: str
    requests: int
    errors: int
    refused: int
    rows: int
    latency: dict[int, int]
    scores: dict[str, int]

    @property
    def routed(self) -> int:
        return self.requests + self.errors + self.refused

    def describe(self) -> str:
        """`'abc' (342 requests: 74 refused, 0 failed, 3 rows scored)`."""
        key = self.key if len(self.key) <= 24 else f"{self.key[:24]}..."
        return (
            f"{key!r} ({self.routed} requests: {self.refused} refused, "
            f"{self.errors} failed, {self.rows} rows scored)"
        )


def describe_clients(clients: Sequence[ClientWindow]) -> str:
    """`routing key 'a' (...)`, or `routing keys 'a' (...), 'b' (...) and 'c' (...)`."""
    labels = [client.describe() for client in clients]
    if len(labels) == 1:
        return f"routing key {labels[0]}"
    return f"routing keys {', '.join(labels[:-1])} and {labels[-1]}"


@dataclass(frozen=True)
class SlotWindow:
    """What one slot did between two snapshots: `requests` scored, `errors` failed on the
    server's side, `refused` as the client's fault."""

    requests: int
    errors: int
    refused: int
    latency: list[int]
    scores: dict[str, int]
    compared_rows: int
    agreeing_rows: int
    labelled: int
    outcome_sum: float
    outcome_sq_sum: float

    @property
    def routed(self) -> int:
        """Every request routed to the slot, answered or not."""
        return self.requests + self.errors + self.refused

    @property
    def error_rate(self) -> float:
        return self.errors / self.routed if self.routed else 0.0

    @property
    def refusal_rate(self) -> float:
        return self.refused / self.routed if self.routed else 0.0

    @property
    def outcome_mean(self) -> float:
        return self.outcome_sum / self.labelled if self.labelled else math.nan

    @property
    def outcome_sd(self) -> float:
        if self.labelled < 2:
            return math.nan
        variance = (self.outcome_sq_sum - self.labelled * self.outcome_mean**2) / (
            self.labelled - 1
        )
        return math.sqrt(max(variance, 0.0))

    def without(self, clients: Sequence[ClientWindow]) -> SlotWindow:
        """This window less these clients' requests (labels stay: they are not per key)."""
        latency, scores = list(self.latency), dict(self.scores)
        for client in clients:
            for bucket, count in client.latency.items():
                latency[bucket] = max(latency[bucket] - count, 0)
            for bin_, count in client.scores.items():
                scores[bin_] = scores.get(bin_, 0) - count
        return replace(
            self,
            requests=max(self.requests - sum(client.requests for client in clients), 0),
            errors=max(self.errors - sum(client.errors for client in clients), 0),
            refused=max(self.refused - sum(client.refused for client in clients), 0),
            latency=latency,
            scores={b: c for b, c in scores.items() if c > 0},
        )


def client_windows(
    before: dict[str, Any] | None, after: dict[str, Any], slot: str
) -> dict[str, ClientWindow]:
    """Per routing key, `slot`'s totals in `after` minus those in `before` (keys with
    traffic in the period only). A key whose totals went down or are missing from `before`
    was dropped and counted again by the server (or the server restarted): its totals in
    `after` alone."""
    now = (after.get("clients") or {}).get(slot) or {}
    then = ((before or {}).get("clients") or {}).get(slot) or {}
    windows = {}
    for key, totals in now.items():
        old = then.get(key) or {}
        if any(
            old.get(name, 0) > totals.get(name, 0) for name in ("requests", "errors", "refused")
        ):
            old = {}
        latency = _sparse_difference(totals["latency"], old.get("latency") or {})
        window = ClientWindow(
            key=key,
            requests=totals["requests"] - old.get("requests", 0),
            errors=totals["errors"] - old.get("errors", 0),
            refused=totals["refused"] - old.get("refused", 0),
            rows=totals["rows"] - old.get("rows", 0),
            latency={int(bucket): count for bucket, count in latency.items()},
            scores=_sparse_difference(totals["scores"], old.get("scores") or {}),
        )
        if window.routed:
            windows[key] = window
    return windows


def _sparse_difference(now: dict[str, int], then: dict[str, int]) -> dict[str, int]:
    difference = {bucket: count - then.get(bucket, 0) for bucket, count in now.items()}
    return {bucket: count for bucket, count in difference.items() if count > 0}


def slot_window(before: dict[str, Any] | None, after: dict[str, Any], slot: str) -> SlotWindow:
    """`slot`'s totals in `after` minus those in `before` (None: since the server started).

    A slot whose totals went down was reset (the server restarted in between): the window
    is then its totals in `after` alone.
    """
    now = after["slots"].get(slot) or {}
    then = (before or {}).get("slots", {}).get(slot) or {}
    if any(then.get(key, 0) > now.get(key, 0) for key in ("requests", "errors", "refused")):
        then = {}
    bounds = len(after["latency_bounds_ms"]) + 1

    def counts(key: str) -> int:
        return int(now.get(key, 0)) - int(then.get(key, 0))

    def sums(key: str) -> float:
        return float(now.get(key, 0.0)) - float(then.get(key, 0.0))

    old_latency = then.get("latency") or [0] * bounds
    new_latency = now.get("latency") or old_latency
    old_scores = then.get("scores") or {}
    scores = {b: c - old_scores.get(b, 0) for b, c in (now.get("scores") or {}).items()}
    return SlotWindow(
        requests=counts("requests"),
        errors=counts("errors"),
        refused=counts("refused"),
        latency=[a - b for a, b in zip(new_latency, old_latency, strict=True)],
        scores={b: c for b, c in scores.items() if c > 0},
        compared_rows=counts("compared_rows"),
        agreeing_rows=counts("agreeing_rows"),
        labelled=counts("labelled"),
        outcome_sum=sums("outcome_sum"),
        outcome_sq_sum=sums("outcome_sq_sum"),
    )


def slower_than(window: SlotWindow, bounds_ms: list[float], limit_ms: float) -> tuple[int, float]:
    """(requests whose latency bucket reaches above `limit_ms`, that bucket edge in ms).

    The edge is the largest bucket bound at or under the limit (0 if none): every request
    counted was slower than it. The same rule as `p99_ms`: a p99 over the limit is exactly
    more than 1 % of the requests counted here.
    """
    first_slow = _first_slow_bucket(bounds_ms, limit_ms)
    edge = bounds_ms[first_slow - 1] if first_slow else 0.0
    return sum(window.latency[first_slow:]), edge


def _first_slow_bucket(bounds_ms: list[float], limit_ms: float) -> int:
    """Index of the first latency bucket whose requests may be slower than `limit_ms`."""
    return next(
        (index for index, bound in enumerate(bounds_ms) if bound > limit_ms), len(bounds_ms)
    )


@dataclass(frozen=True)
class LatencyReference:
    """Stable's answered requests in one period, and how many were slower than `edge_ms`
    (the last latency bucket edge at or under the p99 limit): what the candidate's slow
    share is compared with. `step_percent` and `ended_at` (Unix seconds) say which earlier
    period of the rollout it is (NaN: the period being judged)."""

    answered: int
    slow: int
    p99_ms: float
    edge_ms: float
    step_percent: float = math.nan
    ended_at: float = math.nan

    def describe(self) -> str:
        """`at the 80 % step (ended 12:01:05 UTC)`."""
        ended = datetime.fromtimestamp(self.ended_at, UTC).strftime("%H:%M:%S UTC")
        return f"at the {self.step_percent:g} % step (ended {ended})"

    def figures(self) -> dict[str, float]:
        return {
            "reference_stable_answered": float(self.answered),
            "reference_stable_slow_requests": float(self.slow),
            "reference_stable_p99_ms": self.p99_ms,
            "reference_step_percent": self.step_percent,
            "reference_ended_at": self.ended_at,
        }


def latency_reference(
    earlier: Sequence[Mapping[str, Any]], *, min_requests: int, edge_ms: float
) -> LatencyReference | None:
    """Stable's latency in the rollout's latest earlier period in which it answered at least
    `min_requests` requests, from `earlier`, the rollout's history entries (`verdict`,
    `weight` 0..1, `at` Unix seconds, `figures`: an analysis's, as `analyse` returns them).
    Only analyses that closed a period count (a pass or a fail; a wait's period goes on),
    and only those whose slow requests were counted over the same `edge_ms` (the limit may
    have changed). None when there is none (a canary whose only step is 100 %)."""
    for entry in reversed(earlier):
        figures = entry.get("figures") or {}
        if (
            entry.get("verdict") in ("pass", "fail")
            and figures.get("stable_answered", 0) >= min_requests
            and figures.get("slow_edge_ms") == edge_ms
        ):
            return LatencyReference(
                answered=int(figures["stable_answered"]),
                slow=int(figures["stable_slow_requests"]),
                p99_ms=float(figures["stable_p99_ms"]),
                edge_ms=edge_ms,
                step_percent=round(100 * float(entry["weight"]), 6),
                ended_at=float(entry["at"]),
            )
    return None


def p99_ms(window: SlotWindow, bounds_ms: list[float]) -> float:
    """Upper bound (ms) of the latency bucket holding the 99th percentile; NaN if empty."""
    total = sum(window.latency)
    if total == 0:
        return math.nan
    rank = math.ceil(0.99 * total)
    seen = 0
    for index, count in enumerate(window.latency):
        seen += count
        if seen >= rank:
            return bounds_ms[index] if index < len(bounds_ms) else math.inf
    return math.inf


def score_shift(a: dict[str, int], b: dict[str, int], metric: str) -> float:
    """PSI or Jensen-Shannon distance between two histograms on the same bin grid."""
    bins = _bins(a, b)
    if not bins:
        return math.nan
    counts = np.array([[a.get(bin_, 0) for bin_ in bins], [b.get(bin_, 0) for bin_ in bins]])
    return float(_shifts(counts[0], counts[1], metric))


def shift_p_value(a: dict[str, int], b: dict[str, int], metric: str, *, alpha: float) -> float:
    """Permutation p-value of `score_shift(a, b, metric)` under "a and b are one distribution".

    The pooled requests are relabelled at random, as many to `a`'s side as it has (a
    permutation test on the binned scores: each relabelling's counts are one multivariate
    hypergeometric draw); the p-value is (1 + k) / (1 + R), k of the R relabellings shifting
    at least as much as observed, so it is never 0 and the test is exact at any counts.
    R = ceil(10 / alpha) - 1 (9,999 at alpha 0.001), enough to resolve `alpha`; a few tens
    of milliseconds at a few thousand requests. The draws are seeded by the counts, so the
    same histograms always give the same p-value.
    """
    bins = _bins(a, b)
    first = np.array([a.get(bin_, 0) for bin_ in bins], dtype=np.int64)
    second = np.array([b.get(bin_, 0) for bin_ in bins], dtype=np.int64)
    observed = _shifts(first, second, metric)
    pooled = first + second
    resamples = math.ceil(10 / alpha) - 1
    rng = np.random.default_rng(np.random.SeedSequence([*first.tolist(), *second.tolist()]))
    relabelled = rng.multivariate_hypergeometric(pooled, int(first.sum()), size=resamples)
    null = _shifts(relabelled, pooled - relabelled, metric)
    # A relative tolerance: relabellings equal to the observed split count as "at least".
    exceeding = int(np.count_nonzero(null >= observed * (1 - 1e-9)))
    return (1 + exceeding) / (1 + resamples)


def _bins(a: dict[str, int], b: dict[str, int]) -> list[str]:
    return sorted(set(a) | set(b), key=int)


def _shifts(first: np.ndarray, second: np.ndarray, metric: str) -> np.ndarray:
    """The shift between count vectors along the last axis (bins); Laplace-smoothed."""
    p = first + _EMPTY_BIN
    q = second + _EMPTY_BIN
    p = p / p.sum(axis=-1, keepdims=True)
    q = q / q.sum(axis=-1, keepdims=True)
    if metric == "psi":
        return ((p - q) * np.log(p / q)).sum(axis=-1)
    from scipy.spatial.distance import jensenshannon

    return jensenshannon(p, q, base=2, axis=-1)


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    passed: bool
    # Why it failed, with its figures (empty: "<name> <value> over the limit <limit>").
    detail: str = ""
    # The routing keys whose traffic alone made it fail (it passed without them), if any.
    excused_clients: tuple[str, ...] = ()


@dataclass(frozen=True)
class Analysis:
    verdict: Verdict
    reason: str
    checks: list[Check]
    # Plain numbers for the record and the UI: requests, error rates, p99s, shift, ...
    figures: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "checks": [asdict(check) for check in self.checks]}


def analyse(
    spec: AnalysisSpec,
    *,
    period_start: dict[str, Any] | None,
    rollout_start: dict[str, Any] | None,
    now: dict[str, Any],
    candidate_slot: str = "candidate",
    regression: bool,
    min_agreement: float | None = None,
    earlier: Sequence[Mapping[str, Any]] = (),
) -> Analysis:
    """Judge `candidate_slot` against stable over the period `period_start` -> `now`.

    Every figure is the period's. The score shift and refusals are judged only when stable
    answered at least `min_requests` in the same period (not at a canary's 100 % step):
    stable's scores from earlier periods are other traffic (time-ordered data drifts), and
    comparing with them rolled back identical models; a burst of bad requests lands in one
    period, not in another. When they are not judged, the reason says so. Latency is a
    property of the box as much as of the model: without stable in the period, the
    candidate's is compared with stable's in the latest earlier period that had enough of
    it, read from `earlier` (the rollout's history entries, see `latency_reference`).
    Labels are always counted over the whole rollout: they arrive late and sparse. A
    score shift that fails is judged again on them (`_shift_on_labels`).
    """
    bounds = now["latency_bounds_ms"]
    candidate = slot_window(period_start, now, candidate_slot)
    stable = slot_window(period_start, now, "stable")
    figures = {
        "candidate_requests": float(candidate.routed),
        "stable_requests": float(stable.routed),
        "candidate_error_rate": candidate.error_rate,
        "stable_error_rate": stable.error_rate,
        "candidate_refusal_rate": candidate.refusal_rate,
        "stable_refusal_rate": stable.refusal_rate,
        "candidate_refused": float(candidate.refused),
        "stable_refused": float(stable.refused),
        "candidate_p99_ms": p99_ms(candidate, bounds),
        "stable_p99_ms": p99_ms(stable, bounds),
    }
    uncredited = _uncredited_labels(rollout_start, now, figures)
    if candidate.routed < spec.min_requests:
        reason = (
            f"waiting for traffic: {candidate.routed} {candidate_slot} requests in this "
            f"period, {spec.min_requests} needed for a verdict"
        )
        return Analysis("wait", "; ".join([reason, *uncredited]), [], figures)
    judges: list[_Judge] = [_error_check, _latency_check]
    unjudged = []
    if stable.routed >= spec.min_requests:
        judges.append(_refusal_check)
    else:
        unjudged.append(
            f"refusals not judged: stable had {stable.routed} requests in this period, "
            f"{spec.min_requests} needed"
        )
    if sum(stable.scores.values()) >= spec.min_requests:
        judges.append(_score_shift_check)
    else:
        unjudged.append(
            f"score shift not judged: stable scored {sum(stable.scores.values())} requests in "
            f"this period, {spec.min_requests} needed"
        )
    edge = slower_than(candidate, bounds, spec.p99_latency_ms_max)[1]
    reference = latency_reference(earlier, min_requests=spec.min_requests, edge_ms=edge)
    period = _Period(spec, candidate_slot, candidate, stable, bounds, reference)
    clients = (
        client_windows(period_start, now, candidate_slot),
        client_windows(period_start, now, "stable"),
    )
    labels = (
        slot_window(rollout_start, now, candidate_slot),
        slot_window(rollout_start, now, "stable"),
    )
    checks = [
        judge(period, figures)
        if judge is _error_check
        else _robust(judge, period, clients, figures)
        for judge in judges
    ]
    checks = [_shift_on_labels(check, spec, labels, regression, figures) for check in checks]
    if min_agreement is not None and candidate.compared_rows:
        agreement = candidate.agreeing_rows / candidate.compared_rows
        figures["agreement"] = agreement
        checks.append(
            Check(
                "agreement",
                agreement,
                min_agreement,
                agreement >= min_agreement,
                f"agreement {agreement:.3f} under the minimum {min_agreement:g}",
            )
        )
    checks += _metric_check(spec, labels, regression, figures)
    failed = [check for check in checks if not check.passed]
    if failed:
        reason = "; ".join([*(check.detail for check in failed), *uncredited])
        return Analysis("fail", reason, checks, figures)
    # A check judged against stable says why it passed over its limit (a loaded server,
    # sampling noise): the figures a user would otherwise read as a missed failure.
    notes = [
        check.detail
        for check in checks
        if check.detail and (check.name in _AGAINST_STABLE or check.excused_clients)
    ]
    reason = "; ".join([f"{len(checks)} checks passed", *notes, *unjudged, *uncredited])
    return Analysis("pass", reason, checks, figures)


def _uncredited_labels(
    rollout_start: dict[str, Any] | None, now: dict[str, Any], figures: dict[str, float]
) -> list[str]:
    """The labels `/feedback` took since the rollout began that no slot was credited with
    (server's `labels_not_credited`, a restart's reset read as its totals alone), in
    `figures`, and a reason line when there were any for rows of multi-row requests (the
    server remembers the answers of single-row requests only)."""
    end = now.get("labels_not_credited") or {}
    start = (rollout_start or {}).get("labels_not_credited") or {}
    counts = {}
    for kind in ("multi_row", "unknown"):
        total, before = int(end.get(kind, 0)), int(start.get(kind, 0))
        counts[kind] = total - before if total >= before else total
        figures[f"labels_not_credited_{kind}"] = float(counts[kind])
    if not counts["multi_row"]:
        return []
    return [
        f"{counts['multi_row']} labels for rows of multi-row requests arrived since the "
        "rollout began: not credited to either slot (the server keeps the answers of "
        "single-row requests only)"
    ]


# Checks that compare with stable's same period; their detail is set only over the limit.
_SCORE_SHIFTS = ("score_shift_psi", "score_shift_jensen_shannon")
_AGAINST_STABLE = ("p99_latency_ms", "refusal_rate_excess", *_SCORE_SHIFTS)


@dataclass(frozen=True)
class _Period:
    """What a check judges: the candidate's and stable's windows of one period, and stable's
    latency in an earlier period for when stable answered too little in this one."""

    spec: AnalysisSpec
    slot: str
    candidate: SlotWindow
    stable: SlotWindow
    bounds: list[float]
    reference: LatencyReference | None = None

    def without(self, clients: Sequence[ClientWindow], stable: Sequence[ClientWindow]) -> _Period:
        return replace(
            self, candidate=self.candidate.without(clients), stable=self.stable.without(stable)
        )


# A check of one period; it adds its figures to the dict it is given.
_Judge = Callable[[_Period, dict[str, float]], Check]


def _robust(
    judge: _Judge,
    period: _Period,
    clients: tuple[dict[str, ClientWindow], dict[str, ClientWindow]],
    figures: dict[str, float],
) -> Check:
    """`judge`'s check, unless it fails only because of a few clients: re-run without
    groups of the `excused_clients_max` routing keys that weigh most on it (removed from
    both slots), smallest groups first and, within a size, the heaviest first, it passes
    with the first group whose removal makes it pass, naming each client of it. A removal
    leaving fewer than `min_requests` candidate requests proves nothing: the failure
    stands, saying so (once, for the smallest such groups: a larger one leaves even less)."""
    check = judge(period, figures)
    if check.passed:
        return check
    candidate_clients, stable_clients = clients
    weight = _weight(judge, period)
    heaviest = sorted(candidate_clients.values(), key=weight, reverse=True)
    suspects = [client for client in heaviest if weight(client) > 0]
    suspects = suspects[: period.spec.excused_clients_max]
    too_few: list[set[str]] = []
    notes = []
    for size in range(1, len(suspects) + 1):
        for group in itertools.combinations(suspects, size):
            keys = {client.key for client in group}
            if any(small <= keys for small in too_few):
                continue
            rest = period.without(group, [stable_clients[k] for k in keys if k in stable_clients])
            if rest.candidate.routed < period.spec.min_requests:
                too_few.append(keys)
                notes.append(
                    f"without {describe_clients(group)} only {rest.candidate.routed} "
                    f"{period.slot} requests are left, {period.spec.min_requests} needed to "
                    "judge it without them"
                )
                continue
            again = judge(rest, {})
            if again.passed:
                return _excused(check, again, group, rest, figures)
    if notes:
        return replace(check, detail="; ".join([check.detail, *notes]))
    return check


def _excused(
    check: Check,
    again: Check,
    group: tuple[ClientWindow, ...],
    rest: _Period,
    figures: dict[str, float],
) -> Check:
    """`check`, passed: it passes without `group`'s clients (`again`, on `rest`)."""
    figures[f"{check.name}_without_clients"] = again.value
    figures[f"{check.name}_excused_clients"] = float(len(group))
    cause = "that one client is" if len(group) == 1 else f"those {len(group)} clients are"
    detail = (
        f"{check.detail}; without {describe_clients(group)} it passes ({check.name} "
        f"{again.value:.4g}, limit {again.limit:g}, on the other {rest.candidate.routed} "
        f"{rest.slot} and {rest.stable.routed} stable requests): {cause} the cause, not the "
        "candidate, passed"
    )
    keys = tuple(client.key for client in group)
    return replace(check, passed=True, detail=detail, excused_clients=keys)


def _weight(judge: _Judge, period: _Period) -> Callable[[ClientWindow], int]:
    """How much a client weighs on `judge`'s check: its count of what the check counts."""
    if judge is _refusal_check:
        return lambda client: client.refused
    if judge is _latency_check:
        first_slow = _first_slow_bucket(period.bounds, period.spec.p99_latency_ms_max)
        return lambda client: sum(c for b, c in client.latency.items() if b >= first_slow)
    return lambda client: client.rows


def _error_check(period: _Period, figures: dict[str, float]) -> Check:
    candidate = period.candidate
    check = _at_most("error_rate", candidate.error_rate, period.spec.error_rate_max)
    return replace(
        check,
        detail=f"{check.detail} ({candidate.errors} of {candidate.routed} {period.slot} "
        "requests failed on the server's side)",
    )


def _at_most(name: str, value: float, limit: float) -> Check:
    """A maximum: passes at or under `limit` (NaN, nothing measured, passes)."""
    return Check(
        name, value, limit, not value > limit, f"{name} {value:.4g} over the limit {limit:g}"
    )


def _refusal_check(period: _Period, figures: dict[str, float]) -> Check:
    """Fails when the candidate refuses (4xx) a larger share of its requests than stable
    does of the same period's, by more than `refusal_rate_excess_max` AND beyond sampling
    noise (one-sided Fisher's exact test on the 2x2 refused/not-refused table under
    `refusal_alpha`); the p-value is computed only for an excess over the limit."""
    spec, slot, candidate, stable = period.spec, period.slot, period.candidate, period.stable
    limit = spec.refusal_rate_excess_max
    excess = candidate.refusal_rate - stable.refusal_rate
    figures["refusal_rate_excess"] = excess
    if not excess > limit:
        return Check("refusal_rate_excess", excess, limit, True)
    p_value = _excess_p_value(candidate.refused, candidate.routed, stable.refused, stable.routed)
    figures["refusal_p_value"] = p_value
    significant = p_value < spec.refusal_alpha
    detail = (
        f"refusal_rate {candidate.refusal_rate:.4g} ({candidate.refused} of {candidate.routed} "
        f"{slot} requests refused as the client's fault) exceeds stable's "
        f"{stable.refusal_rate:.4g} ({stable.refused} of {stable.routed}) by {excess:.4g}, "
        f"over the limit {limit:g} and {'beyond' if significant else 'within'} sampling "
        f"noise (Fisher's exact p = {p_value:.2g} {'<' if significant else '>='} alpha "
        f"{spec.refusal_alpha:g})"
    )
    return Check("refusal_rate_excess", excess, limit, not significant, detail)


def _excess_p_value(hits: int, total: int, reference_hits: int, reference_total: int) -> float:
    """One-sided Fisher's exact p-value of "hits/total exceeds reference_hits/reference_total"
    on the 2x2 table: exact at any counts, and under random routing of requests to slots it
    is the permutation test of the slot labels."""
    from scipy.stats import fisher_exact

    table = [[hits, total - hits], [reference_hits, reference_total - reference_hits]]
    return float(fisher_exact(table, alternative="greater").pvalue)


def _latency_check(period: _Period, figures: dict[str, float]) -> Check:
    """Candidate p99 at most `p99_latency_ms_max`, unless stable was as slow: over the
    limit, it fails only when its share of requests slower than the limit exceeds stable's
    by more than `latency_slow_share_excess_max` AND beyond sampling noise (one-sided
    Fisher's exact test under `latency_alpha`). Stable's share is the same period's when
    stable answered at least `min_requests` in it, else that of the rollout's latest
    earlier period where it did (`period.reference`); with neither, the limit alone."""
    spec, slot, candidate, stable = period.spec, period.slot, period.candidate, period.stable
    bounds, limit = period.bounds, spec.p99_latency_ms_max
    p99 = p99_ms(candidate, bounds)
    slow, edge = slower_than(candidate, bounds, limit)
    answered = sum(candidate.latency)
    same = _same_period_reference(stable, bounds, limit)
    figures.update(
        candidate_slow_requests=float(slow),
        stable_slow_requests=float(same.slow),
        candidate_answered=float(answered),
        stable_answered=float(same.answered),
        slow_edge_ms=edge,
    )
    reference = same if same.answered >= spec.min_requests else period.reference
    if reference is not same and reference is not None:
        figures.update(reference.figures())
    if not p99 > limit:
        return Check("p99_latency_ms", p99, limit, True)
    over = (
        f"p99_latency_ms {p99:.4g} over the limit {limit:g} ({slow} of {answered} {slot} "
        f"requests slower than {edge:.4g} ms)"
    )
    if reference is None:
        stable_seen = f"p99 {same.p99_ms:.4g} ms, " if same.answered else ""
        return Check(
            "p99_latency_ms",
            p99,
            limit,
            False,
            f"{over}; not compared with stable, which answered {same.answered} requests in "
            f"this period ({stable_seen}{spec.min_requests} needed) and in no earlier period "
            "of this rollout: judged on the limit alone",
        )
    excess = slow / answered - reference.slow / reference.answered
    figures["slow_share_excess"] = excess
    p_value = _excess_p_value(slow, answered, reference.slow, reference.answered)
    figures["latency_p_value"] = p_value
    margin, alpha = spec.latency_slow_share_excess_max, spec.latency_alpha
    slower = excess > margin and p_value < alpha
    if reference is same:
        stable_was = "stable's p99"
        when = "in the same period"
    else:
        stable_was = (
            f"stable answered {same.answered} requests in this period ({spec.min_requests} "
            f"needed), so the reference is its latest earlier period with as many, "
            f"{reference.describe()}: its p99"
        )
        when = "then"
    detail = (
        f"{over}; {stable_was} {reference.p99_ms:.4g} ms ({reference.slow} of "
        f"{reference.answered} requests slower than {edge:.4g} ms) {when}: the candidate's "
        f"share of slow requests exceeds stable's by {excess:.4g}, "
        f"{'over' if excess > margin else 'within'} the margin {margin:g}, "
        f"{'beyond' if p_value < alpha else 'within'} sampling noise (Fisher's exact p = "
        f"{p_value:.2g} {'<' if p_value < alpha else '>='} alpha {alpha:g})"
    )
    if not slower:
        was = "as slow as stable" if reference is same else "as slow as stable was"
        detail += f": {was} (a loaded server), passed"
    return Check("p99_latency_ms", p99, limit, not slower, detail)


def _same_period_reference(
    stable: SlotWindow, bounds: list[float], limit: float
) -> LatencyReference:
    slow, edge = slower_than(stable, bounds, limit)
    return LatencyReference(
        answered=sum(stable.latency), slow=slow, p99_ms=p99_ms(stable, bounds), edge_ms=edge
    )


def _score_shift_check(period: _Period, figures: dict[str, float]) -> Check:
    """Fails when the shift is over `score_shift_max` AND beyond sampling noise at these
    counts (permutation p-value under `score_shift_alpha`); the p-value is computed only
    for a shift over the limit (a smaller one passes whatever it is)."""
    spec, slot = period.spec, period.slot
    candidate, reference = period.candidate.scores, period.stable.scores
    metric, limit = spec.score_shift_metric, spec.score_shift_max
    name = f"score_shift_{metric}"
    shift = score_shift(candidate, reference, metric)
    n_candidate, n_reference = sum(candidate.values()), sum(reference.values())
    figures["score_shift"] = shift
    figures["score_reference_requests"] = float(n_reference)
    if not shift > limit:
        return Check(name, shift, limit, True)
    p_value = shift_p_value(candidate, reference, metric, alpha=spec.score_shift_alpha)
    figures["score_shift_p_value"] = p_value
    significant = p_value < spec.score_shift_alpha
    detail = (
        f"{name} {shift:.4g} over the limit {limit:g} and "
        f"{'beyond' if significant else 'within'} sampling noise (permutation p = "
        f"{p_value:.2g} {'<' if significant else '>='} alpha {spec.score_shift_alpha:g}; "
        f"{n_candidate} {slot} vs {n_reference} stable scores)"
    )
    return Check(name, shift, limit, not significant, detail)


def _shift_on_labels(
    check: Check,
    spec: AnalysisSpec,
    labels: tuple[SlotWindow, SlotWindow],
    regression: bool,
    figures: dict[str, float],
) -> Check:
    """A failed score-shift `check` judged again on the labels (`labels`: the candidate's
    and stable's windows since the rollout began): with at least `min_labelled` labelled
    requests on each slot, it passes when a one-sided non-inferiority test at
    `score_shift_alpha` finds the candidate at least as good as stable within
    `metric_tolerance` (the shift is a proxy; the labels are what it stands for). Otherwise
    it stands, its detail giving the labels' figures when there are enough of them."""
    if check.passed or check.name not in _SCORE_SHIFTS:
        return check
    candidate, stable = labels
    if min(candidate.labelled, stable.labelled) < spec.min_labelled:
        return check
    p_value = non_inferiority_p_value(
        stable, candidate, tolerance=spec.metric_tolerance, regression=regression
    )
    figures["label_non_inferiority_p_value"] = p_value
    alpha = spec.score_shift_alpha
    as_good = p_value < alpha
    metric = "mean absolute error" if regression else "accuracy"
    tolerance = (
        f"{spec.metric_tolerance:.0%} relatively" if regression else f"{spec.metric_tolerance:g}"
    )
    on_labels = (
        f"on {candidate.labelled} vs {stable.labelled} labelled requests since the rollout "
        f"began the candidate is {'at least' if as_good else 'not shown to be'} as good as "
        f"stable: {metric} {candidate.outcome_mean:.3f} vs {stable.outcome_mean:.3f} "
        f"(one-sided non-inferiority test, tolerance {tolerance}: p = {p_value:.2g} "
        f"{'<' if as_good else '>='} alpha {alpha:g})"
    )
    if not as_good:
        return replace(check, detail=f"{check.detail}; {on_labels}")
    detail = (
        f"scores differ from stable's: {check.detail}; but {on_labels}: labels outrank the "
        "score shift, passed"
    )
    return replace(check, passed=True, detail=detail)


def non_inferiority_p_value(
    stable: SlotWindow, candidate: SlotWindow, *, tolerance: float, regression: bool
) -> float:
    """One-sided p-value of "the candidate is worse than stable by `tolerance` or more" on
    the labelled outcomes (small: the candidate is at least as good, within `tolerance`).

    Classification (outcome 1 for a correct prediction): statsmodels'
    `test_proportions_2indep` of the accuracy difference against `-tolerance`. Regression
    (outcome the absolute error): Welch's t test of the candidate's mean absolute error
    against stable's times `1 + tolerance`. NaN-free: an undefined test gives 1.0.
    """
    if regression:
        margin = tolerance * stable.outcome_mean
        p_value = _welch_p_value(candidate, stable, minus=margin, alternative="less")
    else:
        from statsmodels.stats.proportion import test_proportions_2indep

        p_value = test_proportions_2indep(
            round(candidate.outcome_sum),
            candidate.labelled,
            round(stable.outcome_sum),
            stable.labelled,
            value=-tolerance,
            compare="diff",
            alternative="larger",
        ).pvalue
    p_value = float(p_value)
    return p_value if math.isfinite(p_value) else 1.0


def _welch_p_value(
    candidate: SlotWindow,
    stable: SlotWindow,
    *,
    minus: float = 0.0,
    alternative: Literal["two-sided", "less", "greater"] = "two-sided",
) -> float:
    """Welch's t test (scipy, from the running sums) of the candidate's mean outcome less
    `minus` against stable's."""
    from scipy.stats import ttest_ind_from_stats

    return float(
        ttest_ind_from_stats(
            candidate.outcome_mean - minus,
            candidate.outcome_sd,
            candidate.labelled,
            stable.outcome_mean,
            stable.outcome_sd,
            stable.labelled,
            equal_var=False,
            alternative=alternative,
        ).pvalue
    )


def _metric_check(
    spec: AnalysisSpec,
    labels: tuple[SlotWindow, SlotWindow],
    regression: bool,
    figures: dict[str, float],
) -> list[Check]:
    candidate, stable = labels
    figures["candidate_labelled"] = float(candidate.labelled)
    figures["stable_labelled"] = float(stable.labelled)
    if min(candidate.labelled, stable.labelled) < spec.min_labelled:
        return []
    figures["candidate_outcome"] = candidate.outcome_mean
    figures["stable_outcome"] = stable.outcome_mean
    if regression:  # mean absolute error: relative excess over stable's
        excess = candidate.outcome_mean / max(stable.outcome_mean, 1e-12) - 1.0
        return [_at_most("mae_excess", excess, spec.metric_tolerance)]
    shortfall = stable.outcome_mean - candidate.outcome_mean
    return [_at_most("accuracy_shortfall", shortfall, spec.metric_tolerance)]


# --- A/B test -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AbResult:
    stable_n: int
    candidate_n: int
    stable_mean: float
    candidate_mean: float
    p_value: float
    # candidate - stable, in the outcome's units (accuracy, or mean absolute error)
    effect: float

    def candidate_better(self, regression: bool) -> bool:
        return self.effect < 0 if regression else self.effect > 0


def required_sample_size(
    ab: AbSpec,
    *,
    regression: bool,
    outcome_sd: float | None,
    outcome_mean: float | None = None,
) -> int:
    """Labelled requests needed in the stable arm to detect `ab.minimum_effect` with
    `ab.power` at level `ab.alpha` (two-sided); the candidate arm needs `split/(1-split)`
    times as many. Classification: Cohen's h between `baseline_rate` and
    `baseline_rate + minimum_effect` (accuracy points). Regression: `minimum_effect` is a
    fraction of stable's mean absolute error (`outcome_mean`), so the effect size is
    `minimum_effect * outcome_mean / outcome_sd` (`outcome_sd`: the absolute errors'
    standard deviation, from stable's labels). Raises ValueError when a regression test
    lacks either figure."""
    if regression:
        if not (outcome_sd and outcome_mean and math.isfinite(outcome_sd / outcome_mean)):
            raise ValueError(
                "a regression A/B test needs stable's outcome_mean and outcome_sd (mean and "
                "standard deviation of its absolute errors) to size itself, got "
                f"{outcome_mean} and {outcome_sd}"
            )
        effect_size = ab.minimum_effect * outcome_mean / outcome_sd
    else:
        treated = min(ab.baseline_rate + ab.minimum_effect, 1 - 1e-9)
        effect_size = abs(_arcsine(treated) - _arcsine(ab.baseline_rate))
    from statsmodels.stats.power import NormalIndPower

    n = NormalIndPower().solve_power(
        effect_size=effect_size, alpha=ab.alpha, power=ab.power, ratio=ab.split / (1 - ab.split)
    )
    return math.ceil(n)


def _arcsine(rate: float) -> float:
    return 2 * math.asin(math.sqrt(rate))


def ab_test(stable: SlotWindow, candidate: SlotWindow, *, regression: bool) -> AbResult:
    """Two-sided test of the outcome between the arms: two proportions (z test) for the
    correct rate, Welch's t test for the absolute error (both from running sums)."""
    if regression:
        p_value = _welch_p_value(candidate, stable)
    else:
        from statsmodels.stats.proportion import proportions_ztest

        successes = [round(candidate.outcome_sum), round(stable.outcome_sum)]
        _, p_value = proportions_ztest(successes, [candidate.labelled, stable.labelled])
        p_value = float(p_value)
    return AbResult(
        stable_n=stable.labelled,
        candidate_n=candidate.labelled,
        stable_mean=stable.outcome_mean,
        candidate_mean=candidate.outcome_mean,
        p_value=p_value if math.isfinite(p_value) else 1.0,
        effect=candidate.outcome_mean - stable.outcome_mean,
    )
