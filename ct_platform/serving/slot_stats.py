"""Per-slot running totals for rollout analysis: requests, errors, latency, scores, labels.

Everything here only grows (cumulative counters since the server started), so a reader
takes two snapshots (`GET /admin/stats`) and subtracts them to get the figures of exactly
that period, for every slot at once: the candidate and stable are compared over the same
period, and a reader that crashes between two reads loses nothing.

A request the slot does not answer counts as an error when the fault is the server's (5xx,
or its model raising on validated input, which MLflow's protocol answers 400) and as
refused when it is the client's (any other 4xx): the rollout analysis judges the two apart.

Per request the cost is a few dict and list updates (one `bisect`, one bin per row); the
server runs one event loop, so no locks. Slots are `stable`, `candidate` and `shadow` (the
candidate scoring copies of stable's traffic, whose answers no client sees).

Scores are binned on a fixed grid so that two slots' histograms always line up: the
positive-class probability (binary), the top-class probability (multiclass), both in 20
bins over [0, 1]; regression values on an `asinh` grid (quarter units), fine near zero and
wide for large values, so any target scale fits without knowing it in advance.

Labels posted to `/feedback` are matched to the slot that answered through a bounded map
of recent single-row request ids (the newest `recent_limit`), so the primary metric is per
slot too: a correct label (classification) or the absolute error (regression). Labels
matched to no slot are counted (`labels_not_credited`): rows of multi-row requests, and ids
not or no longer remembered; the rollout analysis says how many arrived.

Routing is sticky per `X-Routing-Key`, so a client that keeps one key sends all its traffic
to one slot: the unit randomized between the slots is the client, not the request.
`ClientStats` keeps the same counters per routing key (bounded, see there), so the analysis
can tell a candidate that fails many clients from one client that misbehaves on it.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ct_platform.serving.bundle import Prediction
from ct_platform.serving.recent import RecentIds
from ct_platform.serving.transport import HttpError, ModelFailure, is_row_id

# Milliseconds: 1.25x apart from 0.1 ms to ~14 s, so a p99 is read within 25 %.
LATENCY_BOUNDS_MS = tuple(round(0.1 * 1.25**k, 4) for k in range(54))
PROBABILITY_BINS = 20
REGRESSION_BINS_PER_UNIT = 4
RECENT_LIMIT = 200_000
# Routing keys counted per slot; past it the half with the fewest requests is dropped.
CLIENT_LIMIT = 1_000
# Longer routing keys are counted (and shown) by a hash of them.
CLIENT_KEY_CHARS = 64


@dataclass
class SlotTotals:
    # Requests the slot scored; requests that failed on the server's side (5xx, a model
    # that raised); requests refused as the client's fault (4xx: bad input, contract, size).
    requests: int = 0
    errors: int = 0
    refused: int = 0
    rows: int = 0
    # One count per latency bound, plus one for anything slower.
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))
    scores: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))
    # Shadow only: rows scored by both, and rows where both predicted the same label.
    compared_rows: int = 0
    agreeing_rows: int = 0
    # Labelled requests and the sum of their outcomes (1/0 correct, or absolute error),
    # and of the squared outcomes (for a variance).
    labelled: int = 0
    outcome_sum: float = 0.0
    outcome_sq_sum: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "refused": self.refused,
            "rows": self.rows,
            "latency": list(self.latency),
            "scores": {str(bin_): count for bin_, count in self.scores.items()},
            "compared_rows": self.compared_rows,
            "agreeing_rows": self.agreeing_rows,
            "labelled": self.labelled,
            "outcome_sum": self.outcome_sum,
            "outcome_sq_sum": self.outcome_sq_sum,
        }


class SlotStats:
    def __init__(self, *, regression: bool, recent_limit: int = RECENT_LIMIT) -> None:
        self.regression = regression
        self.slots: defaultdict[str, SlotTotals] = defaultdict(SlotTotals)
        self._recent = RecentAnswers(recent_limit)
        self.clients = ClientStats()
        # Labels credited to no slot: for rows of multi-row requests (`<id>:<i>`, whose
        # answers are not remembered), and for ids not (or no longer) remembered.
        self.uncredited = {"multi_row": 0, "unknown": 0}

    def scored(
        self,
        slot: str,
        request_id: str,
        seconds: float,
        prediction: Prediction,
        routing_key: str | None = None,
    ) -> None:
        """Count a request `slot` answered in `seconds`; with its `routing_key` (if any) in
        `clients` too, from the same latency bucket and score bins."""
        bucket = bisect_left(LATENCY_BOUNDS_MS, seconds * 1000.0)
        scores = score_counts(prediction)
        rows = _add_scored(self.slots[slot], bucket, scores)
        if routing_key:
            self.clients.add_scored(slot, routing_key, bucket, scores)
        if rows == 1 and slot != "shadow":
            self._recent.add(request_id, slot, _answer(prediction))

    def error(self, slot: str, error: HttpError) -> None:
        """`slot` did not answer: a 4xx is the client's fault (refused), anything else the
        server's (an error), as is a model that raised on validated input (`ModelFailure`)."""
        totals = self.slots[slot]
        if is_refusal(error):
            totals.refused += 1
        else:
            totals.errors += 1

    def compared(self, stable: Prediction, shadow: Prediction) -> None:
        """Agreement of the shadow's labels with the answer stable gave (classification)."""
        if stable.labels is None or shadow.labels is None:
            return
        totals = self.slots["shadow"]
        totals.compared_rows += len(stable.labels)
        totals.agreeing_rows += int(np.sum(stable.labels == shadow.labels))

    def feedback(self, records: list[dict[str, Any]]) -> None:
        """Credit each label to the slot that answered its request (if still remembered)."""
        for record in records:
            found = self._recent.pop(record["request_id"])
            if found is None:
                self.uncredited["multi_row" if is_row_id(record["request_id"]) else "unknown"] += 1
                continue
            slot, answer = found
            outcome = self._outcome(answer, record["label"])
            if outcome is None:
                continue
            totals = self.slots[slot]
            totals.labelled += 1
            totals.outcome_sum += outcome
            totals.outcome_sq_sum += outcome * outcome

    def snapshot(self) -> dict[str, Any]:
        return {
            "latency_bounds_ms": list(LATENCY_BOUNDS_MS),
            "score_grid": "asinh_quarter" if self.regression else "probability_20",
            "outcome": "absolute_error" if self.regression else "correct",
            "slots": {slot: totals.to_dict() for slot, totals in self.slots.items()},
            "clients": self.clients.snapshot(),
            "labels_not_credited": dict(self.uncredited),
        }

    def _outcome(self, answer: Any, label: Any) -> float | None:
        if self.regression:
            try:
                return abs(float(label) - float(answer))
            except (TypeError, ValueError):
                return None
        return float(str(label) == str(answer))


class RecentAnswers:
    """The slot and answer of the newest `limit` single-row requests, by request id (a
    `RecentIds` ring and two lists beside it: fixed memory, nothing allocated a request)."""

    def __init__(self, limit: int) -> None:
        self._ring = RecentIds(limit)
        self._slots: list[str | None] = [None] * limit
        self._answers: list[Any] = [None] * limit

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, request_id: str, slot: str, answer: Any) -> None:
        """Remember an answer, forgetting the oldest one once `limit` are held. An id seen
        again keeps only its newest answer."""
        position = self._ring.remember(request_id)
        self._slots[position] = slot
        self._answers[position] = answer

    def pop(self, request_id: str) -> tuple[str, Any] | None:
        """(slot, answer) of `request_id` if still remembered, then forget it."""
        position = self._ring.forget(request_id)
        if position is None:
            return None
        return self._slots[position], self._answers[position]


@dataclass
class ClientTotals:
    """One routing key's running totals on one slot; histograms sparse (bucket -> count)."""

    requests: int = 0
    errors: int = 0
    refused: int = 0
    rows: int = 0
    latency: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))
    scores: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def routed(self) -> int:
        return self.requests + self.errors + self.refused

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "refused": self.refused,
            "rows": self.rows,
            "latency": {str(bucket): count for bucket, count in self.latency.items()},
            "scores": {str(bin_): count for bin_, count in self.scores.items()},
        }


class ClientStats:
    """Per slot, per routing key (`X-Routing-Key`) running totals, like `SlotTotals`.

    Only keyed requests are counted: a request without a key is routed by its own id, a
    random unit of its own. At most `limit` keys per slot: when a new key would exceed it,
    the half with the fewest requests is dropped (amortized O(log n) a request). A dropped
    key that comes back starts again from 0, which a reader diffing two snapshots sees as
    a reset (its totals went down or were missing). The slot totals still count everything.
    """

    def __init__(self, limit: int = CLIENT_LIMIT) -> None:
        self.limit = limit
        self.slots: defaultdict[str, dict[str, ClientTotals]] = defaultdict(dict)

    def scored(self, slot: str, key: str | None, seconds: float, prediction: Prediction) -> None:
        if key:
            bucket = bisect_left(LATENCY_BOUNDS_MS, seconds * 1000.0)
            self.add_scored(slot, key, bucket, score_counts(prediction))

    def add_scored(self, slot: str, key: str, bucket: int, scores: dict[int, int]) -> None:
        """`scored` with the latency bucket and the rows per score bin already known."""
        _add_scored(self._totals(slot, key), bucket, scores)

    def error(self, slot: str, key: str | None, error: HttpError) -> None:
        if not key:
            return
        totals = self._totals(slot, key)
        if is_refusal(error):
            totals.refused += 1
        else:
            totals.errors += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            slot: {key: totals.to_dict() for key, totals in keys.items()}
            for slot, keys in self.slots.items()
        }

    def _totals(self, slot: str, key: str) -> ClientTotals:
        keys = self.slots[slot]
        key = client_key(key)
        found = keys.get(key)
        if found is None:
            if len(keys) >= self.limit:
                busiest = sorted(keys.items(), key=lambda item: item[1].routed, reverse=True)
                self.slots[slot] = keys = dict(busiest[: self.limit // 2])
            found = keys[key] = ClientTotals()
        return found


def is_refusal(error: HttpError) -> bool:
    """A 4xx is the client's fault (refused); anything else, and a model that raised on
    validated input (`ModelFailure`), is the server's (an error)."""
    return error.status < 500 and not isinstance(error, ModelFailure)


def client_key(key: str) -> str:
    """The routing key as counted: itself, or `sha256:<16 hex>` when over 64 characters."""
    if len(key) <= CLIENT_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _add_scored(totals: SlotTotals | ClientTotals, bucket: int, scores: dict[int, int]) -> int:
    """Count one scored request on `totals`; the number of rows it had."""
    totals.requests += 1
    totals.latency[bucket] += 1
    rows = 0
    for bin_, count in scores.items():
        totals.scores[bin_] += count
        rows += count
    totals.rows += rows
    return rows


def score_counts(prediction: Prediction) -> dict[int, int]:
    """Rows per bin of the fixed grid (`score_bins`), lowest bin first.

    One binary row (the common request) without numpy's per-call cost on an array of one:
    its probability read as a Python float and binned by `_one_row_bin`, which gives the
    array path's bin at every edge."""
    proba = prediction.proba
    if proba is not None and proba.shape == _ONE_BINARY_ROW:
        bin_ = _one_row_bin(proba.item(1), proba.dtype)
        if bin_ is not None:
            return {bin_: 1}
    bins = score_bins(prediction)
    if len(bins) == 1:  # a regression row: no sort for one value
        return {bins.item(): 1}
    bins, counts = np.unique(bins, return_counts=True)
    return dict(zip(bins.tolist(), counts.tolist(), strict=True))


def _one_row_bin(score: float, dtype: np.dtype) -> int | None:
    """`score_bins`' bin of one probability `score` (a Python float holding the value of
    a `dtype` element), without numpy; None for NaN, a score outside [0, 1], or a dtype
    other than float32 and float64 (the array path decides those).

    float64: the same IEEE product as numpy's. float32: numpy multiplies in float32, which
    can round a product just under an edge up onto it, so the bin is found among the least
    float32 score of each bin, computed by the array path itself (`_float32_bin_edges`)."""
    if not 0.0 <= score <= 1.0:
        return None
    if dtype is _FLOAT32:
        return bisect_right(_FLOAT32_BIN_EDGES, score)
    if dtype is _FLOAT64:
        return min(int(score * PROBABILITY_BINS), PROBABILITY_BINS - 1)
    return None


def _float32_bin_edges() -> list[float]:
    """For k = 1 .. PROBABILITY_BINS - 1, the least float32 score in [0, 1] whose bin is
    k or more by `score_bins` (a monotone step in the score): bin = how many are <= it."""

    def bin_of(score: np.float32) -> int:
        proba = np.array([[1 - score, score]], dtype=np.float32)
        return int(score_bins(Prediction(labels=None, proba=proba, values=None))[0])

    edges = []
    for k in range(1, PROBABILITY_BINS):
        score = np.float32(k / PROBABILITY_BINS)
        while bin_of(score) < k:
            score = np.nextafter(score, np.float32(2))
        while bin_of(below := np.nextafter(score, np.float32(-1))) >= k:
            score = below
        edges.append(float(score))
    return edges


def score_bins(prediction: Prediction) -> np.ndarray:
    """One bin index per row on the fixed grid described in the module docstring."""
    if prediction.proba is not None:
        proba = prediction.proba
        score = proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)
        return np.minimum((score * PROBABILITY_BINS).astype(np.int64), PROBABILITY_BINS - 1)
    if prediction.values is not None:
        values = np.asarray(prediction.values, dtype=np.float64)
        return np.floor(np.arcsinh(values) * REGRESSION_BINS_PER_UNIT).astype(np.int64)
    return np.zeros(0 if prediction.labels is None else len(prediction.labels), dtype=np.int64)


def _answer(prediction: Prediction) -> Any:
    if prediction.labels is not None:
        # `item`: a Python scalar, or an object array's element as stored (which may be a
        # numpy scalar: made plain too).
        label = prediction.labels.item(0)
        return label.item() if isinstance(label, np.generic) else label
    value = float(np.asarray(prediction.values)[0])
    return value if math.isfinite(value) else None


_ONE_BINARY_ROW = (1, 2)
_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)
_FLOAT32_BIN_EDGES = _float32_bin_edges()
