"""Live traffic for a served model: one request per row, then the true labels, later.

This is how `ct simulate --endpoint` exercises production monitoring: the server logs each
prediction under the request id we send, and the labels posted `label_delay` seconds later
(as ground truth arrives late in real life) join that log on the same id.

Traffic starts as soon as the endpoint answers and runs beside the batch replay, not in
step with it: the model is served long after the first batch lands, and it keeps serving
after the last one has.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pandas as pd

from ct_platform.settings import DatasetSpec

# Labels per POST /feedback: keeps each body far below the server's body-size limit.
FEEDBACK_CHUNK = 500
REQUEST_TIMEOUT_SECONDS = 5.0
# Rows sent between two label posts: labels keep flowing (10 s of traffic at 20 rps).
TRAFFIC_CHUNK_ROWS = 200
PROGRESS_EVERY_SECONDS = 300.0  # a one-line traffic summary this often, not one per chunk


@dataclass
class TrafficReport:
    sent: int = 0
    ok: int = 0
    failed_by_status: dict[int, int] = field(default_factory=dict)
    unreachable: str | None = None  # why the endpoint could not be reached, if it could not

    def add(self, other: TrafficReport) -> None:
        self.sent += other.sent
        self.ok += other.ok
        for status, count in other.failed_by_status.items():
            self.failed_by_status[status] = self.failed_by_status.get(status, 0) + count

    def summary(self) -> str:
        failed = sum(self.failed_by_status.values())
        text = f"{self.sent} requests, {self.ok} ok, {failed} failed"
        if self.failed_by_status:
            text += " (" + ", ".join(f"HTTP {s}: {n}" for s, n in self.failed_by_status.items())
            text += ")"
        return text


class TrafficSender:
    """Sends rows as single-row `/invocations` requests and schedules their `/feedback`."""

    def __init__(
        self,
        endpoint: str,
        dataset: DatasetSpec,
        *,
        rps: float,
        label_delay: float,
        api_key: str | None,
        stop: threading.Event,
        log: Callable[[str], None] = print,
    ) -> None:
        if rps <= 0:
            raise ValueError(f"--rps must be positive, got {rps}")
        self.endpoint = endpoint.rstrip("/")
        self.dataset = dataset
        self.rps = rps
        self.label_delay = label_delay
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.stop = stop
        self.log = log
        # Distinguishes this process's request ids from an earlier run's over the same rows.
        self.session = uuid.uuid4().hex[:8]
        self._timers: list[threading.Timer] = []
        self._pending_labels: dict[threading.Timer, int] = {}
        self._lock = threading.Lock()

    def send_batch(self, rows: pd.DataFrame, batch_label: str) -> TrafficReport:
        """Send every row of `rows` at `rps`; labels of answered requests follow later."""
        report = TrafficReport()
        payloads = _row_payloads(rows, self.dataset)
        labels = _labels(rows[self.dataset.target], self.dataset)
        answered: list[dict[str, object]] = []
        started = time.monotonic()
        with httpx.Client(headers=self.headers, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            for index, (payload, label) in enumerate(zip(payloads, labels, strict=True)):
                if self.stop.wait(max(0.0, started + index / self.rps - time.monotonic())):
                    break
                request_id = f"sim-{self.session}-{batch_label}-{index:05d}"
                try:
                    response = client.post(
                        f"{self.endpoint}/invocations",
                        json=payload,
                        headers={"X-Request-ID": request_id},
                    )
                except httpx.TransportError as exc:
                    # A down server would fail every row the same way: say it once, move on.
                    report.unreachable = f"{type(exc).__name__}: {exc}"
                    break
                report.sent += 1
                if response.is_success:
                    report.ok += 1
                    if label is not None:  # a row without a true label has nothing to join
                        answered.append({"request_id": request_id, "label": label})
                else:
                    status = response.status_code
                    report.failed_by_status[status] = report.failed_by_status.get(status, 0) + 1
        if answered:
            self._schedule_feedback(answered)
        return report

    def wait_for_feedback(self) -> None:
        """Block until every scheduled feedback post has been sent (or the stop is set)."""
        for timer in list(self._timers):
            while timer.is_alive() and not self.stop.is_set():
                timer.join(0.1)

    def cancel_feedback(self) -> int:
        """Cancel feedback not yet sent; return how many labels that drops."""
        with self._lock:
            dropped = 0
            for timer in self._timers:
                timer.cancel()
                dropped += self._pending_labels.pop(timer, 0)
            return dropped

    def _schedule_feedback(self, answered: list[dict[str, object]]) -> None:
        timer = threading.Timer(self.label_delay, self._post_feedback, args=(answered,))
        timer.daemon = True
        with self._lock:
            self._pending_labels[timer] = len(answered)
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _post_feedback(self, answered: list[dict[str, object]]) -> None:
        with self._lock:  # from here on these labels count as sent, not cancellable
            self._pending_labels.pop(threading.current_thread(), None)
        try:
            with httpx.Client(headers=self.headers, timeout=REQUEST_TIMEOUT_SECONDS) as client:
                for start in range(0, len(answered), FEEDBACK_CHUNK):
                    chunk = answered[start : start + FEEDBACK_CHUNK]
                    response = client.post(f"{self.endpoint}/feedback", json=chunk)
                    if not response.is_success:
                        self.log(f"feedback: HTTP {response.status_code} for {len(chunk)} labels")
        except httpx.TransportError as exc:
            self.log(f"feedback: endpoint {self.endpoint} unreachable ({exc}); labels not sent")


def wait_until_answers(
    url: str,
    stop: threading.Event,
    *,
    what: str,
    log: Callable[[str], None] = print,
    poll_seconds: float = 2.0,
) -> bool:
    """Block until GET `url` answers with a 2xx status; False if `stop` was set first.

    Says once that it is waiting (no line per attempt), and once when `what` is up.
    """
    said = False
    while not stop.is_set():
        try:
            if httpx.get(url, timeout=REQUEST_TIMEOUT_SECONDS).is_success:
                if said:
                    log(f"{what} is up ({url})")
                return True
        except httpx.TransportError:
            pass  # not listening yet: the normal case while it starts
        if not said:
            log(f"waiting for {what} at {url} ...")
            said = True
        stop.wait(poll_seconds)
    return False


def stream_traffic(
    sender: TrafficSender,
    frame: pd.DataFrame,
    *,
    start_row: int = 0,
    max_rows: int | None = None,
    chunk_rows: int = TRAFFIC_CHUNK_ROWS,
    log: Callable[[str], None] = print,
) -> int:
    """Send `frame`'s rows as live traffic from `start_row` until `max_rows` or the stop.

    Waits for the endpoint's `/ping` first, and again whenever it stops answering (a
    redeploy). At the end of `frame` it starts again from row 0, a new epoch: request ids
    stay unique. Returns how many requests were sent.
    """
    totals = TrafficReport()
    position, epoch = start_row % max(len(frame), 1), 1
    last_progress = time.monotonic()
    while not sender.stop.is_set() and (max_rows is None or totals.sent < max_rows):
        if not wait_until_answers(
            f"{sender.endpoint}/ping", sender.stop, what="model endpoint", log=log
        ):
            break
        size = chunk_rows if max_rows is None else min(chunk_rows, max_rows - totals.sent)
        report = sender.send_batch(frame.iloc[position : position + size], f"e{epoch}r{position}")
        totals.add(report)
        if report.unreachable:
            log(f"traffic: endpoint {sender.endpoint} stopped answering ({report.unreachable})")
        position += report.sent
        if position >= len(frame):
            position, epoch = 0, epoch + 1
            log(f"traffic: all {len(frame)} rows sent; again from row 0 (epoch {epoch})")
        if time.monotonic() - last_progress >= PROGRESS_EVERY_SECONDS:
            log(f"traffic so far: {totals.summary()}")
            last_progress = time.monotonic()
    log(f"traffic: {totals.summary()}")
    return totals.sent


def _row_payloads(rows: pd.DataFrame, dataset: DatasetSpec) -> list[dict[str, object]]:
    """One MLflow `dataframe_split` body per row, feature columns only, JSON-typed values."""
    columns = dataset.feature_columns
    typed = {name: _json_values(rows[name], dataset.columns[name].type) for name in columns}
    return [
        {"dataframe_split": {"columns": columns, "data": [[typed[c][i] for c in columns]]}}
        for i in range(len(rows))
    ]


def _json_values(series: pd.Series, column_type: str) -> list[object]:
    if column_type == "category":
        return [None if pd.isna(v) else str(v) for v in series]
    numbers = pd.to_numeric(series, errors="coerce")
    if column_type == "int":
        return [None if pd.isna(v) else int(v) for v in numbers]
    return [None if pd.isna(v) else float(v) for v in numbers]


def _labels(target: pd.Series, dataset: DatasetSpec) -> list[object]:
    labels = dataset.target_labels
    if dataset.task == "regression":
        return _json_values(target, "float")
    if labels and all(isinstance(label, int) for label in labels):
        return _json_values(target, "int")
    return _json_values(target, "category")
