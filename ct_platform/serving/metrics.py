"""Prometheus text exposition, kept in-process: a few dict updates per request, no library.

The server runs one event loop, so plain dicts need no locks; the prediction-log thread
only reports through `PredictionLog.dropped`, read at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Mapping, Sequence

# Seconds; dense below 10 ms, where the serving latency target lives.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

Labels = tuple[tuple[str, str], ...]
# Distinct unknown column names counted by name (a label value each); the rest as one.
IGNORED_NAMES = 100
OTHER_NAMES = "(other names)"


class Histogram:
    def __init__(self) -> None:
        # One count per bucket plus +Inf; cumulated only when scraped.
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1


class SlotSeries:
    """Rows scored and latency of one (slot, model version)."""

    __slots__ = ("labels", "latency", "rows")

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self.rows = 0
        self.latency = Histogram()


class RequestSeries:
    """Scored requests of one (endpoint, slot, model version), and its slot's series."""

    __slots__ = ("labels", "requests", "slot")

    def __init__(self, labels: Labels, slot: SlotSeries) -> None:
        self.labels = labels
        self.requests = 0
        self.slot = slot


class Metrics:
    def __init__(self) -> None:
        # Found per request by one flat (endpoint, slot, version) key: labels as nested
        # tuples would be hashed anew at every lookup (a tuple does not cache its hash).
        self._requests: dict[tuple[str, str, str], RequestSeries] = {}
        self._slots: dict[tuple[str, str], SlotSeries] = {}
        self.errors: defaultdict[Labels, int] = defaultdict(int)
        self.violations: defaultdict[Labels, int] = defaultdict(int)
        # Request columns kept out of scoring, by name: at most IGNORED_NAMES distinct
        # names (clients choose them), the rest counted under OTHER_NAMES.
        self.ignored: defaultdict[str, int] = defaultdict(int)
        # Every answer by status, the scoring routes', Starlette's and the protocol's own.
        self.responses: defaultdict[int, int] = defaultdict(int)

    def prediction(self, endpoint: str, slot: str, version: str, rows: int, seconds: float) -> None:
        series = self._requests.get((endpoint, slot, version))
        if series is None:
            series = self._request_series(endpoint, slot, version)
        series.requests += 1
        slot_series = series.slot
        slot_series.rows += rows
        slot_series.latency.observe(seconds)

    def _request_series(self, endpoint: str, slot: str, version: str) -> RequestSeries:
        slot_series = self._slots.get((slot, version))
        if slot_series is None:
            labels = (("slot", slot), ("model_version", version))
            slot_series = self._slots[slot, version] = SlotSeries(labels)
        series = RequestSeries((("endpoint", endpoint), *slot_series.labels), slot_series)
        self._requests[endpoint, slot, version] = series
        return series

    def response(self, status: int) -> None:
        self.responses[status] += 1

    def refused(self, status: int) -> None:
        """An answer the HTTP layer gave before any route (408, 431, 400 for bad HTTP)."""
        self.response(status)
        self.error("http", status)

    def error(self, endpoint: str, status: int, slot: str | None = None) -> None:
        """One error answer; `slot` only for a shadow copy's (`"shadow"`, as its scored
        copies are labelled), so served traffic is everything but slot="shadow"."""
        slot_label = () if slot is None else (("slot", slot),)
        self.errors[(("endpoint", endpoint), *slot_label, ("status", str(status)))] += 1

    def contract_violations(self, counts: Mapping[tuple[str, str], int], action: str) -> None:
        """Request values outside the data contract, by (column, rule); `action`: what the
        server did with the request (`rejected`, or `scored` under the `score` policy)."""
        for (column, rule), count in counts.items():
            self.violations[(("column", column), ("rule", rule), ("action", action))] += count

    def ignored_columns(self, names: Sequence[str]) -> None:
        """One scored request sent these columns, which are no contract column."""
        for name in names:
            key = name if name in self.ignored or len(self.ignored) < IGNORED_NAMES else OTHER_NAMES
            self.ignored[key] += 1

    def ignored_by_column(self) -> dict[str, int]:
        """Scored requests that sent each unknown column (kept out of scoring)."""
        return dict(self.ignored)

    def render(self, gauges: dict[str, tuple[str, list[tuple[Labels, float]]]]) -> str:
        """Exposition text; `gauges`: name -> (help, [(labels, value)]), read at scrape time."""
        lines: list[str] = []
        requests = {series.labels: series.requests for series in self._requests.values()}
        _counter(lines, "ct_requests_total", "Scored requests.", requests)
        _counter(lines, "ct_request_errors_total", "Requests answered with an error.", self.errors)
        rows = {series.labels: series.rows for series in self._slots.values()}
        _counter(lines, "ct_prediction_rows_total", "Rows scored.", rows)
        _counter(
            lines,
            "ct_http_responses_total",
            "Every HTTP answer by status, including the HTTP layer's own (400, 408, 431).",
            {(("status", str(status)),): count for status, count in self.responses.items()},
        )
        _counter(
            lines,
            "ct_contract_violations_total",
            "Request values outside the data contract, by column and rule (min, max, "
            "categories, nullable).",
            self.violations,
        )
        _counter(
            lines,
            "ct_ignored_columns_total",
            "Scored requests that sent a column the model does not have (kept out of scoring,"
            f" serving.unknown_columns: ignore), by column; past {IGNORED_NAMES} names, "
            f'"{OTHER_NAMES}".',
            {(("column", name),): count for name, count in self.ignored.items()},
        )
        name = "ct_request_latency_seconds"
        lines += [f"# HELP {name} Time from request to response.", f"# TYPE {name} histogram"]
        for labels, histogram in ((s.labels, s.latency) for s in self._slots.values()):
            cumulative = 0
            for bound, count in zip((*LATENCY_BUCKETS, "+Inf"), histogram.counts, strict=True):
                cumulative += count
                lines.append(f"{name}_bucket{_format((*labels, ('le', str(bound))))} {cumulative}")
            lines.append(f"{name}_sum{_format(labels)} {histogram.total}")
            lines.append(f"{name}_count{_format(labels)} {histogram.n}")
        for gauge, (help_text, samples) in gauges.items():
            lines += [f"# HELP {gauge} {help_text}", f"# TYPE {gauge} gauge"]
            lines += [f"{gauge}{_format(labels)} {value}" for labels, value in samples]
        return "\n".join(lines) + "\n"


def _counter(lines: list[str], name: str, help_text: str, values: dict[Labels, int]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    lines += [f"{name}{_format(labels)} {value}" for labels, value in values.items()]


def _format(labels: Labels) -> str:
    if not labels:
        return ""
    pairs = (f'{key}="{_escape(value)}"' for key, value in labels)
    return "{" + ",".join(pairs) + "}"


def _escape(value: str) -> str:
    # The exposition format's escapes; a client-chosen name may hold a newline.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
